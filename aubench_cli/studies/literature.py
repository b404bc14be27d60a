"""Reports in the AU literature's layout: methods as rows, AUs as columns, Avg. last; F1 at 0.5 and balanced
accuracy; k-fold studies as the mean over folds and pooled over them (``aubench report --layout literature``).

A study run with folds (``DIR/<run>/fold<i>/eval.json``, with seeds ``DIR/<run>/fold<i>/seed<k>/eval.json``;
the number of folds from ``study.json``'s ``folds``, else from the ``fold<i>`` folders) gets, per run, AU and on
average (Avg.: the mean over the AUs of the table):

- **mean over folds ± sd**: each fold's figure as its ``eval`` printed it (F1 at 0.5 and balanced accuracy over
  every labelled frame of the fold's test subjects), their mean and sample standard deviation over the folds
  (the folds' spread, not an interval). With seeds, each fold's figure is first averaged over the seeds (they
  share the fold's test subjects), then mean ± sd over folds.
- **pooled**: the figure over the concatenated predictions of all folds, in which every subject is tested
  exactly once: the per-subject counts of the folds (``subject_counts`` of eval.json: tp, pos, tn, neg at 0.5),
  summed; pooled F1 = ``2 TP / (2 TP + FP + FN)`` of the sums, which is F1 over the concatenated predictions.
  Its 95 % interval resamples subjects (each one cluster, ``stats.pooled``: a jackknife with t quantiles under
  20 subjects, the percentile bootstrap above). With seeds: each seed's pooled figure, then mean ± sd over the
  seeds, the interval resampling the subjects once for every seed. Pooling needs each subject in one fold only
  and one cache for all folds; otherwise the pooled cells say why they are empty.

Papers differ on which of the two they print (docs/studies.md). A study without folds gets one number per cell:
the run's test split (with seeds, the mean over seeds), its Avg. interval over test subjects under the table.
Best in bold, second best [bracketed] (``\\underline`` in LaTeX), per column on the values as printed
(``stats.ranks``). Markdown, LaTeX (booktabs) or CSV.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli.errors import UsageError
from aubench_cli.evaluation import stats
from aubench_cli.fileio import atomic_write_text
# one way: this layout builds on report.py's reading of a study (report.py never imports this module)
from aubench_cli.studies.report import collect, load_study_dir, protocol_text
from aubench_cli.studies.results import _read_run, fold_count, pooled_counts, tex_escape, unit_grid

METRICS = {"f1": "F1 (%) at 0.5", "balanced_accuracy": "Balanced accuracy (%)"}
AVG = "Avg."
REPORT_STREAM = 10  # the pooled intervals' resamples: np.random.default_rng([0, 10])


@dataclass
class Cell:
    """One run's figure for one AU (or Avg.): fractions; None where unknown."""

    mean: float | None = None  # over folds (with seeds: of the seed-averaged folds); without folds, the value
    sd: float | None = None  # over folds
    folds: list[float | None] = field(default_factory=list)
    pooled: float | None = None
    pooled_sd: float | None = None  # over seeds
    ci95: list[float] | None = None  # of the pooled figure, over subjects


@dataclass
class Row:
    name: str
    title: str
    state: str
    detail: str = ""
    aus: list[str] = field(default_factory=list)
    cells: dict[str, dict[str, Cell]] = field(default_factory=dict)  # metric -> AU or Avg. -> cell
    pooled_note: str = ""  # why there is no pooled figure
    subjects: int | None = None
    method: str | None = None

    @property
    def label(self) -> str:
        return self.title if self.state == "done" else f"{self.title} ({self.state})"


@dataclass
class LiteratureStudy:
    name: str
    title: str
    dir: Path
    folds: int | None
    seeds: int | None
    rows: list[Row]
    only: list[str] | None = None  # the AUs asked for (--aus), in that order: the columns and Avg.
    protocol: str = ""  # report.protocol_text: how the runs differ from the paper's protocol (every caption says it)

    def aus(self) -> list[str]:
        if self.only:
            return list(self.only)
        out: list[str] = []
        for row in self.rows:
            out += [au for au in row.aus if au not in out]
        return out


def _mean(values: list[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _sd(values: list[float | None]) -> float | None:
    return None if len(values) < 2 or any(v is None for v in values) else statistics.stdev(values)


def _value(result: Any, metric: str, au: str) -> float | None:
    return (result.per_au.get(au) or {}).get(metric)


def literature_row(study_dir: Path, entry: dict[str, Any], folds: int | None, seeds: int | None,
                   aus: list[str] | None = None) -> Row:
    name = entry["name"]
    grid = unit_grid(study_dir, name, folds, seeds)
    units = [[_read_run(path, status, entry) for path, status in line] for line in grid]
    flat = [u for line in units for u in line]
    row = Row(name, flat[0].title, "done")
    not_done = [u for u in flat if u.state != "done"]
    if not_done:
        row.state = not_done[0].state
        what = "folds x seeds" if folds and seeds else "folds" if folds else "seeds" if seeds else ""
        row.detail = (f"{len(flat) - len(not_done)} of {len(flat)} {what} done; " if what else "") + not_done[0].detail
        return row
    row.aus = [au for au in (aus or flat[0].per_au) if all(au in u.per_au for u in flat)]
    counts, subjects, row.pooled_note = pooled_counts(units, row.aus)
    rng_seed = [0, REPORT_STREAM]
    for metric in METRICS:
        cells: dict[str, Cell] = {}
        # each fold's figure (seed-averaged), per AU and for the mean over the table's AUs
        per_fold = {au: [_mean([_value(u, metric, au) for u in line]) for line in units] for au in row.aus}
        per_fold[AVG] = [_mean([_mean([_value(u, metric, au) for au in row.aus]) for u in line]) for line in units]
        pooled = stats.pooled(counts, np.random.default_rng(rng_seed), metric) if counts is not None else None
        if counts is not None:  # each seed's pooled figure, per AU and the mean over them
            per_au = stats.METRICS[metric](counts.sum(axis=1))
            per_seed = np.concatenate([per_au, per_au.mean(axis=1, keepdims=True)], axis=1)
        for q, au in enumerate(row.aus + [AVG]):
            cell = Cell(mean=_mean(per_fold[au]), sd=_sd(per_fold[au]) if folds else None, folds=per_fold[au])
            if pooled is not None:
                item = pooled["per_au"][q] if au != AVG else pooled["mean"]
                cell.pooled, cell.ci95 = item["value"], item["ci95"]
                seed_values = [None if not np.isfinite(v) else float(v) for v in per_seed[:, q]]
                cell.pooled_sd = _sd(seed_values) if seeds else None
            cells[au] = cell
        row.cells[metric] = cells
        if pooled is not None:
            row.subjects, row.method = pooled["units"], pooled["method"]
    row.detail = (f"{folds} folds" if folds else "test split") + (f" x {seeds} seeds" if seeds else "")
    return row


def load(study_dir: Path, record: dict[str, Any], aus: list[str] | None = None) -> LiteratureStudy:
    folds = fold_count(study_dir, record)
    seeds = record.get("seeds")
    rows = [literature_row(study_dir, entry, folds, seeds, aus) for entry in record.get("runs", [])]
    meta = record.get("study") or {}
    name = record.get("preset") or study_dir.name
    return LiteratureStudy(name, str(meta.get("title") or name), study_dir, folds, seeds, rows, aus,
                           protocol_text(load_study_dir(study_dir)))


# ----------------------------------------------------------------------------------------------------------------
# tables


def tables(study: LiteratureStudy) -> list[tuple[str, str, str]]:
    """(metric, kind, title) of each table: with folds ``mean`` and ``pooled`` per metric, else ``value``."""
    out = []
    for metric, what in METRICS.items():
        if study.folds:
            seeds = f", each fold averaged over {study.seeds} seeds" if study.seeds else ""
            out.append((metric, "mean", f"{what}: mean ± sd over the {study.folds} folds{seeds}"))
            seeds = f"; mean ± sd over {study.seeds} seeds" if study.seeds else ""
            out.append((metric, "pooled", f"{what}: pooled over the {study.folds} folds (every subject tested "
                                          f"once){seeds}; 95 % interval over subjects"))
        else:
            seeds = f", mean over {study.seeds} seeds" if study.seeds else ""
            out.append((metric, "value", f"{what} on the test split{seeds}"))
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table_cells(study: LiteratureStudy, metric: str, kind: str, fmt: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows): a row per run, a column per AU, Avg. last; cells marked for ``fmt`` (md or tex)."""
    aus = study.aus() + [AVG]
    header = ["Method"] + aus
    key = "pooled" if kind == "pooled" else "mean"
    marks = {au: stats.ranks([getattr((r.cells.get(metric) or {}).get(au) or Cell(), key) for r in study.rows])
             for au in aus}
    pm = " $\\pm$ " if fmt == "tex" else " ± "
    rows = []
    for i, row in enumerate(study.rows):
        line = [row.label]
        for au in aus:
            cell = (row.cells.get(metric) or {}).get(au)
            value = None if cell is None else getattr(cell, key)
            if row.state != "done" or value is None:
                line.append("-")
                continue
            text = _mark(_pct(value), marks[au][i], fmt)
            spread = cell.sd if kind == "mean" else cell.pooled_sd if kind == "pooled" else None
            if spread is not None:
                text += f"{pm}{100 * spread:.1f}"
            if kind == "pooled" and cell.ci95:
                ci = f"({_pct(cell.ci95[0])}-{_pct(cell.ci95[1])})"
                text += f" {{\\scriptsize {ci.replace('-', '--')}}}" if fmt == "tex" else f" {ci}"
            line.append(text)
        rows.append(line)
    return header, rows


def _mark(text: str, rank: int | None, fmt: str) -> str:
    if rank == 1:
        return f"\\textbf{{{text}}}" if fmt == "tex" else f"**{text}**"
    if rank == 2:
        return f"\\underline{{{text}}}" if fmt == "tex" else f"[{text}]"
    return text


def caption(study: LiteratureStudy) -> str:
    done = [r for r in study.rows if r.state == "done"]
    parts = [f"Preset `{study.name}`, directory `{study.dir}`; {len(done)} of {len(study.rows)} runs done. "
             "Rows: runs; columns: AUs, Avg. (the mean over the AUs) last. F1 at 0.5 and the balanced accuracy "
             "(mean of TPR and TNR) over every labelled test frame; best in bold, second best marked."]
    if study.folds:
        subjects = next((r.subjects for r in done if r.subjects), None)
        method = next((r.method for r in done if r.method), None)
        parts.append(f"Subject-exclusive {study.folds}-fold cross-validation: the mean over folds ± the folds' "
                     "standard deviation, and the pooled figure over the concatenated predictions of all folds"
                     + (f" ({subjects} subjects, each tested once; interval: {method} over subjects)" if subjects
                        else "") + ".")
        if study.seeds:
            parts.append(f"{study.seeds} training seeds: each fold's figure averaged over the seeds before the "
                         "mean ± sd over folds; the pooled figure per seed, then mean ± sd over the seeds.")
    for r in done:
        lacking = [au for au in study.aus() if au not in r.aus]
        if lacking:
            parts.append(f"{r.title} has no result for {', '.join(lacking)}: its Avg. is over the other AUs.")
        if r.pooled_note and study.folds:
            parts.append(f"{r.title}: no pooled figure ({r.pooled_note}).")
    parts.append(study.protocol)  # overrides, settings unlike the paper's, synthetic data
    parts.append("What these numbers can be compared with: docs/studies.md.")
    return " ".join(parts)


def value_intervals(study: LiteratureStudy, metric: str) -> str | None:
    """Without folds: the Avg. interval over test subjects of each run, said under its table."""
    items = [f"{r.title} {_pct(c.ci95[0])}-{_pct(c.ci95[1])}" for r in study.rows if r.state == "done"
             for c in [(r.cells.get(metric) or {}).get(AVG)] if c and c.ci95]
    return f"95 % intervals of Avg. over test subjects: {'; '.join(items)}." if items else None


def not_done(study: LiteratureStudy) -> list[str]:
    return [f"{r.name}: {r.state}" + (f" ({r.detail})" if r.detail else "") for r in study.rows if r.state != "done"]


def render_markdown(studies: list[LiteratureStudy]) -> str:
    out = ["# aubench report (the literature's layout)", ""]
    for study in studies:
        out += [f"## {study.title}", "", caption(study), ""]
        for metric, kind, title in tables(study):
            header, rows = table_cells(study, metric, kind, "md")
            out += [f"### {title}", "", "| " + " | ".join(header) + " |",
                    "|---|" + "---:|" * (len(header) - 1)]
            out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in rows]
            out.append("")
            note = value_intervals(study, metric) if kind == "value" else None
            if note:
                out += [note, ""]
        missing = not_done(study)
        if missing:
            out += ["Runs not done:", ""] + [f"- {m}" for m in missing] + [""]
    return "\n".join(out)


def render_tex(studies: list[LiteratureStudy]) -> str:
    """One booktabs ``table`` per metric and figure; needs ``\\usepackage{booktabs}``."""
    out = ["% aubench report in the literature's layout; needs \\usepackage{booktabs}", ""]
    for study in studies:
        out += [f"% {tex_escape(study.title)}: {tex_escape(caption(study).replace('`', ''))}", ""]
        for metric, kind, title in tables(study):
            header, rows = table_cells(study, metric, kind, "tex")
            out += ["\\begin{table}[t]", "\\centering", "\\small",
                    f"\\caption{{{tex_escape(study.title)}: {tex_escape(title)}}}",
                    "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
                    " & ".join(tex_escape(h) for h in header) + " \\\\", "\\midrule"]
            out += [" & ".join([tex_escape(line[0])] + line[1:]) + " \\\\" for line in rows]
            out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(out)


def render_csv(studies: list[LiteratureStudy]) -> str:
    """One row per study, run, metric and AU (Avg. included), every figure of the tables and each fold's."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "run", "title", "state", "folds", "seeds", "metric", "au", "mean", "sd_over_folds",
                     "pooled", "pooled_sd_over_seeds", "pooled_ci95_low", "pooled_ci95_high", "per_fold"])
    for study in studies:
        for row in study.rows:
            for metric in METRICS:
                for au, cell in (row.cells.get(metric) or {}).items():
                    ci = cell.ci95 or [None, None]
                    writer.writerow([study.name, row.name, row.title, row.state, study.folds or "", study.seeds or "",
                                     metric, au, _csv(cell.mean), _csv(cell.sd), _csv(cell.pooled),
                                     _csv(cell.pooled_sd), _csv(ci[0]), _csv(ci[1]),
                                     " ".join(_csv(v) for v in cell.folds) if study.folds else ""])
            if row.state != "done":
                writer.writerow([study.name, row.name, row.title, row.state, study.folds or "", study.seeds or "",
                                 "", "", "", "", "", "", "", "", ""])
    return buffer.getvalue()


def _csv(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.2f}"


def as_json(study: LiteratureStudy) -> dict[str, Any]:
    """The study's figures as fractions, for ``report --json``."""
    return {"name": study.name, "folds": study.folds, "seeds": study.seeds, "aus": study.aus(),
            "runs": {r.name: {"state": r.state, "subjects": r.subjects, "method": r.method,
                              "pooled_note": r.pooled_note,
                              "metrics": {m: {au: vars(c) for au, c in cells.items()} for m, cells in r.cells.items()}}
                     for r in study.rows}}


def read(folder: Path, aus: list[str] | None = None) -> list[LiteratureStudy]:
    """The study (or studies) in ``folder``, in the order ``report.collect`` reports them; ``aus``: only those
    AUs, in that order (a run lacking one of them gets its Avg. over the others it has, and says so)."""
    out = []
    for study in collect(folder):
        out.append(load(study.dir, json.loads((study.dir / "study.json").read_text()), aus))
    return out


def literature_report(folder: str | Path, fmt: str = "md", out: str | Path | None = None,
                      aus: list[str] | None = None, rope: float | None = None,
                      pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """``report.write_report`` in the literature's layout (md, tex or csv): methods as rows, AUs as columns, Avg. last."""
    from aubench_cli.studies import rankings as rankmod

    renderers = {"md": render_markdown, "tex": render_tex, "csv": render_csv}
    if fmt not in renderers:
        raise UsageError(f"--layout literature writes md, tex or csv, not {fmt}", "e.g. --format tex")
    studies = read(Path(folder), aus)
    text = renderers[fmt](studies)
    to_stdout = str(out) == "-"
    path = Path(folder) / f"report-literature.{fmt}" if out is None or to_stdout else Path(out)
    ranked = rankmod.for_report([(s.name, s.dir) for s in studies], pairs=pairs or [],
                                rope=rankmod.ranking.DEFAULT_ROPE if rope is None else rope)
    text = rankmod.into_report(text, fmt, ranked)
    if not to_stdout:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        if fmt == "csv":
            atomic_write_text(rankmod.csv_path(path), rankmod.render_csv(ranked))
    return {"report": None if to_stdout else str(path), "text": text if to_stdout else None, "figures": [],
            "rankings": ranked,
            "studies": [{"name": s.name, "dir": str(s.dir), "runs": {r.name: r.state for r in s.rows},
                         "literature": as_json(s)} for s in studies]}
