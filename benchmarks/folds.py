"""What folds cost beyond the runs themselves: a fold run's data set-up against the cache split's, the featurewise
statistics each fold recomputes, the fold look-up of `eval`, dealing folds, and a fold study's dry run.

    python benchmarks/folds.py [--repeats 7] [--subjects 41] [--videos 4] [--frames 30]

The cache is a fixture written with the cache's own writer (BP4D's 41 subjects by default, a few short videos
each). Figures are medians over the repeats, with the spread (min-max); every part is timed interleaved.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cachefixture import make_cache  # noqa: E402

from aubench_cli import config as cfgmod  # noqa: E402
from aubench_cli.data.cache import open_cache  # noqa: E402
from aubench_cli.data.splits import assign_folds, fold_eval_index  # noqa: E402
from aubench_cli.training.trainer import _norm_stats, prepare_data  # noqa: E402


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _line(name: str, values: list[float], unit: str = "ms", scale: float = 1e3) -> str:
    v = [x * scale for x in values]
    return f"{name:<58} {statistics.median(v):9.2f} {unit} ({min(v):.2f}-{max(v):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--subjects", type=int, default=41)
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = make_cache(tmp / "cache", subjects=args.subjects, videos_per_subject=args.videos, frames=args.frames)
        cache = open_cache(path)
        base = ["train.norm=feature-norm"]
        plain = cfgmod.resolve(sets=base, options={"data.cache": str(path)})
        folded = cfgmod.resolve(sets=base + ["data.folds=3", "data.fold=1"], options={"data.cache": str(path)})
        quiet = lambda m: None  # noqa: E731
        run = tmp / "run"
        run.mkdir()
        data = prepare_data(folded, quiet)
        (run / "data.json").write_text(__import__("json").dumps(data.record))
        names = [f"p{i:06d}" for i in range(100_000)]
        times: dict[str, list[float]] = {k: [] for k in ("split", "fold", "stats_split", "stats_fold", "eval_index",
                                                          "deal41", "deal100k")}
        for _ in range(args.repeats):
            times["split"].append(_time(lambda: prepare_data(plain, quiet)))
            times["fold"].append(_time(lambda: prepare_data(folded, quiet)))
            d_plain, d_fold = prepare_data(plain, quiet), prepare_data(folded, quiet)
            times["stats_split"].append(_time(lambda: _norm_stats(plain, d_plain, None)))
            times["stats_fold"].append(_time(lambda: _norm_stats(folded, d_fold, None)))
            times["eval_index"].append(_time(lambda: fold_eval_index(run, cache, "test")))
            times["deal41"].append(_time(lambda: assign_folds(cache.subjects, 3)))
            times["deal100k"].append(_time(lambda: assign_folds(names, 3)))
        print(f"cache: {args.subjects} subjects, {len(cache.videos)} videos, {len(cache)} frames; "
              f"fold 1 of 3 trains on {len(d_fold.train_index)} frames, the cache split on {len(d_plain.train_index)}")
        print(_line("prepare_data, the cache's split", times["split"]))
        print(_line("prepare_data, fold 1 of 3", times["fold"]))
        print(_line(f"featurewise statistics, cache split ({len(d_plain.train_index)} frames)", times["stats_split"]))
        print(_line(f"featurewise statistics, fold 1 ({len(d_fold.train_index)} frames)", times["stats_fold"]))
        print(_line("eval: the fold's test frames (fold_eval_index)", times["eval_index"]))
        print(_line(f"dealing {args.subjects} subjects into 3 folds", times["deal41"]))
        print(_line("dealing 100,000 subjects into 3 folds", times["deal100k"]))

        aubench = [sys.executable, "-m", "aubench_cli", "study", "table2-normalization", "--cache", str(path),
                   "--dry-run", "--json", "--out", str(tmp / "s")]
        env = dict(os.environ)
        dry: dict[str, list[float]] = {"plain": [], "folds": []}
        for _ in range(max(1, args.repeats // 2)):
            for key, extra in (("plain", []), ("folds", ["--folds", "3", "--seeds", "2"])):
                start = time.perf_counter()
                done = subprocess.run(aubench + extra, env=env, capture_output=True, text=True)
                dry[key].append(time.perf_counter() - start)
                if done.returncode:
                    raise SystemExit(done.stderr[-2000:])
        print(_line("study table2-normalization --dry-run (4 runs)", dry["plain"], "s", 1))
        print(_line("study table2-normalization --folds 3 --seeds 2 --dry-run (24)", dry["folds"], "s", 1))


if __name__ == "__main__":
    main()
