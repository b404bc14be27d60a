"""Reports of studies in the paper's layout: tables (Markdown, CSV; the HTML page: ``studies/html.py``) and figures
(PNG) from finished runs.

``collect(dir)`` reads a study directory written by ``aubench study`` (its ``study.json``, and each run's
``eval.json``, ``metrics.csv``, ``config.yaml`` and ``status/<run>.json``), or every study directory under a
parent folder. Each run gets a state: ``done``, ``unfinished`` (fewer epochs than its config asks),
``not evaluated``, ``failed`` or ``missing``; a run that is not done is shown as such in every table and figure,
never dropped. Tables follow the paper: AUs as rows, runs as columns, an AVG row, the best value in bold and the
second best in [brackets] (ours and the paper's ranked separately by ``evaluation.stats.ranks``, the function the
eval table uses, on the values as printed, to 0.1), the paper's number in parentheses beside ours, the mean
balanced accuracy with its 95 % interval over test subjects, and for architecture studies the FLOPs / #params /
memory rows. Under each table, the resolution of its test split: the 95 % half-width of a paired difference
between two of its runs and the smallest difference detectable with 80 % power (``resolution``). Figures
(drawn in ``studies/figures.py``): per-AU bars per study, accuracy against FLOPs for architecture studies, and
Fig. 2's panels (accuracy against % of frames and % of subjects); their error bars are the balanced accuracy's
95 % intervals. Every caption says what differs from the paper's protocol (``protocol_notes``: the overrides
recorded in study.json, settings unlike the preset's, synthetic data).

A k-fold study (``DIR/<run>/fold<i>/[seed<k>/]``) shows each run as the mean ± sd over its folds here;
``layout="literature"`` prints the AU literature's tables instead (runs as rows, F1, pooled folds:
``studies/literature.py``), in Markdown, LaTeX or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli import config as cfgmod
from aubench_cli.evaluation import stats
from aubench_cli.fileio import atomic_write_text
from aubench_cli.errors import UsageError
from aubench_cli.studies import rankings as rankmod
from aubench_cli.studies.figures import _costs, curve_figure, flops_figure, per_au_figure
# a run's results, read back: the layer below this module and rankings.py
from aubench_cli.studies.results import RunResult, StudyResults, fold_count, run_result
from aubench_cli.studies.study import COSTS_FILE, STUDY_FILE

# Studies under one folder are reported in the paper's order; others follow alphabetically.
PAPER_ORDER = ["table1-architectures", "table2-normalization", "table2-augmentation", "table2-balancing",
               "fig2-frames", "fig2-subjects"]
FORMATS = ("md", "csv", "html", "tex")
LAYOUTS = ("paper", "literature")  # literature: methods as rows, AUs as columns, F1 and folds (studies/literature.py)


def load_study_dir(study_dir: Path) -> StudyResults:
    path = study_dir / STUDY_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}", "run aubench study into this directory first") from exc
    folds = fold_count(study_dir, record)
    runs = [run_result(study_dir, entry, record.get("seeds"), folds) for entry in record.get("runs", [])]
    return StudyResults(record.get("preset") or study_dir.name, study_dir, record.get("study") or {}, record, runs)


def collect(folder: str | Path) -> list[StudyResults]:
    """The study in ``folder``, or every study directory directly under it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"study directory {folder} not found", "give the --out of aubench study (default studies/<preset>)")
    if (folder / STUDY_FILE).is_file():
        return [load_study_dir(folder)]
    found = [p for p in sorted(folder.iterdir()) if (p / STUDY_FILE).is_file()]
    if not found:
        raise UsageError(f"{folder} holds no study ({STUDY_FILE} not found in it or its subfolders)",
                         "give a directory written by aubench study")
    studies = [load_study_dir(p) for p in found]
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted(studies, key=lambda s: (rank.get(s.name, len(rank)), s.name))


# ----------------------------------------------------------------------------------------------------------------
# tables


def resolution(study: StudyResults, seed: int = 0) -> dict[str, Any] | None:
    """What the study's test split can resolve: for every pair of its evaluated runs tested on the same frames,
    the 95 % half-width of the difference in mean balanced accuracy (paired by test subject) and the smallest
    difference detectable with 80 % power at 5 %; their median and range over the pairs. None without two such
    runs (evaluations from before subject counts were recorded have none)."""
    def tested(run: RunResult) -> list[RunResult]:  # each seed's evaluation, or the run's own
        return run.seeds if run.n_seeds else [run]

    runs = [r for r in study.runs if r.state == "done"
            and all(x.subject_counts and x.digest for x in tested(r))]
    pairs = []
    rng = np.random.default_rng(seed)
    keys = ("cache", "split_map", "split", "seed", "batches")
    for i in range(len(runs)):
        for j in range(i + 1, len(runs)):
            a, b = runs[i], runs[j]
            evals = tested(a) + tested(b)
            first = evals[0]
            if any(any(x.digest.get(k) != first.digest.get(k) for k in keys)
                   or x.subject_counts["subjects"] != first.subject_counts["subjects"] for x in evals):
                continue
            shared = [au for au in first.subject_counts["au_names"]
                      if all(au in x.subject_counts["au_names"] for x in evals)]

            def counts(x: RunResult) -> np.ndarray:
                return np.asarray(x.subject_counts["counts"])[:, [x.subject_counts["au_names"].index(au) for au in shared]]

            if a.n_seeds or b.n_seeds:  # seeds resampled within each setting as well as subjects
                test = stats.paired_seeds(np.stack([counts(x) for x in tested(a)]),
                                          np.stack([counts(x) for x in tested(b)]), rng)
                test["min_p_value"] = 2.0 / test["resamples"]
            else:
                test = stats.paired(counts(a), counts(b), rng, permutations=999)
            pairs.append({"a": a.name, "b": b.name, "diff": test["mean"]["value"], "ci95": test["mean"]["ci95"],
                          "half_width": test["mean"]["half_width"],
                          "min_detectable_diff": test["mean"]["min_detectable_diff"],
                          "p_value": test["mean"]["p_value"], "min_p_value": test["min_p_value"],
                          "method": test["method"], "subjects": test["units"]})
    known = [p for p in pairs if p["half_width"] is not None]
    if not pairs:
        return None
    summary: dict[str, Any] = {"pairs": pairs, "subjects": pairs[0]["subjects"], "method": pairs[0]["method"],
                               "min_p_value": min(p["min_p_value"] for p in pairs)}  # the best any pair can reach
    for key in ("half_width", "min_detectable_diff"):
        values = [p[key] for p in known]
        summary[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)} if values else None
    return summary


def _resolution_text(study: StudyResults) -> str | None:
    res = resolution(study)
    if res is None:
        return None
    n, unit = res["subjects"], "subject" if res["subjects"] == 1 else "subjects"
    if res["half_width"] is None:
        return (f"Resolution: the test split has {n} {unit}; no interval over subjects can be computed, so this "
                "split cannot say whether any two settings differ.")
    hw, mdd = res["half_width"], res["min_detectable_diff"]
    text = (f"Resolution of the test split ({n} {unit}, {len(res['pairs'])} pairs of runs, paired by subject, "
            f"{res['method']}): the difference in mean balanced accuracy between two runs has a 95 % half-width of "
            f"about {100 * hw['median']:.1f} points ({100 * hw['min']:.1f}-{100 * hw['max']:.1f}); the smallest "
            f"difference detectable with 80 % power is about {100 * mdd['median']:.1f} points "
            f"({100 * mdd['min']:.1f}-{100 * mdd['max']:.1f}). Gaps between columns smaller than that are not "
            "resolved by this split.")
    if res["min_p_value"] >= 0.05:
        text += (f" With {n} {unit} (only those on which two runs differ count) the paired permutation test "
                 f"cannot reach p < 0.05 (its smallest p is {res['min_p_value']:.3g}): no difference can be called "
                 "significant.")
    return text


def _ranks(values: list[float | None], scale: float = 100.0) -> list[int | None]:
    """1 for the best (ties share it), 2 for the second best value, None otherwise: ``stats.ranks``, the eval
    table's function, on the values as printed (to 0.1)."""
    return stats.ranks(values, 1, scale)


def _mark(value: float | None, rank: int | None, fmt: str) -> str:
    if value is None:
        return "-"
    text = f"{value:.1f}"
    if rank == 1:
        return f"<b>{text}</b>" if fmt == "html" else f"**{text}**"
    if rank == 2:
        return f"[{text}]"
    return text


def study_table(study: StudyResults, fmt: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a study's table in the paper's layout, cells already marked for ``fmt``."""
    header = ["Exp."] + [run.label for run in study.runs]
    rows: list[list[str]] = []
    paper = study.has_paper()

    def line(label: str, ours: list[float | None], theirs: list[float | None],
             sds: list[float | None] | None = None) -> list[str]:
        """``ours`` as fractions (ranked as printed in %; with seeds the mean over seeds, ``sds`` their standard
        deviation in %), ``theirs`` the paper's, already in %."""
        cells = [label]
        our_rank, paper_rank = _ranks(ours), _ranks(theirs, scale=1.0)
        ours = [None if v is None else 100 * v for v in ours]
        for i, run in enumerate(study.runs):
            cell = _mark(ours[i], our_rank[i], fmt) if run.state == "done" else run.state
            if run.state == "done" and run.n_seeds:
                sd = sds[i] if sds else None
                cell += f" ± {sd:.1f}" if sd is not None else ""
            if paper:
                cell += f" ({_mark(theirs[i], paper_rank[i], fmt)})" if theirs[i] is not None else " (-)"
            cells.append(cell)
        return cells

    def sd(value: float | None) -> float | None:
        return None if value is None else 100 * value

    for au in study.aus():
        ours = [r.per_au[au]["accuracy"] if au in r.per_au else None for r in study.runs]
        theirs = [(r.paper.get("accuracy") or {}).get(au) for r in study.runs]
        rows.append(line(au, ours, theirs, [sd((r.per_au.get(au) or {}).get("accuracy_sd")) for r in study.runs]))
    rows.append(line("AVG", [r.mean for r in study.runs],
                     [(r.paper.get("accuracy") or {}).get("AVG") for r in study.runs],
                     [sd(r.mean_sd) for r in study.runs]))
    if any(r.n_seeds for r in study.runs):
        counts = [next(r.spread_over for r in study.runs if r.n_seeds)]
        for run in study.runs:
            done = sum(1 for r in run.seeds if r.state == "done")
            counts.append(f"{done}/{run.n_seeds}" if run.n_seeds else "1")
        rows.append(counts)
    ci = ["balanced AVG (95 % CI)"]
    for run in study.runs:
        if run.state != "done":
            ci.append(run.state)
            continue
        value = "-" if run.balanced is None else f"{100 * run.balanced:.1f}"
        ci.append(value + (f" ({100 * run.mean_ci[0]:.1f}-{100 * run.mean_ci[1]:.1f})" if run.mean_ci else ""))
    rows.append(ci)
    if study.has_costs():
        costs = _costs(study)
        # ours to the paper's precision; the paper's as printed (81.6M, 1040M; 2,276K; 4.71MB)
        for label, key, paper_key, show, as_printed in (
            ("FLOPs", "flops", "flops_m", lambda v: f"{v / 1e6:,.1f}M", lambda v: f"{v:g}M"),
            ("#params", "params", "params_k", lambda v: f"{v / 1e3:,.0f}K", lambda v: f"{v:,.0f}K"),
            ("Memory", "memory_mb", "memory_mb", lambda v: f"{v:.2f}MB", lambda v: f"{v:.2f}MB"),
        ):
            row = [label]
            for run in study.runs:
                cell = show(costs[run.name][key]) if run.name in costs else "-"
                theirs = run.paper.get(paper_key)
                if theirs is not None:
                    cell += f" ({as_printed(theirs)})"
                row.append(cell)
            rows.append(row)
    return header, rows


# Settings that are the machine's, not the experiment's: never reported as a difference from the paper.
_NOT_PROTOCOL = ("data.cache", "data.drop_unbalanceable", "train.device", "train.channels_last", "train.amp",
                 "train.compile", "train.scale_batch", "model.layout", "model.allow_partial_weights")


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() if isinstance(values, dict)
            for key, value in values.items()}


def _is_synthetic(study: StudyResults) -> bool | None:
    """Whether the study's cache was made from ``aubench synth`` data (its source folder holds synth.json); None
    when the cache or its source cannot be read."""
    caches = {study.record.get("cache")} | {(r.config or {}).get("data", {}).get("cache") for r in study.runs}
    verdict = None
    for cache in caches - {None}:
        header = Path(str(cache)) / "cache.json"
        try:
            source = (json.loads(header.read_text()).get("source") or {}).get("path")
        except (OSError, ValueError):
            continue
        if source and (Path(source) / "synth.json").is_file():
            return True
        if source and Path(source).is_dir():
            verdict = False
    return verdict


def protocol_notes(study: StudyResults) -> list[str]:
    """What differs from the paper's protocol, for every table and figure caption: the overrides given to
    ``aubench study`` (recorded in study.json), each setting of a run that differs from what its preset asks
    (the paper's), test batches other than the preset's, and whether the data is synthetic."""
    notes: list[str] = []
    synthetic = _is_synthetic(study)
    if synthetic:
        notes.append("SYNTHETIC DATA (aubench synth): these numbers test the pipeline, not the paper's claims")
    sets = [str(s) for s in study.record.get("sets") or []]
    if sets:
        notes.append("overrides: " + ", ".join(f"--set {s}" for s in sets))
    differ: dict[str, set[str]] = {}
    for entry, run in zip(study.record.get("runs") or [], study.runs):
        if not run.config:
            continue
        wanted = cfgmod.Config()
        try:
            cfgmod.apply_mapping(wanted, study.record.get("shared") or {}, "preset")
            for key, value in (entry.get("set") or {}).items():
                cfgmod.set_value(wanted, key, value, "preset")
        except UsageError:
            continue
        want, got = _flat(cfgmod.to_dict(wanted)), _flat(run.config)
        for key, value in got.items():
            if key in want and key not in _NOT_PROTOCOL and not key.startswith(("eval.", "profile.")) \
                    and value != want[key]:
                differ.setdefault(f"{key} {value} (paper {want[key]})", set()).add(run.name)
    if differ:
        n = sum(1 for r in study.runs if r.config)
        notes.append("settings unlike the paper's: " + ", ".join(
            text + ("" if len(names) == n else f" in {', '.join(sorted(names))}") for text, names in differ.items()))
    paper_batches = (study.record.get("shared") or {}).get("eval", {}).get("batches", cfgmod.EvalConfig().batches)
    batches = sorted({r.eval_batches for r in study.runs if r.state == "done" and r.eval_batches is not None})
    if batches and batches != [paper_batches]:
        notes.append(f"{'/'.join(str(b) for b in batches)} test batches (paper {paper_batches})")
    if synthetic is None and study.runs and any(r.state == "done" for r in study.runs):
        notes.append("data source unknown (cache not found)")
    return notes


def protocol_text(study: StudyResults) -> str:
    """``protocol_notes`` as one sentence (or the statement that the runs follow the paper's protocol)."""
    notes = protocol_notes(study)
    if not notes:
        return "Protocol: as in the paper (the preset's settings, no overrides)."
    return "Differs from the paper's protocol: " + "; ".join(notes) + "."


def _caption(study: StudyResults) -> str:
    done = [r for r in study.runs if r.state == "done"]
    batches = {r.eval_batches for r in done}
    parts = [f"Preset `{study.name}`, directory `{study.dir}`; {len(done)} of {len(study.runs)} runs done.",
             protocol_text(study)]
    parts.append("Test accuracy (%) at 0.5 over each AU's own frames of "
                 + (f"{', '.join(str(b) for b in sorted(batches))} balanced test batches" if batches else "the balanced test batches")
                 + "; best in bold, second best [bracketed]. The balanced AVG row is the mean balanced accuracy "
                 "over every labelled test frame (what the batches estimate), with its 95 % interval over test "
                 "subjects (" + (done[0].ci_note if done and done[0].ci_note else "see docs/training.md") + ").")
    seeds = max((r.n_seeds for r in study.runs), default=0)
    over = next((r.spread_over for r in study.runs if r.n_seeds), "seeds")
    if seeds and over == "folds":
        inner = max((f.n_seeds for r in study.runs for f in r.seeds), default=0)
        parts.append(f"Each cell is the mean ± standard deviation over {seeds} subject-exclusive folds (each "
                     "fold tested on its own subjects" + (f", its figure first averaged over {inner} training seeds"
                                                         if inner else "") +
                     "); best and second best are decided on the mean. F1 and pooled figures: --layout literature.")
    elif seeds:
        parts.append(f"Each cell is the mean ± standard deviation over {seeds} training seeds (the same test "
                     "batches for every seed); best and second best are decided on the mean.")
    if study.has_paper():
        parts.append("The paper's value is in parentheses (ranked among the paper's values); its AVG is over its 12 AUs."
                     + (" Table II prints AU12 as \"Smile\"." if study.meta.get("paper_ref") == "Table II" else ""))
    if study.has_costs():
        parts.append("FLOPs, #params and memory per 96x96 image in the paper's conventions (aubench profile), with "
                     "as many outputs as AUs evaluated here (the paper's counts fit 14 outputs).")
    short = _short_subsets(study)
    if short:
        parts.append("Frame budget not met (no draw of that many subjects holds it; every frame of the subjects "
                     "drawn was used instead): " + "; ".join(short) + ".")
    return " ".join(parts)


def _short_subsets(study: StudyResults) -> list[str]:
    """Runs (or their seeds / folds) whose Section V subset fell short of its frame budget, with the realised
    total and share of the training frames (``select_subset``)."""
    out = []
    for run in study.runs:
        for part in [run, *run.seeds, *(s for f in run.seeds for s in f.seeds)]:
            sub = part.subset
            if sub and sub.get("budget_met") is False:
                out.append(f"{run.title}: {sub['frames']} frames, {100 * sub['frames_share']:.1f} % of the training "
                           f"frames (asked {100 * sub['frames_frac']:.0f} %, from {sub['subjects']} of "
                           f"{sub['subjects_available']} subjects)")
    return list(dict.fromkeys(out))


def _not_done(study: StudyResults) -> list[str]:
    return [f"{r.name}: {r.state}" + (f" ({r.detail})" if r.detail else "") for r in study.runs if r.state != "done"]


def render_markdown(studies: list[StudyResults], figures: dict[str, list[Path]], base: Path) -> str:
    out = ["# aubench report", ""]
    for study in studies:
        out += [f"## {study.title}", "", _caption(study), ""]
        header, rows = study_table(study, "md")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" + "---:|" * (len(header) - 1))
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        out.append("")
        res = _resolution_text(study)
        if res:
            out += [res, ""]
        missing = _not_done(study)
        if missing:
            out += ["Runs not done:", ""] + [f"- {m}" for m in missing] + [""]
        for fig in figures.get(study.name, []):
            out += [f"![{fig.stem}]({_rel(fig, base)})", ""]
    for fig in figures.get("", []):
        out += [f"![{fig.stem}]({_rel(fig, base)})", ""]
    return "\n".join(out)


def render_csv(studies: list[StudyResults]) -> str:
    """One row per study, run and AU (AVG included): ours with its interval, the paper's, and the run's state."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "run", "title", "arch", "x", "seed", "state", "au", "accuracy", "balanced_accuracy",
                     "ci95_low", "ci95_high", "sd_over_seeds", "paper"])
    for study in studies:
        for run in study.runs:
            paper = run.paper.get("accuracy") or {}
            # with seeds: the mean over seeds (seed "mean"), then each seed's own row
            tag = "fold" if run.spread_over == "folds" else ""
            for seed, r in [("mean" if run.n_seeds else "", run)] + [(f"{tag}{k}", x) for k, x in enumerate(run.seeds)]:
                for au in study.aus() + ["AVG"]:
                    if au == "AVG":
                        acc, bal, ci, sd = r.mean, r.balanced, r.mean_ci or [None, None], r.mean_sd
                    else:
                        m = r.per_au.get(au) or {}
                        acc, bal = m.get("accuracy"), m.get("balanced_accuracy")
                        ci, sd = m.get("ci95") or [None, None], m.get("accuracy_sd")
                    writer.writerow([study.name, run.name, run.title, run.arch, run.x, seed, r.state, au,
                                     _pct(acc), _pct(bal), _pct(ci[0]), _pct(ci[1]), _pct(sd), paper.get(au)])
    return buffer.getvalue()


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


# ----------------------------------------------------------------------------------------------------------------
# figures


def make_figures(studies: list[StudyResults], folder: Path) -> dict[str, list[Path]]:
    """Every figure of the report as PNG under ``folder``, keyed by study name ('' for figures of several)."""
    folder.mkdir(parents=True, exist_ok=True)
    figures: dict[str, list[Path]] = {}
    curves: dict[str, list[StudyResults]] = {}
    for study in studies:
        made = figures.setdefault(study.name, [])
        if study.kind == "curve":
            curves.setdefault(str(study.meta.get("figure") or study.name), []).append(study)
        else:
            made.append(per_au_figure(study, folder / f"{study.name}-per-au.png", note=protocol_text(study)))
        if study.has_costs():
            made.append(flops_figure(study, folder / f"{study.name}-accuracy-vs-flops.png", _costs(study),
                                     note=protocol_text(study)))
    for name, group in curves.items():
        texts = [protocol_text(s) for s in group]
        note = texts[0] if len(set(texts)) == 1 else " ".join(
            f"{s.meta.get('paper_ref') or s.name}: {t}" for s, t in zip(group, texts))
        path = curve_figure(group, folder / f"{name}.png", note=note)
        figures.setdefault("" if len(group) > 1 else group[0].name, []).append(path)
        for study in group:  # the per-AU view of curve studies too
            figures[study.name].append(per_au_figure(study, folder / f"{study.name}-per-au.png",
                                                     note=protocol_text(study)))
    return figures


def write_report(folder: str | Path, fmt: str = "md", out: str | Path | None = None,
                 layout: str = "paper", aus: list[str] | None = None, rope: float | None = None,
                 pairs: list[tuple[str, str]] | None = None, page: Any = None) -> dict[str, Any]:
    """Write the report of the study (or studies) in ``folder``; returns what was written.

    ``out`` defaults to ``folder/report.<fmt>``; ``-`` returns the text instead of writing it. Figures go to a
    ``figures/`` folder beside the report (beside ``folder``'s report when the text goes to stdout).
    The AU literature's layout is ``studies.literature.literature_report`` (which builds on this module).
    Both layouts open with a plain summary and end with each study's rankings (``studies/rankings.py``; ``rope``:
    the ROPE as a fraction, ``pairs``: runs to compare for practical equivalence besides the top two).
    ``fmt="html"`` is ``studies.html.write_html``: one self-contained page, ``page`` its renderer (one-way imports:
    the page shows the literature's layout too, and literature.py builds on this module).
    """
    rope = rankmod.ranking.DEFAULT_ROPE if rope is None else rope

    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if layout not in LAYOUTS:
        raise UsageError(f"unknown report layout {layout!r}", f"use one of {', '.join(LAYOUTS)}")
    if layout == "literature":  # the command calls studies.literature.literature_report (one-way imports)
        raise UsageError("write_report writes the paper's layout",
                         "for the literature's, call aubench_cli.studies.literature.literature_report")
    if aus:
        raise UsageError("--aus is for the literature's layout", "add --layout literature")
    if fmt == "tex":
        raise UsageError("--format tex is for the literature's layout", "add --layout literature")
    studies = collect(folder)
    to_stdout = str(out) == "-"
    path = Path(folder) / f"report.{fmt}" if out is None or to_stdout else Path(out)
    base = path.parent
    base.mkdir(parents=True, exist_ok=True)
    figures_dir = base / "figures"
    embedded: list[str] = []
    with tempfile.TemporaryDirectory(prefix="aubench-figures-") as scratch:
        if fmt == "html":  # one self-contained file: the figures drawn in a scratch folder and embedded
            if page is None:
                raise UsageError("write_report's html page is drawn by studies.html (it shows the literature's layout too)",
                                 "call aubench_cli.studies.html.write_html")
            figures_dir = Path(scratch)
        figures = make_figures(studies, figures_dir)
        ranked = rankmod.for_report([(s.name, s.dir) for s in studies], rope=rope, pairs=pairs or [])
        rankmod.add_figures(ranked, figures, figures_dir)
        if fmt == "html":
            embedded = [p.name for paths in figures.values() for p in paths]
            text = page(studies, figures)
            figures = {}
        else:
            text = render_markdown(studies, figures, base) if fmt == "md" else render_csv(studies)
    text = rankmod.into_report(text, fmt, ranked)
    if not to_stdout:
        atomic_write_text(path, text)
        if fmt == "csv":
            atomic_write_text(rankmod.csv_path(path), rankmod.render_csv(ranked))
    return {
        "report": None if to_stdout else str(path), "text": text if to_stdout else None,
        "figures": [str(p) for paths in figures.values() for p in paths], "embedded_figures": embedded,
        "rankings": ranked, **({"rankings_csv": str(rankmod.csv_path(path))} if fmt == "csv" and not to_stdout else {}),
        "studies": [{"name": s.name, "dir": str(s.dir), "runs": {r.name: r.state for r in s.runs},
                     "resolution": resolution(s)} for s in studies],
    }


__all__ = ["collect", "write_report", "study_table", "make_figures", "protocol_notes", "COSTS_FILE",
           "per_au_figure", "flops_figure", "curve_figure"]
