"""What a test split can resolve, by the number of test subjects: the 95 % half-width of a paired difference in
mean balanced accuracy and the smallest difference detectable with 80 % power, computed with `aubench eval`'s own
statistics (``evaluation.stats.paired``) on simulated pairs of runs. Not a timing; docs/studies.md quotes it.

The model (state it with the numbers): 12 AUs, positives 5-50 % of frames, 1000 labelled frames per test subject;
run A is right on a subject's frames with a probability drawn per subject (mean 0.80, sd 0.06: some faces are
harder for every network); run B differs from A on each subject by a per-subject offset with sd --tau (how much
two settings disagree about which subjects are hard; 0.03 by default) and no mean difference. What matters is
tau: the half-width scales with tau / sqrt(subjects). Usage: python benchmarks/resolution.py [--tau 0.03]
"""

from __future__ import annotations

import argparse

import numpy as np

from aubench_cli.evaluation import stats


def simulate(rng: np.random.Generator, subjects: int, tau: float, frames: int = 1000, k: int = 12):
    units = np.repeat(np.arange(subjects), frames)
    labels = (rng.random((subjects * frames, k)) < rng.uniform(0.05, 0.5, k)).astype(np.int8)
    skill_a = np.clip(rng.normal(0.8, 0.06, subjects), 0.5, 0.99)
    skill_b = np.clip(skill_a + rng.normal(0, tau, subjects), 0.5, 0.99)
    a = np.where(rng.random(labels.shape) < skill_a[units][:, None], labels == 1, labels == 0)
    b = np.where(rng.random(labels.shape) < skill_b[units][:, None], labels == 1, labels == 0)
    return stats.unit_counts(a, labels, units, subjects), stats.unit_counts(b, labels, units, subjects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tau", type=float, default=0.03)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"tau {args.tau}; median over {args.repeats} simulated pairs (points of balanced accuracy)")
    print("| test subjects | method | 95 % half-width | detectable with 80 % power | smallest possible p (2 / 2^n) |")
    print("|---:|---|---:|---:|---:|")
    for n in (3, 5, 10, 15, 20, 30, 50, 100):
        hw, mdd, method = [], [], ""
        for _ in range(args.repeats):
            ca, cb = simulate(rng, n, args.tau)
            r = stats.paired(ca, cb, rng, permutations=999)
            hw.append(r["mean"]["half_width"])
            mdd.append(r["mean"]["min_detectable_diff"])
            method = r["method"]
        print(f"| {n} | {method} | {100 * np.median(hw):.2f} | {100 * np.median(mdd):.2f} | {min(1.0, 2 / 2 ** n):.2g} |")


if __name__ == "__main__":
    main()
