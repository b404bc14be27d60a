"""Figures of a study's ranking (``studies/rankings.py``): the rank distributions with P(best) and the matrix
P(row better than column), and the critical-difference diagram drawn by scikit-posthocs
(``critical_difference_diagram``: mean Friedman ranks on an axis, bars joining the runs that cannot be told apart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rank_figure(name: str, result: dict[str, Any], path: Path) -> Path | None:
    """Left: each run's mean rank and 95 % rank interval, P(best) beside it. Right: P(row better than column)."""
    plt = _pyplot()
    r = result["ranking"]
    if any(x["rank_ci95"] is None for x in r["runs"]):  # no valid resample, or nothing to resample: nothing to draw
        return None
    runs = sorted(r["runs"], key=lambda x: x["mean_rank"])
    k = len(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 0.45 * k + 2.2), gridspec_kw={"width_ratios": [1.1, 1]})
    ys = np.arange(k)[::-1]
    for y, x in zip(ys, runs):
        lo, hi = x["rank_ci95"]
        left.plot([lo, hi], [y, y], color="tab:blue", lw=3, alpha=0.5, solid_capstyle="round")
        left.plot([x["mean_rank"]], [y], "o", color="tab:blue")
        left.annotate(f"P(best) {x['p_best']:.2f}", (k + 0.6, y), va="center", fontsize=8, annotation_clip=False)
    left.set_yticks(ys, [x["run"] for x in runs])
    left.set_xlim(0.5, k + 0.5)
    left.set_xticks(range(1, k + 1))
    left.set_xlabel("rank (1 = best): mean and 95 % interval over paired resamples")
    left.grid(axis="x", alpha=0.3)
    order = [x["run"] for x in runs]
    names = [x["run"] for x in r["runs"]]
    idx = [names.index(n) for n in order]
    matrix = np.array([[np.nan if r["p_better"][i][j] is None else r["p_better"][i][j] for j in idx] for i in idx])
    im = right.imshow(matrix, vmin=0, vmax=1, cmap="RdBu_r")
    for i in range(k):
        for j in range(k):
            if i != j:
                right.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                           color="white" if abs(matrix[i, j] - 0.5) > 0.35 else "black")
    right.set_xticks(range(k), order, rotation=45, ha="right", fontsize=8)
    right.set_yticks(range(k), order, fontsize=8)
    right.set_title("P(row better than column)", fontsize=9)
    fig.colorbar(im, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle(f"{name}: rankings on mean balanced accuracy ({r['resamples']} resamples, {r['subjects']} subjects)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cd_figure(name: str, result: dict[str, Any], path: Path) -> Path | None:
    """The critical-difference diagram (scikit-posthocs), or None with fewer than 3 runs (no Friedman test)."""
    cd = result["ranking"]["critical_difference"]
    if cd.get("p_value") is None:
        return None
    import pandas as pd
    import scikit_posthocs as sp

    plt = _pyplot()
    names = list(cd["mean_ranks"])
    ranks = pd.Series({n: cd["mean_ranks"][n] for n in names})
    # groups -> a p-value matrix the drawing reads: 1 inside a group, 0 between runs sharing none
    together = np.zeros((len(names), len(names)))
    for group in cd["groups"]:
        for a in group:
            for b in group:
                together[names.index(a), names.index(b)] = 1.0
    sig = pd.DataFrame(together, index=names, columns=names)
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.6))
    sp.critical_difference_diagram(ranks, sig, ax=ax, cd=cd["cd"], alpha=cd["alpha"])
    verdict = ("Nemenyi groups" if cd.get("p_matrix") is not None
               else "the Friedman test does not reject: one group")
    ax.set_title(f"{name}: critical-difference diagram (Friedman p = {cd['p_value']:.2g}, {cd['subjects']} subjects; "
                 f"{verdict}; CD = {cd['cd']:.2f})", fontsize=9, pad=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make(name: str, result: dict[str, Any], folder: Path) -> list[Path]:
    """Both figures of a ranked study under ``folder`` (none without a ranking)."""
    if result.get("ranking") is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    made = [rank_figure(name, result, folder / f"{name}-ranks.png"),
            cd_figure(name, result, folder / f"{name}-critical-difference.png")]
    return [p for p in made if p is not None]
