"""Cache cost against its number of videos: open time, resident memory after opening, and the time to gather a
random batch of 96 frames from a warm page cache, on caches of 1, 1,000, 10,000 and 50,000 videos.

Each cache is built with the cache's own writer (``VideoWriter``, ``consolidate``), not through mediapipe:
``--frames`` frames per video (default 200, so 50,000 videos are 10M frames). Crops are written as holes in a
sparse ``images.u8`` (10M crops are 92 GB; a hole reads as zeros and takes no disk) unless ``--dense``; every
other per-frame array is written for real. Open time and RSS are measured in a fresh process per cache (RSS
before and after ``open_cache``); the gather is timed on 200 random batches, each touched once first (that
first touch is reported too: on a sparse file it allocates zero pages), then 20 rounds of 100 of them from the
warm page cache: median and quartiles. Prints a table, or JSON with ``--json``.

    python benchmarks/cache_scale.py [--videos 1,1000,10000,50000] [--frames 200] [--dir /tmp] [--dense] [--shuffled]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aubench_cli.data.cache import FORMAT_NAME, FORMAT_VERSION, VideoWriter, consolidate, prepare_cache  # noqa: E402

AUS = [f"AU{i:02d}" for i in (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24)]


def build(path: Path, videos: int, frames: int, dense: bool, shuffled: bool = False) -> float:
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "tool_version": "bench", "created": "now",
              "source": {"path": "bench", "layout": "generic"}, "au_names": AUS, "settings": {"crop_size": 96},
              "subjects": {f"p{i:05d}": ("train", "val", "test")[i % 3] for i in range((videos + 4) // 5)}}
    prepare_cache(path, header)
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 2, (frames, len(AUS))).astype(np.int8)
    zeros2, eye = np.zeros((frames, 4, 2), np.float32), np.tile(np.eye(2, 3, dtype=np.float32), (frames, 1, 1))
    images = rng.integers(0, 256, (frames, 96, 96), dtype=np.uint8) if dense else None
    start = time.perf_counter()
    order = rng.permutation(videos) if shuffled else range(videos)  # shuffled: as parallel workers commit
    for v in order:
        w = VideoWriter(path, f"v{v:06d}", len(AUS), sync=False)  # a throw-away cache: no fsync per video
        w.add_block(images, labels, np.arange(frames), np.arange(frames), np.ones(frames, bool), zeros2, eye)
        w.commit({"subject": f"p{v // 5:05d}"}, None)
    consolidate(path, header)
    return time.perf_counter() - start


PROBE = """
import json, os, sys, time
def rss():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
import numpy as np
from aubench_cli.data.cache import open_cache
before = rss()
t = time.perf_counter()
cache = open_cache(sys.argv[1])
opened = time.perf_counter() - t
after = rss()
rng = np.random.default_rng(1)
batches = [rng.integers(0, len(cache), 96) for _ in range(200)]
t = time.perf_counter()
for b in batches:  # warm: every frame of every batch read once (19,200 frames, 177 MB of page cache)
    cache.images[b]
first_ms = (time.perf_counter() - t) / len(batches) * 1e3
rounds = []
for r in range(20):
    t = time.perf_counter()
    for b in batches[(r % 2) * 100:(r % 2 + 1) * 100]:
        cache.images[b]
    rounds.append((time.perf_counter() - t) / 100 * 1e3)
t = time.perf_counter()
train = cache.indices("train")
indices_ms = (time.perf_counter() - t) * 1e3
print(json.dumps({"frames": len(cache), "videos": len(cache.videos), "open_s": opened, "rss_before_mb": before,
                  "first_touch_ms": first_ms,
                  "rss_after_open_mb": after, "gather_ms_rounds": rounds, "indices_train_ms": indices_ms,
                  "rss_end_mb": rss()}))
"""


def probe(path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path])}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout)
    rounds = np.asarray(result.pop("gather_ms_rounds"))
    result["gather_ms"] = {"median": float(np.median(rounds)), "q25": float(np.percentile(rounds, 25)),
                           "q75": float(np.percentile(rounds, 75))}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", default="1,1000,10000,50000")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--dir", default=None, help="where to build the caches (default: a temp folder)")
    parser.add_argument("--dense", action="store_true", help="write real crop bytes instead of holes")
    parser.add_argument("--shuffled", action="store_true",
                        help="commit the videos in a random order (as parallel workers do): frames are numbered by "
                             "video id, so the rows need the row map")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    base = Path(tempfile.mkdtemp(prefix="cache-scale-", dir=args.dir))
    try:
        for videos in (int(v) for v in args.videos.split(",")):
            path = base / f"c{videos}"
            build_s = build(path, videos, args.frames, args.dense, args.shuffled)
            disk = sum(f.stat().st_blocks * 512 for f in path.iterdir() if f.is_file()) / 2**20
            results.append({"videos_built": videos, "build_s": round(build_s, 1), "disk_mb": round(disk, 1),
                            "load_1min": os.getloadavg()[0], **probe(path)})
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)  # as it comes: the large ones take minutes
            shutil.rmtree(path)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"{'videos':>7} {'frames':>10} {'build s':>8} {'open s':>7} {'RSS open MB':>12} {'(+ over import)':>15} "
          f"{'gather 96 ms (q25-q75)':>24} {'load':>5}")
    for r in results:
        g = r["gather_ms"]
        print(f"{r['videos']:>7} {r['frames']:>10} {r['build_s']:>8} {r['open_s']:>7.3f} {r['rss_after_open_mb']:>12.1f} "
              f"{r['rss_after_open_mb'] - r['rss_before_mb']:>15.1f} "
              f"{g['median']:>9.3f} ({g['q25']:.3f}-{g['q75']:.3f}) {r['load_1min']:>5.1f}")


if __name__ == "__main__":
    main()
