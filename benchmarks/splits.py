"""The default split's seed search on small datasets: what it costs, and what the closest seed gives over the first.

    python benchmarks/splits.py [--draws 200] [--repeats 7]

For each subject count, `--draws` sets of random subject names (as a lab's IDs would be) where seed 0 leaves a
split empty: the mean subject counts (train / val / test) under the first seed that fills every split (the rule
before) and under `choose_split_seed`'s (the filling seed closest to the shares), and how often each gives train
at least round(0.74 x subjects) - 1 subjects. Then the time of `choose_split_seed` by subjects alone and with labels that
force the balancing search (one AU coded positive in every fifth subject only): median (min-max) over repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aubench_cli.data.splits import SPLITS, choose_split_seed, split_subjects  # noqa: E402

SHARES = (0.74, 0.11, 0.15)


def _counts(names: list[str], seed: int) -> list[int]:
    got = list(split_subjects(names, SHARES, seed).values())
    return [got.count(s) for s in SPLITS]


def _first_filling(names: list[str]) -> int:
    return next(s for s in range(1000) if all(_counts(names, s)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    print(f"{'subjects':>8}  {'draws':>5}  {'first filling seed (mean t/v/te)':>32}  {'closest (mean t/v/te)':>22}  "
          f"{'train near 74 %: first / closest':>33}")
    for n in (6, 8, 10, 15, 20, 30):
        first, closest, near = [], [], [0, 0]
        draw = 0
        while len(first) < args.draws:
            names = [f"d{draw}-p{i:03d}" for i in range(n)]
            draw += 1
            if all(_counts(names, 0)):
                continue  # seed 0 fills every split: no search, the same under both rules
            a = _counts(names, _first_filling(names))
            b = _counts(names, choose_split_seed(names, SHARES)[0])
            first.append(a)
            closest.append(b)
            want = round(0.74 * n) - 1
            near[0] += a[0] >= want
            near[1] += b[0] >= want
        mean = [lambda rows, k=k: statistics.mean(r[k] for r in rows) for k in range(3)]
        f = "/".join(f"{m(first):.1f}" for m in mean)
        c = "/".join(f"{m(closest):.1f}" for m in mean)
        print(f"{n:>8}  {len(first):>5}  {f:>32}  {c:>22}  {near[0] / len(first):>15.0%} / {near[1] / len(first):.0%}")

    print(f"\n{'subjects':>8}  {'by subjects alone (ms)':>24}  {'with the balancing search (ms)':>32}")
    for n in (6, 20, 40):  # past ~40 subjects seed 0 almost always fills every split: no search
        names = next(ns for d in range(100_000) for ns in [[f"t{d}-p{i}" for i in range(n)]] if not all(_counts(ns, 0)))
        coded = {s: ({"AU01"} if i % 5 == 0 else set(), {"AU01"}) for i, s in enumerate(names)}
        plain, balanced = [], []
        for _ in range(args.repeats):  # interleaved
            start = time.perf_counter()
            choose_split_seed(names, SHARES)
            plain.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            choose_split_seed(names, SHARES, coded=coded)
            balanced.append((time.perf_counter() - start) * 1e3)
        print(f"{n:>8}  {statistics.median(plain):>10.1f} ({min(plain):.1f}-{max(plain):.1f})"
              f"  {statistics.median(balanced):>16.1f} ({min(balanced):.1f}-{max(balanced):.1f})")


if __name__ == "__main__":
    main()
