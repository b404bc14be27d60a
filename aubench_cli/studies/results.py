"""What a study's runs produced, read back: one run's result (``RunResult``: state, test accuracy, per-AU
figures, the per-subject counts), the mean over its seeds or folds, the folders of a study's units
(``unit_grid``), the folds' counts pooled per subject (``pooled_counts``), and a LaTeX escape.

The bottom of the reporting modules: report.py, rankings.py and literature.py all read runs through it, and it
imports none of them (so the report can use the rankings and the rankings never reach back into the report).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from aubench_cli.studies.study import STATUS_DIR


FOLD_DIR = "fold"  # a k-fold study's runs: DIR/<run>/fold<i>/


@dataclass
class RunResult:
    name: str
    title: str
    state: str  # done | unfinished | not evaluated | failed | missing
    detail: str = ""
    arch: str | None = None
    x: float | None = None
    mean: float | None = None  # fraction
    mean_ci: list[float] | None = None  # of the balanced accuracy
    balanced: float | None = None  # mean balanced accuracy over every labelled test frame
    ci_note: str = ""
    subject_counts: dict[str, Any] | None = None
    digest: dict[str, Any] | None = None
    per_au: dict[str, dict[str, Any]] = field(default_factory=dict)
    paper: dict[str, Any] = field(default_factory=dict)
    eval_batches: int | None = None
    # with --seeds: one result per training seed; mean/per_au then hold the mean over the seeds
    seeds: list[RunResult] = field(default_factory=list)
    mean_sd: float | None = None
    spread_over: str = "seeds"  # what ``seeds`` holds: the training seeds, or the folds of a k-fold study
    subset: dict[str, Any] | None = None  # data.json's Section V subset (realised frames where the budget was not met)
    config: dict[str, Any] | None = None  # the run's config.yaml (the first seed's or fold's)

    @property
    def label(self) -> str:
        return self.title if self.state == "done" else f"{self.title} ({self.state})"

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def seed_values(self, au: str) -> list[float]:
        """Each done seed's accuracy on ``au`` (``AVG``: the mean over AUs), as fractions."""
        if au == "AVG":
            return [r.mean for r in self.seeds if r.mean is not None]
        return [r.per_au[au]["accuracy"] for r in self.seeds if au in r.per_au]


@dataclass
class StudyResults:
    name: str
    dir: Path
    meta: dict[str, Any]
    record: dict[str, Any]
    runs: list[RunResult]

    @property
    def title(self) -> str:
        return str(self.meta.get("title") or self.name)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind") or "table")

    def aus(self) -> list[str]:
        """Our AUs in evaluation order, then the paper's AUs we have no result for (never dropped)."""
        ours: list[str] = []
        for run in self.runs:
            for au in run.per_au:
                if au not in ours:
                    ours.append(au)
        for run in self.runs:
            for au in (run.paper.get("accuracy") or {}):
                if au != "AVG" and au not in ours:
                    ours.append(au)
        return ours

    def has_paper(self) -> bool:
        return any(run.paper.get("accuracy") for run in self.runs)

    def has_costs(self) -> bool:
        return bool(self.meta.get("costs")) or len({r.arch for r in self.runs if r.arch}) > 1


def _last_epoch(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return int(float(rows[-1]["epoch"])) if rows else 0


def _read_run(run_dir: Path, status_path: Path, entry: dict[str, Any]) -> RunResult:
    name = entry["name"]
    run = RunResult(name, str(entry.get("title") or name), "missing", x=entry.get("x"), paper=entry.get("paper") or {})
    status = json.loads(status_path.read_text()) if status_path.is_file() else {}
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    if config:
        run.arch = config["model"]["arch"]
        run.config = config
    else:
        run.arch = (entry.get("set") or {}).get("model.arch") or None
    eval_path = run_dir / "eval.json"
    if config is None:
        if status.get("state") == "failed":
            run.state, run.detail = "failed", status.get("error", "")
        else:
            run.detail = "not trained"
        return run
    done_epochs, epochs = _last_epoch(run_dir / "metrics.csv"), int(config["train"]["epochs"])
    if done_epochs < epochs or not (run_dir / "best.pt").is_file():
        failed = status.get("state") == "failed"
        run.state = "failed" if failed else "unfinished"
        run.detail = f"{done_epochs}/{epochs} epochs" + (f"; {status.get('error', '')}" if failed else "")
        return run
    if not eval_path.is_file():
        failed = status.get("state") == "failed"
        run.state = "failed" if failed else "not evaluated"
        run.detail = status.get("error", "") if failed else "trained; run aubench study again to evaluate it"
        return run
    result = json.loads(eval_path.read_text())
    try:
        run.subset = json.loads((run_dir / "data.json").read_text()).get("subset")
    except (OSError, ValueError, AttributeError):
        run.subset = None
    run.state = "done"
    run.detail = f"epoch {result.get('epoch')} checkpoint, {result.get('batches')} test batches"
    run.arch = result.get("arch", run.arch)
    run.mean, run.mean_ci = result["mean_accuracy"], result.get("mean_ci95")
    run.balanced, run.ci_note = result.get("balanced_accuracy"), result.get("ci_note", "")
    run.subject_counts, run.digest = result.get("subject_counts"), result.get("digest")
    run.per_au = result["per_au"]
    run.eval_batches = result.get("batches")
    return run


def _sd(values: list[float]) -> float | None:
    import statistics

    return statistics.stdev(values) if len(values) > 1 else None


def run_result(study_dir: Path, entry: dict[str, Any], seeds: int | None = None,
               folds: int | None = None) -> RunResult:
    """A run's result; with ``seeds``, the mean over its seeds (done only when every seed is), each seed kept;
    with ``folds`` (``DIR/<run>/fold<i>/[seed<k>/]``), the mean over the folds of each fold's (seed-averaged)
    result, each fold kept (the literature layout pools them too: studies/literature.py)."""
    name = entry["name"]
    if folds:
        return _combine(entry, [_seeded(study_dir, study_dir / name / f"fold{i}", f"{name}.fold{i}", entry, seeds)
                                for i in range(folds)], "folds")
    return _seeded(study_dir, study_dir / name, name, entry, seeds)


def _seeded(study_dir: Path, run_dir: Path, key: str, entry: dict[str, Any], seeds: int | None) -> RunResult:
    if not seeds:
        return _read_run(run_dir, study_dir / STATUS_DIR / f"{key}.json", entry)
    return _combine(entry, [_read_run(run_dir / f"seed{k}", study_dir / STATUS_DIR / f"{key}.seed{k}.json", entry)
                            for k in range(seeds)], "seeds")


def _combine(entry: dict[str, Any], parts: list[RunResult], over: str) -> RunResult:
    """The mean (and sd) of ``parts``, the run's seeds or folds, kept in ``seeds``; done when every part is."""
    done = [r for r in parts if r.state == "done"]
    first = parts[0]
    run = RunResult(entry["name"], first.title, "done", x=first.x, paper=first.paper, seeds=parts,
                    arch=next((r.arch for r in parts if r.arch), None), spread_over=over,
                    config=next((r.config for r in parts if r.config), None))
    if len(done) < len(parts):
        worst = next(r for r in parts if r.state != "done")
        run.state = worst.state
        run.detail = f"{len(done)} of {len(parts)} {over} done" + (f"; {worst.detail}" if worst.detail else "")
        return run
    run.mean = sum(r.mean for r in done) / len(done)
    run.mean_sd = _sd([r.mean for r in done])
    balanced = [r.balanced for r in done if r.balanced is not None]
    run.balanced = sum(balanced) / len(balanced) if len(balanced) == len(done) else None
    run.ci_note = done[0].ci_note
    aus = [au for au in done[0].per_au if all(au in r.per_au for r in done)]
    for au in aus:
        values = [r.per_au[au]["accuracy"] for r in done]
        bal = [r.per_au[au].get("balanced_accuracy") for r in done]
        run.per_au[au] = {"accuracy": sum(values) / len(values), "accuracy_sd": _sd(values), over: len(values),
                          "balanced_accuracy": None if None in bal else sum(bal) / len(bal)}
    run.eval_batches = done[0].eval_batches
    run.detail = f"mean of {len(done)} {over}"
    return run


def fold_count(study_dir: Path, record: dict[str, Any]) -> int | None:
    """``study.json``'s ``folds`` (K, or a record with ``k``), else the number of ``fold<i>`` folders under the
    runs; None without folds."""
    folds = record.get("folds")
    if folds:
        return int(folds["k"] if isinstance(folds, dict) else folds)
    found = {int(p.name[len(FOLD_DIR):]) for entry in record.get("runs", [])
             for p in (study_dir / entry["name"]).glob(f"{FOLD_DIR}*")
             if p.is_dir() and p.name[len(FOLD_DIR):].isdigit()}
    return max(found) + 1 if found else None


def unit_grid(study_dir: Path, name: str, folds: int | None, seeds: int | None) -> list[list[tuple[Path, Path]]]:
    """``[fold][seed]`` -> (the unit's directory, its status file), one level each only when used."""
    grid = []
    for i in range(folds) if folds else [None]:
        line = []
        for k in range(seeds) if seeds else [None]:
            path, key = study_dir / name, name
            if i is not None:
                path, key = path / f"{FOLD_DIR}{i}", f"{key}.{FOLD_DIR}{i}"
            if k is not None:
                path, key = path / f"seed{k}", f"{key}.seed{k}"
            line.append((path, study_dir / STATUS_DIR / f"{key}.json"))
        grid.append(line)
    return grid


def pooled_counts(units: list[list[Any]], aus: list[str]) -> tuple[np.ndarray | None, list[str], str]:
    """Per seed, the per-subject counts of all folds concatenated ``(S, C, len(aus), 4)`` (subjects sorted by
    name), their names, and why not (empty when fine): each subject must be tested in one fold only, every seed
    on the same subjects, and every fold on one cache."""
    flat = [u for line in units for u in line]
    if any(not u.subject_counts for u in flat):
        return None, [], "an evaluation without per-subject counts (evaluated before they were recorded)"
    caches = {(u.digest or {}).get("cache") for u in flat}
    if len(caches) > 1:
        return None, [], "the folds were tested on different caches"
    per_seed, names = [], None
    for k in range(len(units[0])):
        rows: dict[str, np.ndarray] = {}
        for line in units:
            sc = line[k].subject_counts
            counts = np.asarray(sc["counts"])[:, [sc["au_names"].index(au) for au in aus]]
            for subject, row in zip(sc["subjects"], counts):
                if subject in rows:
                    return None, [], f"subject {subject} is tested in more than one fold"
                rows[subject] = row
        if names is None:
            names = sorted(rows)
        elif sorted(rows) != names:
            return None, [], "the seeds were tested on different subjects"
        per_seed.append(np.stack([rows[s] for s in names]))
    return np.stack(per_seed).astype(np.int64), names or [], ""


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$"}


def tex_escape(text: str) -> str:
    """Plain text made safe for LaTeX (``_``, ``%``, ``&``, ``#``, ``$``, braces, ``~``, ``^``, backslash)."""
    return "".join(_TEX.get(ch, ch) for ch in text)
