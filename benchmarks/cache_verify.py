"""What the cache's damage checks cost: the cheap check every read makes (one ``stat`` per packed file against
the listing's rows, ``missing_videos``; inside ``open_cache``), and the full pass of ``aubench preprocess`` and
``--verify`` (every video's bytes hashed against its checksum, ``verify_videos``).

Builds a dense cache (real crop bytes) of ``--videos`` x ``--frames`` with the cache's own writer (as
benchmarks/cache_scale.py does), then times each check ``--repeats`` times: median and quartiles. The full pass
reads the whole cache: with the page cache warm (just written) it measures hashing; a cold cache reads at the
speed of the disk. Prints a table, or JSON with ``--json``.

    python benchmarks/cache_verify.py [--videos 500] [--frames 100] [--repeats 5] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cache_scale import AUS, build  # noqa: E402

from aubench_cli.data.cache import live_entries, missing_videos, open_cache, verify_videos  # noqa: E402
from aubench_cli.data.cache import _table_from_entries  # noqa: E402


def timed(fn, repeats: int) -> dict:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times = np.asarray(times)
    return {"median_s": float(np.median(times)), "q25_s": float(np.percentile(times, 25)),
            "q75_s": float(np.percentile(times, 75))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=500)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="cache-verify-", dir=args.dir))
    try:
        path = base / "c"
        build(path, args.videos, args.frames, dense=True)
        table = _table_from_entries(live_entries(path))
        nbytes = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        result = {
            "videos": args.videos, "frames": args.videos * args.frames, "cache_mb": round(nbytes / 2**20, 1),
            "load_1min": os.getloadavg()[0],
            "stat_check": timed(lambda: missing_videos(path, table, len(AUS), 96), args.repeats),
            "open_cache": timed(lambda: open_cache(path), args.repeats),
            "full_verify": timed(lambda: verify_videos(path, table), args.repeats),
        }
        assert not verify_videos(path, table)
        result["full_verify_mb_per_s"] = round(nbytes / 2**20 / result["full_verify"]["median_s"], 1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['videos']} videos, {result['frames']} frames, {result['cache_mb']} MB; load {result['load_1min']:.2f}")
    for name in ("stat_check", "open_cache", "full_verify"):
        t = result[name]
        print(f"  {name:12s} median {t['median_s'] * 1e3:9.2f} ms  (quartiles {t['q25_s'] * 1e3:.2f}-{t['q75_s'] * 1e3:.2f})")
    print(f"  full verify: {result['full_verify_mb_per_s']} MB/s (page cache warm)")


if __name__ == "__main__":
    main()
