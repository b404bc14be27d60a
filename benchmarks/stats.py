"""Benchmark the statistics of `aubench eval`: intervals and a paired comparison on a 50-subject, 100k-frame split.

A synthetic split (50 subjects x 4 videos x 500 frames, 12 AUs, subject-dependent accuracy) stands for a real one:
the statistics see only labels, decisions and unit codes, never images. Timed: the per-unit counts, the interval
of one run over subjects and videos (2000 resamples each) and frames (100k units: the normal, linearised limit),
and one paired comparison over subjects (2000 resamples, 10000 Monte Carlo permutations), each from counts made
beforehand; then the whole of what `aubench eval` adds for two runs (counts, intervals over subjects, the paired
comparison). Then the rankings of a Table I study (`evaluation/ranking.py`): 11 runs x 50 subjects x 12 AUs
from per-subject counts: the rank distributions (2000 paired resamples), the Friedman test with the Nemenyi
post-hoc, one Bayesian signed-rank comparison (20000 posterior samples), all of it (what `aubench report` adds per
study, with the top two compared), and all of it with 3 training seeds x 3 fold assignments per run. Prints the
median and the range of --repeats runs. Usage: python benchmarks/stats.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from aubench_cli.evaluation import ranking, stats


def split(rng: np.random.Generator, subjects: int = 50, videos: int = 4, frames: int = 500, k: int = 12):
    n = subjects * videos * frames
    subject = np.repeat(np.arange(subjects), videos * frames)
    video = np.repeat(np.arange(subjects * videos), frames)
    labels = (rng.random((n, k)) < rng.uniform(0.05, 0.5, k)).astype(np.int8)
    labels[rng.random((n, k)) < 0.02] = -1
    skill = rng.normal(0.8, 0.06, subjects)[subject][:, None]
    a = np.where(rng.random((n, k)) < skill, labels == 1, labels == 0)
    b = np.where(rng.random((n, k)) < skill - 0.01, labels == 1, labels == 0)
    return labels, subject, video, a, b


def timed(fn, repeats: int) -> tuple[float, float, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times)), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(0)
    labels, subject, video, a, b = split(rng)
    n = len(labels)
    print(f"split: {n} frames, {subject.max() + 1} subjects, {video.max() + 1} videos, {labels.shape[1]} AUs")
    counts = {}

    def count() -> None:
        counts["subject"] = stats.unit_counts(a, labels, subject, 50)

    count()
    by_video = stats.unit_counts(a, labels, video, 200)
    by_frame = stats.unit_counts(a, labels, np.arange(n), n)
    b_subject = stats.unit_counts(b, labels, subject, 50)

    def everything() -> None:
        ca, cb = stats.unit_counts(a, labels, subject, 50), stats.unit_counts(b, labels, subject, 50)
        stats.interval(ca, np.random.default_rng(1))
        stats.interval(cb, np.random.default_rng(1))
        stats.paired(ca, cb, np.random.default_rng(2))

    cases = {
        "counts per subject (one run)": count,
        "interval over subjects (2000 resamples)": lambda: stats.interval(counts["subject"], np.random.default_rng(1)),
        "interval over videos (2000 resamples)": lambda: stats.interval(by_video, np.random.default_rng(1)),
        "interval over frames (normal limit)": lambda: stats.interval(by_frame, np.random.default_rng(1)),
        "paired comparison over subjects (2000 + 10000)": lambda: stats.paired(counts["subject"], b_subject,
                                                                             np.random.default_rng(2)),
        "all of it for two runs over subjects": everything,
    }
    runs = [stats.unit_counts(np.where(rng.random(a.shape) < 0.8 + 0.005 * i, labels == 1, labels == 0), labels,
                              subject, 50) for i in range(11)]  # 11 runs, 50 subjects, 12 AUs
    levels = [np.stack([np.stack([c] * 3)] * 3) for c in runs]  # (3 assignments, 3 seeds, 50, 12, 4)
    names = [f"run{i}" for i in range(11)]
    scores, _ = ranking.score_matrix(runs)
    cases.update({
        "rank distributions, 11 runs x 50 subjects (2000)": lambda: ranking.rank_uncertainty(
            runs, names, np.random.default_rng(3)),
        "Friedman + Nemenyi, 11 runs x 50 subjects": lambda: ranking.critical_difference(scores, names),
        "one ROPE comparison (signed-rank, 20000 samples)": lambda: ranking.rope_compare(scores[:, 0], scores[:, 1]),
        "rankings of 11 runs x 50 subjects, all of it": lambda: ranking.rankings(runs, names),
        "the same with 3 seeds x 3 fold assignments": lambda: ranking.rankings(levels, names),
    })
    for name, fn in cases.items():
        median, lo, hi = timed(fn, args.repeats)
        print(f"{name:50s} median {1000 * median:8.1f} ms  (range {1000 * lo:.1f}-{1000 * hi:.1f}, {args.repeats} runs)")


if __name__ == "__main__":
    main()
