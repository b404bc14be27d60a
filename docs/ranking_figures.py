"""Draw the example figures of docs/studies.md ("Which run to choose"): the rank distributions and the
critical-difference diagram of a simulated Table I study, into docs/img/rankings-example.png and
docs/img/critical-difference-example.png.

Simulated, with known structure: 11 networks of Table I's names tested on the same 50 subjects (12 AUs, 400
labelled frames per subject, per-subject accuracy around 0.78 shared by every network, and each network's own
per-subject deviation, sd 0.03); the networks' true
advantages are 0, 0, 0.5, 0.5, 1, 1, 1.5, 2, 2, 3 and 5 points (vgg16 best), so the figure shows clear leaders,
a pack that cannot be told apart, and overlapping rank intervals. Usage: python docs/ranking_figures.py [--out docs/img]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from aubench_cli.evaluation import ranking
from aubench_cli.studies import rankfig

NETWORKS = ["baseline", "emonets", "mobilenetv2", "lightcnn9", "inceptionv3", "xception", "densenet121",
            "facevgg", "lightcnn29", "resnet50", "vgg16"]
ADVANTAGE = [0, 0, 0.005, 0.005, 0.01, 0.01, 0.015, 0.02, 0.02, 0.03, 0.05]
TAU = 0.03  # sd of a network's per-subject deviation from the shared accuracy (as benchmarks/resolution.py)


def simulated(subjects: int = 50, frames: int = 400, aus: int = 12, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random((subjects, frames, aus)) < rng.uniform(0.1, 0.5, aus)
    skill = rng.normal(0.78, 0.05, subjects)
    out = []
    for adv in ADVANTAGE:
        own = skill + adv + rng.normal(0, TAU, subjects)  # each network's own per-subject deviation
        right = rng.random(labels.shape) < np.clip(own, 0, 1)[:, None, None]
        pred = np.where(right, labels, ~labels)
        out.append(np.stack([(pred & labels).sum(1), labels.sum(1), (~pred & ~labels).sum(1), (~labels).sum(1)], -1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(Path(__file__).parent / "img"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"ranking": ranking.public(ranking.rankings(simulated(), NETWORKS, baseline="baseline"))}
    rankfig.rank_figure("simulated Table I", result, out / "rankings-example.png")
    rankfig.cd_figure("simulated Table I", result, out / "critical-difference-example.png")
    print(result["ranking"]["summary"])


if __name__ == "__main__":
    main()
