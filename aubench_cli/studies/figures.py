"""The report's figures (PNG, matplotlib): per-AU bars, accuracy against FLOPs, and Fig. 2's curves.

Each function takes a study (``studies.results.StudyResults``) and a path, draws every run the study holds (a run
that is not done is named on the figure, never dropped), and writes the PNG. ``note`` is a caption line printed
under the figure: what differs from the paper's protocol and whether the data is synthetic
(``report.protocol_notes``). Values are in % throughout; y-limits come from the data, so no bar or point falls
outside them. ``per_au_figure`` draws small multiples, one panel per run (its AUs and AVG as bars, the paper's value
as a black dash on the same bar), so that a study of 11 runs stays readable; runs are coloured from a qualitative
palette (Okabe-Ito, then tab10).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from aubench_cli.studies.study import arch_costs

if TYPE_CHECKING:  # only for annotations
    from aubench_cli.studies.results import RunResult, StudyResults

# Okabe-Ito (colour-blind safe), less black (whiskers are drawn in grey on the bars), then tab10: 14 distinct qualitative colours.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#7f7f7f", "#8c564b", "#9467bd", "#bcbd22", "#17becf", "#2ca02c", "#d62728"]
PAPER_COLOUR = "black"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def run_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _caption(fig, note: str | None, width_chars: int) -> None:
    """The caption line(s) under the figure (wrapped to the figure's width)."""
    if not note:
        return
    import textwrap

    fig.text(0.01, 0.005, "\n".join(textwrap.wrap(note, width_chars)), fontsize=7, color="0.25", va="bottom",
             ha="left")


def _caption_lines(note: str | None, width_chars: int) -> int:
    import textwrap

    return len(textwrap.wrap(note, width_chars)) if note else 0


def _limits(values: list[float], pad: float = 3.0) -> tuple[float, float]:
    """y-limits in % holding every value with a margin: the lower one a multiple of 10 (at most 50, so chance
    shows when in reach), the upper one at most 100 unless a value lies above."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0, 100.0
    lo, hi = min(finite), max(finite)
    low = max(0.0, math.floor((lo - pad) / 10) * 10)
    high = min(100.0, math.ceil((hi + pad) / 5) * 5) if hi <= 100 else hi + pad
    if high - low < 20:
        low = max(0.0, high - 20)
    return low, high


def _run_values(run: RunResult, aus: list[str]) -> dict[str, list[float]]:
    """Per AU (AVG last): ours, the balanced accuracy and its interval (nan where absent), the paper's."""
    acc, bal, lo, hi, paper = [], [], [], [], []
    theirs = run.paper.get("accuracy") or {}
    for au in aus:
        if au == "AVG":
            a, b, ci = run.mean, run.balanced, run.mean_ci
        else:
            m = run.per_au.get(au) or {}
            a, b, ci = m.get("accuracy"), m.get("balanced_accuracy"), m.get("ci95")
        acc.append(np.nan if a is None else 100 * a)
        ok = b is not None and bool(ci)
        bal.append(100 * b if ok else np.nan)
        lo.append(100 * ci[0] if ok else np.nan)
        hi.append(100 * ci[1] if ok else np.nan)
        p = theirs.get(au)
        paper.append(np.nan if p is None else float(p))
    return {"acc": acc, "bal": bal, "lo": lo, "hi": hi, "paper": paper}


def per_au_figure(study: StudyResults, path: Path, note: str | None = None) -> Path:
    """``draw_per_au`` written to ``path``."""
    return _save(draw_per_au(study, note), path)


def draw_per_au(study: StudyResults, note: str | None = None):
    """Small multiples: one panel per run, its AUs and AVG as bars (ours), the paper's value as a black dash on the
    bar of the same AU, the balanced accuracy's 95 % interval as a grey whisker (with seeds or folds: each one as a
    dot). Every panel shares the y-limits, taken from the data."""
    plt = _pyplot()
    aus = study.aus() + ["AVG"]
    runs = study.runs
    n = max(1, len(runs))
    most = 4 if len(aus) <= 8 else 3  # panels per row
    rows = math.ceil(n / most)
    cols = math.ceil(n / rows)  # balanced rows: 4 runs as 2 x 2, 11 as 3 + 3 + 3 + 2
    panel_w = max(3.2, 0.32 * len(aus) + 0.8)
    width_in = panel_w * cols
    wrap = int(width_in * 15)
    extra = 0.16 * _caption_lines(note, wrap)
    fig, axes = plt.subplots(rows, cols, figsize=(width_in, 2.5 * rows + 0.9 + extra), squeeze=False, sharey=True)
    values = {run.name: _run_values(run, aus) for run in runs}
    everything: list[float] = []
    for run in runs:
        v = values[run.name]
        everything += v["acc"] + v["lo"] + v["hi"] + v["paper"]
        for au in aus:
            everything += [100 * x for x in run.seed_values(au)] if run.n_seeds else []
    low, high = _limits(everything)
    xs = np.arange(len(aus))
    any_paper = any(not all(np.isnan(values[r.name]["paper"])) for r in runs)
    any_ci = False
    for i, run in enumerate(runs):
        ax = axes[i // cols][i % cols]
        v = values[run.name]
        colour = run_colour(i)
        ax.set_title(run.label if not run.n_seeds else f"{run.label} (mean of {run.n_seeds} {run.spread_over})",
                     fontsize=8, color="black" if run.state == "done" else "0.4")
        if run.state != "done":
            ax.text(0.5, 0.5, f"{run.state}" + (f"\n{run.detail}" if run.detail else ""), transform=ax.transAxes,
                    ha="center", va="center", fontsize=7, color="0.4", wrap=True)
        else:
            bars = ax.bar(xs, v["acc"], 0.75, color=colour, label=run.label)
            bars[-1].set_edgecolor("black")  # AVG
            bars[-1].set_linewidth(0.8)
            for x, au in zip(xs, aus):
                if run.n_seeds:
                    ys = [100 * s for s in run.seed_values(au)]
                    ax.scatter([x] * len(ys), ys, s=6, color="black", zorder=3)
            lo = np.array(v["lo"]) if not run.n_seeds else np.full(len(aus), np.nan)
            if not np.isnan(lo).all():
                any_ci = True
                bal, hi = np.array(v["bal"]), np.array(v["hi"])
                ax.errorbar(xs, bal, yerr=[bal - lo, hi - bal], fmt="none", ecolor="0.3", elinewidth=0.7,
                            capsize=1.5, zorder=3)
        if any_paper:
            ax.scatter(xs, v["paper"], marker="_", s=90, linewidths=1.6, color=PAPER_COLOUR, zorder=4)
        ax.set_xticks(xs, aus, rotation=90, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        if low < 50 < high:
            ax.axhline(50, color="grey", lw=0.6, ls=":")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(aus) - 0.4)
    for j in range(len(runs), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    axes[0][0].set_ylim(low, high)
    for r in range(rows):
        axes[r][0].set_ylabel("test accuracy (%)", fontsize=8)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color="0.6", label="ours: accuracy on the balanced test batches (AVG outlined)")]
    if any_paper:
        handles.append(Line2D([], [], marker="_", ls="none", ms=10, mew=1.6, color=PAPER_COLOUR, label="paper"))
    if any_ci:
        handles.append(Line2D([], [], marker="|", ls="none", ms=8, color="0.3",
                              label="balanced accuracy, 95 % interval over test subjects"))
    if any(r.n_seeds for r in runs):
        handles.append(Line2D([], [], marker=".", ls="none", color="black", label="each seed / fold"))
    fig.suptitle(study.title, fontsize=10)
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.965), ncol=len(handles), fontsize=7,
               frameon=False)
    _caption(fig, note, wrap)
    fig.tight_layout(rect=(0, (extra + 0.1) / fig.get_figheight(), 1, 1 - 0.3 / fig.get_figheight()))
    return fig


def text_box(text, renderer):
    """The box of an annotation's text alone (an annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    if hasattr(text, "update_positions"):
        text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def _place_labels(texts: list, fig) -> None:
    """Move annotation labels so that none overlaps another: each, in the order given, takes the first free spot
    among offsets right, then left of its point, stepping down and up (in points), else the least crowded one; a
    label moved off its first spot keeps a thin leader line to its point."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    placed: list = []  # the points' markers first: a label covers no point
    for text in texts:
        x, y = text.axes.transData.transform(text.xy)
        placed.append(Bbox([[x - 4, y - 4], [x + 4, y + 4]]))
    steps = [0, -10, 10, -20, 20, -30, 30, -40, 40, -50, 50]
    candidates = [(dx, 3 + dy, ha) for dy in steps for dx, ha in ((5, "left"), (-5, "right"))]
    for text in texts:
        best, best_hits = candidates[0], None
        for dx, dy, ha in candidates:
            text.xyann = (dx, dy)
            text.set_ha(ha)
            box = text_box(text, renderer).expanded(1.04, 1.2)
            hits = sum(box.overlaps(p) for p in placed)
            if best_hits is None or hits < best_hits:
                best, best_hits = (dx, dy, ha), hits
            if hits == 0:
                break
        text.xyann = best[:2]
        text.set_ha(best[2])
        if best == candidates[0]:
            text.arrow_patch.set_visible(False)
        placed.append(text_box(text, renderer))


def _costs(study: StudyResults) -> dict[str, dict[str, Any]]:
    """Our per-image costs (paper conventions) per run, with as many outputs as the runs predict."""
    k = len(next((r.per_au for r in study.runs if r.per_au), None) or []) or 12
    out = {}
    for run in study.runs:
        if run.arch:
            out[run.name] = arch_costs(run.arch, k, study.dir)
    return out


def flops_figure(study: StudyResults, path: Path, costs: dict[str, dict[str, Any]] | None = None,
                 note: str | None = None) -> Path:
    """``draw_flops`` written to ``path``."""
    return _save(draw_flops(study, costs, note), path)


def draw_flops(study: StudyResults, costs: dict[str, dict[str, Any]] | None = None, note: str | None = None):
    """Mean accuracy over AUs against forward FLOPs (log scale): ours filled, the paper's hollow, a thin line from
    the paper's point to ours for the same network; labels moved apart where they would overlap."""
    plt = _pyplot()
    if costs is None:
        costs = _costs(study)
    wrap = 110
    extra = 0.16 * _caption_lines(note, wrap)
    fig, ax = plt.subplots(figsize=(8, 5.5 + extra))
    texts, xs_all, ys_all = [], [], []
    drawn_ci = False
    points = []
    for i, run in enumerate(study.runs):
        colour = run_colour(i)
        ours = None
        if run.mean is not None and run.name in costs:
            x, y = costs[run.name]["flops"] / 1e6, 100 * run.mean
            ours = (x, y)
            ax.scatter([x], [y], color=colour, zorder=3, s=36)
            if run.mean_ci and run.balanced is not None:
                b = 100 * run.balanced
                ax.errorbar([x], [b], yerr=[[b - 100 * run.mean_ci[0]], [100 * run.mean_ci[1] - b]], fmt="none",
                            ecolor=colour, alpha=0.6, capsize=3, zorder=2)
                ys_all += [100 * run.mean_ci[0], 100 * run.mean_ci[1]]
                drawn_ci = True
            xs_all.append(x)
            ys_all.append(y)
            points.append((y, x, run.title, colour, False))
        paper_avg = (run.paper.get("accuracy") or {}).get("AVG")
        if paper_avg is not None and run.paper.get("flops_m"):
            px = float(run.paper["flops_m"])
            ax.scatter([px], [paper_avg], facecolors="none", edgecolors=colour, s=36, linewidths=1.2, zorder=3)
            if ours is not None:
                ax.plot([px, ours[0]], [paper_avg, ours[1]], color=colour, lw=0.6, ls=":", zorder=1)
            xs_all.append(px)
            ys_all.append(paper_avg)
            points.append((paper_avg, px, run.title + " (paper)" if ours is None else run.title, colour, True))
    # labels from the top down, each pushed below the ones already placed when they would overlap
    for y, x, title, colour, is_paper in sorted(points, key=lambda p: -p[0]):
        t = ax.annotate(title, (x, y), textcoords="offset points", xytext=(5, 3), fontsize=7,
                        color=colour, style="italic" if is_paper else "normal",
                        arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.4, "alpha": 0.6})
        texts.append(t)
    ax.set_xscale("log")
    if xs_all:
        lo, hi = min(xs_all), max(xs_all)
        ax.set_xlim(lo / 1.5, hi * 2.2)  # room on the right for the labels
    if ys_all:
        ax.set_ylim(*_limits(ys_all, pad=2.0))
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    # labelled ticks at 1, 2 and 5 of each decade, unlabelled minor ticks between: no label runs into another
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(3.0, 4.0, 6.0, 7.0, 8.0, 9.0)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)
    missing = [r.title for r in study.runs if r.state != "done"]
    if missing:
        ax.text(0.01, 0.01, "not done: " + ", ".join(missing), transform=ax.transAxes, fontsize=7, va="bottom",
                color="grey", wrap=True)
    ax.scatter([], [], color="0.4", label="ours (mean accuracy over AUs)")
    if drawn_ci:
        ax.errorbar([], [], yerr=[], fmt="none", ecolor="0.4", capsize=3,
                    label="ours: balanced accuracy, 95 % interval over test subjects")
    if any(r.paper.get("flops_m") for r in study.runs):
        ax.scatter([], [], facecolors="none", edgecolors="0.4", label="paper (Table I); dotted: to ours")
    ax.set_xlabel("forward FLOPs per image (millions, log scale)")
    ax.set_ylabel("mean test accuracy over AUs (%)")
    ax.set_title(f"Accuracy against computational cost ({study.name})", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    _caption(fig, note, wrap)
    fig.tight_layout(rect=(0, (extra + 0.05) / fig.get_figheight(), 1, 1))
    fig.canvas.draw()
    _place_labels(texts, fig)  # in the final layout: the labels' boxes are measured where they will be drawn
    return fig


def curve_figure(studies: list[StudyResults], path: Path, note: str | None = None) -> Path:
    """``draw_curves`` written to ``path``."""
    return _save(draw_curves(studies, note), path)


def draw_curves(studies: list[StudyResults], note: str | None = None):
    """One panel per curve study (Fig. 2: left frames, right subjects): every run's mean accuracy against x, and
    the balanced accuracy's 95 % interval as a band where the runs have one (the panel says when none could be
    computed: a test split of too few subjects)."""
    plt = _pyplot()
    order = {"left": 0, "right": 1}
    studies = sorted(studies, key=lambda s: (order.get(str(s.meta.get("panel")), 2), s.name))
    wrap = int(5.2 * len(studies) * 15)
    extra = 0.16 * _caption_lines(note, wrap)
    fig, axes = plt.subplots(1, len(studies), figsize=(5.2 * len(studies), 4.4 + extra), squeeze=False, sharey=True)
    everything: list[float] = []
    for ax, study in zip(axes[0], studies):
        done = sorted((r for r in study.runs if r.x is not None and r.mean is not None), key=lambda r: r.x)
        if done:
            xs = [r.x for r in done]
            ys = [100 * r.mean for r in done]
            ax.plot(xs, ys, "o-", color=PALETTE[0], label="mean accuracy (balanced test batches)")
            everything += ys
        with_ci = [r for r in done if r.mean_ci and r.balanced is not None]
        if with_ci:
            xs = [r.x for r in with_ci]
            lo, hi = [100 * r.mean_ci[0] for r in with_ci], [100 * r.mean_ci[1] for r in with_ci]
            bs = [100 * r.balanced for r in with_ci]
            ax.fill_between(xs, lo, hi, color=PALETTE[0], alpha=0.2, label="balanced accuracy, 95 % interval")
            ax.plot(xs, bs, ":", color=PALETTE[0], lw=1)
            everything += lo + hi
        notes = []
        if done and len(with_ci) < len(done):
            why = next((r.ci_note for r in done if not r.mean_ci and r.ci_note), "")
            notes.append(("no 95 % interval could be computed" if not with_ci else
                          f"no 95 % interval for {len(done) - len(with_ci)} of {len(done)} points")
                         + (f" ({why})" if why else " (too few test subjects)"))
        missing = [f"{r.x:g}" if r.x is not None else r.name for r in study.runs if r.state != "done"]
        if missing:
            notes.append(f"not done: {', '.join(missing)}")
        if notes:
            ax.text(0.02, 0.97, "\n".join(notes), transform=ax.transAxes, fontsize=7, color="0.35", va="top",
                    wrap=True)
        xs_all = [r.x for r in study.runs if r.x is not None]
        if xs_all:
            ax.set_xticks(xs_all)
            ax.set_xlim(min(xs_all) - 10, max(xs_all) + 10)
        ax.set_xlabel(str(study.meta.get("x_label") or "x"))
        ax.set_title(str(study.meta.get("paper_ref") or study.name), fontsize=10)
        ax.grid(alpha=0.3)
        if done:
            ax.legend(fontsize=7, loc="lower right")
    low, high = _limits(everything, pad=2.0)
    axes[0][0].set_ylim(low, high + (high - low) * 0.15)  # room for the panel's notes above the curve
    axes[0][0].set_ylabel("mean test accuracy over AUs (%)")
    fig.suptitle("AU detection accuracy against training frames and subjects (baseline CNN)", fontsize=10)
    _caption(fig, note, wrap)
    fig.tight_layout(rect=(0, (extra + 0.05) / fig.get_figheight(), 1, 1))
    return fig
