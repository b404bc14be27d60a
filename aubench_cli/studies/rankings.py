"""Which run of a study to choose: its rankings with their uncertainty, the critical-difference groups, practical
equivalence and, with ``--fold-seeds``, the fold-assignment noise floor; the sections ``aubench report`` adds.

``study_inputs`` reads, for every run of a study directory, the per-subject counts of each evaluation (eval.json's
``subject_counts``) as one array ``(A, S, C, K, 4)``: A fold assignments (``DIR/<run>/foldseed<r>/``, 1 without
``--fold-seeds``), S training seeds, C test subjects (with folds: every fold's test subjects concatenated, each
tested once per assignment, as ``literature.pooled_counts`` pools them), K the AUs every run was tested on. A run
that is not done, or that was tested on other subjects, is left out of the ranking and named.
``evaluation.ranking`` does the statistics; ``noise_floor`` the spread due to the assignment beside the spread
due to training seeds, and how often the best run changes; ``studies/rankfig.py`` the figures. The sections are
rendered here for Markdown, HTML, LaTeX and CSV (a ``*-rankings.csv`` beside a CSV report, whose columns are
fixed), so ``report.py`` and ``literature.py`` only call them.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aubench_cli.errors import plural
from aubench_cli.evaluation import ranking, stats
from aubench_cli.studies.results import _read_run, fold_count, pooled_counts, tex_escape, unit_grid
from aubench_cli.studies.study import FOLD_SEED_DIR, STUDY_FILE

NOISE_METRICS = {"balanced_accuracy": "balanced accuracy", "f1": "F1"}


@dataclass
class Inputs:
    names: list[str]
    titles: dict[str, str]
    counts: dict[str, np.ndarray]  # run -> (A, S, C, K, 4)
    aus: list[str]
    subjects: list[str]
    left_out: dict[str, str] = field(default_factory=dict)  # run -> why it is not ranked
    folds: int | None = None
    seeds: int | None = None
    fold_seeds: int | None = None


def _assignment_root(study_dir: Path, name: str, r: int) -> Path:
    return study_dir / name / f"{FOLD_SEED_DIR}{r}" if r else study_dir / name


def _units(study_dir: Path, entry: dict[str, Any], folds: int | None, seeds: int | None, r: int) -> list[list[Any]]:
    """``[fold][seed]`` evaluations of one run on assignment ``r`` (``results._read_run``)."""

    name = entry["name"]
    grid = unit_grid(study_dir, name, folds, seeds)
    if r:  # the same grid under foldseed<r>/, status keys run.foldseed<r>.fold<i>[.seed<k>]
        root, prefix = _assignment_root(study_dir, name, r), f"{name}.{FOLD_SEED_DIR}{r}"
        grid = [[(root / path.relative_to(study_dir / name), status.with_name(prefix + status.name[len(name):]))
                 for path, status in line] for line in grid]
    return [[_read_run(path, status, entry) for path, status in line] for line in grid]


def study_inputs(study_dir: Path, record: dict[str, Any]) -> Inputs:
    """Every run's counts ``(A, S, C, K, 4)`` on the AUs all runs share (module docstring)."""

    folds, seeds = fold_count(study_dir, record), record.get("seeds")
    fold_seeds = record.get("fold_seeds") if folds else None
    entries = record.get("runs", [])
    titles = {e["name"]: str(e.get("title") or e["name"]) for e in entries}
    left_out: dict[str, str] = {}
    read: dict[str, list[list[list[Any]]]] = {}
    for entry in entries:
        grids = [_units(study_dir, entry, folds, seeds, r) for r in range(fold_seeds or 1)]
        flat = [u for g in grids for line in g for u in line]
        bad = next((u for u in flat if u.state != "done"), None)
        if bad is not None:
            left_out[entry["name"]] = f"{bad.state}" + (f" ({bad.detail})" if bad.detail else "")
        elif any(not u.subject_counts for u in flat):
            left_out[entry["name"]] = "evaluated before per-subject counts were recorded"
        else:
            read[entry["name"]] = grids
    aus: list[str] = []
    if read:
        first = next(iter(read.values()))[0][0][0].subject_counts["au_names"]
        aus = [au for au in first if all(au in u.subject_counts["au_names"]
                                         for g in read.values() for grid in g for line in grid for u in line)]
    counts: dict[str, np.ndarray] = {}
    subjects: list[str] = []
    for name, grids in read.items():
        per_assignment, names_seen, why = [], None, ""
        for grid in grids:
            c, subj, why = pooled_counts(grid, aus)
            if c is None:
                break
            if names_seen is not None and subj != names_seen:
                why = "its fold assignments test different subjects"
                break
            names_seen = subj
            per_assignment.append(c)
        if why or names_seen is None:
            left_out[name] = why or "no counts"
            continue
        if subjects and names_seen != subjects:
            left_out[name] = "tested on other subjects than the first ranked run"
            continue
        subjects = names_seen
        counts[name] = np.stack(per_assignment)
    names = [e["name"] for e in entries if e["name"] in counts]
    return Inputs(names, titles, counts, aus, subjects, left_out, folds, seeds, fold_seeds)


def noise_floor(inputs: Inputs) -> dict[str, Any] | None:
    """With several fold assignments: per run and metric (pooled over the folds, mean over AUs), the standard
    deviation over assignments (of the seed means) beside that over training seeds (the mean over assignments
    of each assignment's sd over seeds), and how often the best run changes with the assignment and the seed."""
    if not inputs.names or next(iter(inputs.counts.values())).shape[0] < 2:
        return None
    out: dict[str, Any] = {"assignments": next(iter(inputs.counts.values())).shape[0], "metrics": {}}
    for metric, label in NOISE_METRICS.items():
        values = {n: stats.METRICS[metric](c.sum(axis=2)).mean(axis=-1) for n, c in inputs.counts.items()}  # (A, S)
        runs = {}
        for n, v in values.items():
            by_assignment = v.mean(axis=1)
            runs[n] = {"mean": float(v.mean()), "sd_assignment": float(by_assignment.std(ddof=1)),
                       "range_assignment": float(by_assignment.max() - by_assignment.min()),
                       "sd_seed": float(v.std(axis=1, ddof=1).mean()) if v.shape[1] > 1 else None,
                       "per_assignment": [float(x) for x in by_assignment]}
        names = list(values)
        overall = names[int(np.argmax([runs[n]["mean"] for n in names]))]
        per_a = [names[int(np.argmax([values[n][r].mean() for n in names]))] for r in range(out["assignments"])]
        s_min = min(v.shape[1] for v in values.values())
        per_s = [names[int(np.argmax([values[n][:, k].mean() for n in names]))] for k in range(s_min)]
        per_as = [names[int(np.argmax([values[n][r, k] for n in names]))]
                  for r in range(out["assignments"]) for k in range(s_min)]
        out["metrics"][metric] = {
            "label": label, "runs": runs, "best": overall,
            "best_per_assignment": per_a, "best_changes_with_assignment": float(np.mean([b != overall for b in per_a])),
            "best_per_seed": per_s if s_min > 1 else None,
            "best_changes_with_seed": float(np.mean([b != overall for b in per_s])) if s_min > 1 else None,
            "best_changes_with_assignment_and_seed": float(np.mean([b != overall for b in per_as])),
            "median_sd_assignment": float(np.median([r["sd_assignment"] for r in runs.values()])),
            "median_sd_seed": (float(np.median([r["sd_seed"] for r in runs.values()]))
                               if all(r["sd_seed"] is not None for r in runs.values()) else None),
        }
    return out


def study_rankings(study_dir: Path, record: dict[str, Any] | None = None, *, rope: float = ranking.DEFAULT_ROPE,
                   pairs: list[tuple[str, str]] | tuple = (), seed: int = 0) -> dict[str, Any]:
    """The ranking of a study's runs (``evaluation.ranking.rankings``) and its noise floor; ``ranking`` is None
    with a ``note`` saying why when fewer than two runs can be ranked."""
    if record is None:
        record = json.loads((study_dir / STUDY_FILE).read_text())
    inputs = study_inputs(study_dir, record)
    out: dict[str, Any] = {"ranked": inputs.names, "left_out": inputs.left_out, "aus": inputs.aus,
                           "subjects": len(inputs.subjects), "folds": inputs.folds, "seeds": inputs.seeds,
                           "fold_seeds": inputs.fold_seeds, "titles": inputs.titles, "ranking": None, "note": ""}
    if len(inputs.names) < 2:
        out["note"] = f"{len(inputs.names)} run(s) can be ranked (at least 2 are needed)"
        return out
    pairs = [p for p in pairs if p[0] in inputs.names and p[1] in inputs.names]  # other studies' pairs ignored
    baseline = next((n for n in inputs.names if n == "baseline"), None)
    out["ranking"] = ranking.public(ranking.rankings([inputs.counts[n] for n in inputs.names], inputs.names,
                                                     rope=rope, pairs=pairs, seed=seed, baseline=baseline))
    out["noise_floor"] = noise_floor(inputs)
    return out


def check_pairs(results: dict[str, dict[str, Any]], pairs: list[tuple[str, str]]) -> None:
    """Every ``--pair`` name must be a ranked run of some study: a UsageError naming the close matches."""
    from aubench_cli.errors import UsageError, suggest

    known = sorted({n for r in results.values() for n in r["ranked"]})
    for a, b in pairs:
        for name in (a, b):
            if name not in known:
                raise UsageError(f"--pair names {name!r}, which is not a ranked run of the report",
                                 suggest(name, known) if known else "evaluate the runs first")


# ----------------------------------------------------------------------------------------------------------------
# text


def summary_paragraph(name: str, result: dict[str, Any]) -> str:
    """The plain paragraph that opens a study's part of the report."""
    r = result.get("ranking")
    if r is None:
        return f"{name}: no ranking ({result['note']})."
    text = f"{name}: {r['summary']}"
    nf = result.get("noise_floor")
    if nf:
        m = nf["metrics"]["balanced_accuracy"]
        text += (f" Over {nf['assignments']} fold assignments the best run changes in "
                 f"{100 * m['best_changes_with_assignment']:.0f} % of them; the assignment moves a run's balanced "
                 f"accuracy by a median sd of {100 * m['median_sd_assignment']:.1f} points"
                 + (f" (training seeds: {100 * m['median_sd_seed']:.1f})" if m["median_sd_seed"] is not None else "")
                 + ".")
    if result["left_out"]:
        text += " Not ranked: " + ", ".join(f"{n} ({why})" for n, why in result["left_out"].items()) + "."
    return text


def _rank_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    r = result["ranking"]
    cd = r["critical_difference"]
    group = {n: ", ".join(str(i + 1) for i, g in enumerate(cd["groups"]) if n in g) for n in result["ranked"]}
    header = ["Run", "Balanced (%)", "Mean rank", "95 % rank interval", "P(best)", "CD group(s)", "Friedman mean rank"]
    rows = []
    for x in sorted(r["runs"], key=_by_rank):
        ci = x["rank_ci95"]
        rows.append([x["run"], _pct(x["value"]), _f2(x["mean_rank"]), "-" if not ci else f"{ci[0]:g}-{ci[1]:g}",
                     _f2(x["p_best"]), group[x["run"]] or "-", _f2(cd["mean_ranks"].get(x["run"]))])
    return header, rows


def _better_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    r = result["ranking"]
    names = [x["run"] for x in r["runs"]]
    header = ["P(row better than column)"] + names
    rows = [[a] + ["-" if v is None else f"{v:.2f}" for v in r["p_better"][i]] for i, a in enumerate(names)]
    return header, rows


def _rope_lines(result: dict[str, Any]) -> list[str]:
    r = result["ranking"]
    out = []
    for c in r["rope_comparisons"]:
        if c["p_a"] is None:
            continue
        diff = "-" if c["diff"] is None else f"{100 * c['diff']:+.2f}"
        out.append(f"{c['a']} vs {c['b']} (difference {diff} points; ROPE ±{ranking.rope_points(c['rope'])}; "
                   f"Bayesian signed-rank test over {c['subjects']} subjects): P({c['a']} better) "
                   f"{c['p_a']:.3f}, P(practically equivalent) {c['p_equivalent']:.3f}, P({c['b']} better) "
                   f"{c['p_b']:.3f}: {c['verdict']}.")
    return out


def _method_line(result: dict[str, Any]) -> str:
    r = result["ranking"]
    cd = r["critical_difference"]
    levels = f"{plural(r['subjects'], 'test subject')} resampled together for every run"
    if max(r["seeds"]) > 1:
        levels += f", each run's {max(r['seeds'])} training seeds resampled"
    if r["assignments"] > 1:
        levels += f", {r['assignments']} fold assignments resampled (shared by every run)"
    cd_text = (f"Critical difference: Friedman test over the subjects as blocks ({cd['note']}"
               + (f"; CD = {cd['cd']:.2f} mean ranks" if cd.get("cd") else "") + "); runs sharing a group cannot "
               "be told apart. ")
    resampling = (f"{r['resamples']} paired resamples ({levels}); rank 1 is best, the interval holds 95 % of a run's "
                  "ranks" if r.get("resampled", True) else
                  f"no resampling ({plural(r['subjects'], 'test subject')}, one training seed, one test split: every "
                  "resample would be the data itself), so ranks on the data alone, with no interval or P(best)")
    return (f"Rankings on the mean balanced accuracy over {len(result['aus'])} AUs: {resampling}. {cd_text}"
            f"Tests by {cd['library']}. How to read them: docs/studies.md.")


def _noise_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    nf = result.get("noise_floor")
    if not nf:
        return None
    header = ["Run"]
    for m in nf["metrics"].values():
        header += [f"{m['label']} (%)", f"sd over assignments", "range over assignments", "sd over seeds"]
    rows = []
    for name in result["ranked"]:
        row = [name]
        for m in nf["metrics"].values():
            x = m["runs"][name]
            row += [f"{100 * x['mean']:.1f}", f"{100 * x['sd_assignment']:.2f}", f"{100 * x['range_assignment']:.2f}",
                    "-" if x["sd_seed"] is None else f"{100 * x['sd_seed']:.2f}"]
        rows.append(row)
    return header, rows


def _noise_text(result: dict[str, Any]) -> str:
    nf = result["noise_floor"]
    parts = []
    for m in nf["metrics"].values():
        part = (f"{m['label']}: best on average {m['best']}; best per assignment "
                f"{', '.join(m['best_per_assignment'])} (changes in {100 * m['best_changes_with_assignment']:.0f} % "
                "of the assignments")
        if m["best_changes_with_seed"] is not None:
            part += f", in {100 * m['best_changes_with_seed']:.0f} % of the training seeds"
        part += f", in {100 * m['best_changes_with_assignment_and_seed']:.0f} % of single trainings)"
        parts.append(part)
    return (f"Fold-assignment noise floor ({nf['assignments']} assignments of subjects to folds, pooled over the "
            "folds; the spread due to which subjects share a fold, beside that due to training seeds): "
            + "; ".join(parts) + ".")


def _f2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _by_rank(x: dict[str, Any]) -> float:
    """Sort key: the mean rank, runs without one (no valid resample) last."""
    return float("inf") if x["mean_rank"] is None else x["mean_rank"]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows] + [""])


def markdown_section(name: str, result: dict[str, Any], figures: list[str]) -> list[str]:
    """A study's ranking section in Markdown (``figures``: paths relative to the report)."""
    out = [f"**{name}.**", ""]  # not a heading: the report's ### headings are its tables
    if result["ranking"] is None:
        return out + [f"No ranking: {result['note']}.", ""]
    out += [_method_line(result), ""] + _md_table(*_rank_rows(result))
    if result["ranking"].get("resampled", True):  # unresampled: every P(better) would be blank
        out += _md_table(*_better_rows(result))
    out += [line for c in _rope_lines(result) for line in (c, "")]
    noise = _noise_rows(result)
    if noise:
        out += [_noise_text(result), ""] + _md_table(*noise)
    out += [f"![{Path(f).stem}]({f})\n" for f in figures]
    return out


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def html_section(name: str, result: dict[str, Any], figures: list[str]) -> str:
    out = [f"<h3>{html.escape(name)}</h3>"]
    if result["ranking"] is None:
        return out[0] + f"<p>No ranking: {html.escape(result['note'])}.</p>"
    out += [f"<p>{html.escape(_method_line(result))}</p>", _html_table(*_rank_rows(result))]
    if result["ranking"].get("resampled", True):
        out.append(_html_table(*_better_rows(result)))
    out += [f"<p>{html.escape(line)}</p>" for line in _rope_lines(result)]
    noise = _noise_rows(result)
    if noise:
        out += [f"<p>{html.escape(_noise_text(result))}</p>", _html_table(*noise)]
    out += [f"<p><img src='{html.escape(f)}' alt='{html.escape(Path(f).stem)}'></p>" for f in figures]
    return "\n".join(out)


def tex_section(name: str, result: dict[str, Any]) -> list[str]:
    """The rank table (booktabs) and the noise floor, with the rest as LaTeX comments."""

    if result["ranking"] is None:
        return [f"% {tex_escape(name)}: no ranking ({tex_escape(result['note'])})", ""]
    out = [f"% {tex_escape(line)}" for line in [_method_line(result)] + _rope_lines(result)]
    tables = [(_rank_rows(result), f"{name}: rankings with their uncertainty")]
    noise = _noise_rows(result)
    if noise:
        tables.append((noise, f"{name}: fold-assignment noise floor"))
        out.append(f"% {tex_escape(_noise_text(result))}")
    for (header, rows), title in tables:
        out += ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{tex_escape(title)}}}",
                "\\begin{tabular}{l" + "r" * (len(header) - 1) + "}", "\\toprule",
                " & ".join(tex_escape(h) for h in header) + " \\\\", "\\midrule"]
        out += [" & ".join(tex_escape(c) for c in row) + " \\\\" for row in rows]
        out += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return out


def render_csv(results: dict[str, dict[str, Any]]) -> str:
    """One row per study and ranked run: its figure, mean rank, rank interval, P(best), CD groups, P(better than
    each other run), and with fold seeds its spread over assignments and seeds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["study", "run", "balanced_accuracy", "mean_rank", "rank_ci95_low", "rank_ci95_high", "p_best",
                     "cd_groups", "friedman_mean_rank", "friedman_p", "p_better_than", "sd_over_assignments",
                     "sd_over_seeds", "best_changes_with_assignment"])
    for study, result in results.items():
        r = result.get("ranking")
        if r is None:
            continue
        cd = r["critical_difference"]
        names = [x["run"] for x in r["runs"]]
        nf = (result.get("noise_floor") or {}).get("metrics", {}).get("balanced_accuracy")
        for i, x in enumerate(r["runs"]):
            groups = " ".join(str(g + 1) for g, members in enumerate(cd["groups"]) if x["run"] in members)
            better = " ".join(f"{n}={v:.3f}" for n, v in zip(names, r["p_better"][i]) if v is not None)
            noise = nf["runs"][x["run"]] if nf else {}
            ci = x["rank_ci95"] or ["", ""]
            writer.writerow([study, x["run"], _csv(x["value"], 100, 2), _csv(x["mean_rank"], 1, 3), ci[0], ci[1],
                             _csv(x["p_best"], 1, 3), groups, _f2(cd["mean_ranks"].get(x["run"])),
                             "" if cd.get("p_value") is None else f"{cd['p_value']:.3g}", better,
                             "" if not noise else f"{100 * noise['sd_assignment']:.2f}",
                             "" if not noise or noise["sd_seed"] is None else f"{100 * noise['sd_seed']:.2f}",
                             "" if not nf else f"{nf['best_changes_with_assignment']:.2f}"])
    return buffer.getvalue()


def open_with_summary(text: str, fmt: str, paragraphs: list[str]) -> str:
    """``text`` with the plain summary inserted after its first heading (md, html) or first comment (tex)."""
    if not paragraphs:
        return text
    if fmt == "md":
        lines = text.split("\n")
        at = next((i for i, line in enumerate(lines) if line.startswith("# ")), -1) + 1
        block = ["", "**Summary.** " + " ".join(paragraphs), ""]
        return "\n".join(lines[:at] + block + lines[at:])
    if fmt == "html":
        block = "<p><b>Summary.</b> " + html.escape(" ".join(paragraphs)) + "</p>"
        marker = "</h1>"
        return text.replace(marker, marker + "\n" + block, 1) if marker in text else block + text
    if fmt == "tex":

        lines = text.split("\n")
        return "\n".join(lines[:1] + [f"% Summary: {tex_escape(p)}" for p in paragraphs] + lines[1:])
    return text


def for_report(dirs: list[tuple[str, Path]], *, rope: float = ranking.DEFAULT_ROPE,
               pairs: list[tuple[str, str]] | tuple = ()) -> dict[str, dict[str, Any]]:
    """``study_rankings`` of each (name, directory); ``--pair`` names checked against what was ranked."""
    results = {name: study_rankings(d, rope=rope, pairs=list(pairs)) for name, d in dirs}
    check_pairs(results, list(pairs))
    return results


def add_figures(results: dict[str, dict[str, Any]], figures: dict[str, list[Path]], folder: Path) -> None:
    """Draw each ranked study's figures into ``folder`` and list them under the study in ``figures``."""
    from aubench_cli.studies import rankfig

    for name, result in results.items():
        figures.setdefault(name, []).extend(rankfig.make(name, result, folder))


def into_report(text: str, fmt: str, results: dict[str, dict[str, Any]]) -> str:
    """The report ``text`` (md, html or tex) opened by the plain summary and closed by each study's ranking
    section; CSV is left alone (``render_csv`` writes its own file)."""
    if fmt == "csv" or not results:
        return text
    text = open_with_summary(text, fmt, [summary_paragraph(n, r) for n, r in results.items()])
    if fmt == "md":
        part = ["## Which run to choose", ""] + [line for n, r in results.items() for line in markdown_section(n, r, [])]
        return text.rstrip("\n") + "\n\n" + "\n".join(part)
    if fmt == "html":
        part = "<h2>Which run to choose</h2>\n" + "\n".join(html_section(n, r, []) for n, r in results.items())
        return text.replace("</body>", part + "\n</body>", 1) if "</body>" in text else text + part
    if fmt == "tex":
        return (text.rstrip("\n") + "\n\n% Which run to choose\n\n"
                + "\n".join(line for n, r in results.items() for line in tex_section(n, r)))
    return text


def _csv(v: float | None, scale: float, decimals: int) -> str:
    return "" if v is None else f"{scale * v:.{decimals}f}"


def csv_path(report: Path) -> Path:
    """Where a CSV report's rankings go: ``report-rankings.csv`` beside ``report.csv``."""
    return report.with_name(f"{report.stem}-rankings.csv")
