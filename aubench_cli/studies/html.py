"""``aubench report DIR --format html``: one self-contained HTML file to send or attach, nothing beside it.

``render(studies, folder, figures)`` returns the page: per study its table in the paper's layout and in the
literature's (``report.study_table``, ``literature.table_cells``), the resolution of its test split and the paired
test of every pair of runs (``report.resolution``, Holm-adjusted over the study's pairs), the figures embedded as
``data:`` URIs (``report.make_figures`` draws them; this module only embeds the PNG bytes), each run's settings
with its cache's content identity, and how the numbers were obtained (protocol, batches, subjects, interval
methods). No script, font, stylesheet or image is fetched from anywhere: the styles are inline and use the
system's fonts, and the page prints sensibly (``@media print``: no navigation, tables and figures kept whole).
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from aubench_cli import __version__
from aubench_cli.evaluation import stats
from aubench_cli.studies import literature
from aubench_cli.studies.report import StudyResults, _caption, _not_done, _resolution_text, resolution, study_table

STYLE = """
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--head:#f3f5f7;--accent:#0b5cad}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
 margin:0 auto;padding:1.5rem 2rem 4rem;max-width:1180px}
h1{font-size:1.7rem;margin:.2rem 0 .3rem}h2{font-size:1.35rem;margin:2.4rem 0 .4rem;padding-top:.6rem;
 border-top:2px solid var(--line)}h3{font-size:1.05rem;margin:1.4rem 0 .4rem}h4{font-size:.95rem;margin:1rem 0 .3rem}
p,li{max-width:72em}.muted,.cap,figcaption{color:var(--muted);font-size:.9rem}.cap{margin-top:-.4rem}
nav{background:var(--head);border:1px solid var(--line);border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
nav ol{margin:.2rem 0;padding-left:1.3rem}a{color:var(--accent)}
.wrap{overflow-x:auto;margin:.4rem 0 .8rem}
table{border-collapse:collapse;font-size:.86rem;font-variant-numeric:tabular-nums}
th,td{border:1px solid var(--line);padding:3px 7px;text-align:right;white-space:nowrap;vertical-align:top}
th{background:var(--head);font-weight:600}td:first-child,th:first-child{text-align:left}
td.text{text-align:left;white-space:normal}
tr:nth-child(even) td{background:#fafbfc}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em;background:var(--head);
 padding:0 .25em;border-radius:3px}
.settings td{font-size:.8rem}
.shared{columns:17em 4;font-size:.82rem;padding-left:1.1rem;margin:.2rem 0}
.shared li{break-inside:avoid}
.note{border-left:3px solid var(--accent);padding:.2rem .8rem;background:#f6f9fc}
@media print{
 @page{margin:14mm}
 body{font-size:9.5pt;max-width:none;padding:0}
 nav{display:none}
 h2{break-before:page;border-top:none;margin-top:0}
 h3,h4{break-after:avoid}
 .wrap{overflow:visible}
 table{font-size:7.5pt}th,td{padding:1px 4px}
 table,figure,.note{break-inside:avoid}
 tr:nth-child(even) td{background:none}
 figure img{max-height:80vh;width:auto;border:none}
 a{color:inherit;text-decoration:none}
}
"""

# the sections of config.yaml that describe a run (eval's and profile's are command defaults)
RUN_SECTIONS = ("model", "data", "train", "augment")


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _bold(cell: str) -> str:
    """A cell marked for Markdown (``**x**``) or for HTML (``<b>x</b>``) as safe HTML with its bold kept."""
    text = _e(cell).replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)


def table(header: list[str], rows: list[list[str]], caption: str | None = None, css: str = "") -> str:
    """A table that scrolls sideways on a narrow screen; ``caption`` under it, as wide as the text."""
    out = [f"<div class='wrap'><table class='{css}'>"]
    out.append("<thead><tr>" + "".join(f"<th scope='col'>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{_bold(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    if caption:
        out.append(f"<p class='cap'>{_e(caption)}</p>")
    return "\n".join(out)


def embed_png(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f"<figure><img src='data:image/png;base64,{data}' alt='{_e(alt)}'>"
            f"<figcaption>{_e(alt)}</figcaption></figure>")


def _read(path: Path, kind: str) -> Any:
    try:
        text = path.read_text()
        return json.loads(text) if kind == "json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError):
        return None


def _flat(config: dict[str, Any] | None) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, values in (config or {}).items() for k, v in (values or {}).items()}


def _units(study: StudyResults) -> list[tuple[str, Path]]:
    """(name, directory) of every trained unit of the study: each run, and its folds and seeds."""
    folds = literature.fold_count(study.dir, study.record)
    seeds = study.record.get("seeds")
    out = []
    for entry in study.record.get("runs", []):
        for line in literature.unit_grid(study.dir, entry["name"], folds, seeds):
            for path, _ in line:
                out.append((str(path.relative_to(study.dir)), path))
    return out


def settings_section(study: StudyResults) -> str:
    """Each run's settings where runs differ, its cache identity, training data, best validation and test
    evaluation; then the settings every run shares."""
    units = []
    for name, path in _units(study):
        config = {k: v for k, v in _flat(_read(path / "config.yaml", "yaml")).items()
                  if k.split(".")[0] in RUN_SECTIONS and k != "data.cache"}  # paths: in the note above the table
        record = _read(path / "data.json", "json") or {}
        summary = _read(path / "summary.json", "json") or {}
        result = _read(path / "eval.json", "json") or {}
        units.append((name, config, record, summary, result))
    trained = [u for u in units if u[1]]
    if not trained:
        return "<p class='muted'>No run of this study has been trained yet.</p>"
    keys = sorted({k for u in trained for k in u[1]})
    varying = ["model.arch"] + [k for k in keys if k != "model.arch" and len({repr(u[1].get(k)) for u in trained}) > 1]
    shared = {k: trained[0][1].get(k) for k in keys if k not in varying}
    short = [k.split(".", 1)[1] for k in varying]
    header = ["run", *(short if len(set(short)) == len(short) else varying), "cache identity",
              "train frames / subjects", "best val (epoch)", "test evaluation"]
    rows = []
    for name, config, record, summary, result in units:
        if not config:
            rows.append([name, *["-"] * (len(header) - 1)])
            continue
        train_split = (record.get("splits") or {}).get("train") or {}
        best = summary.get("best_val_mean_accuracy")
        test = "-"
        if result:
            n = len(result.get("subjects") or [])
            test = (f"epoch {result.get('epoch')} ({result.get('checkpoint')}), {result.get('batches')} batches, "
                    f"{n} subject{'' if n == 1 else 's'}, {result.get('frames_in_split')} frames")
        identity = str(record.get("cache_identity") or "-")
        rows.append([name, *[_setting(config.get(k)) for k in varying], identity[:12],
                     f"{(record.get('subset') or {}).get('frames', train_split.get('frames', '-'))} / "
                     f"{train_split.get('subjects', '-')}",
                     "-" if best is None else f"{100 * best:.1f} ({summary.get('best_epoch')})", test])
    identities = {u[2].get("cache_identity") for u in trained if u[2].get("cache_identity")}
    caches = {str((u[2] or {}).get("cache") or "-") for u in trained}
    if not identities:
        note = "No run records its cache's content identity (no data.json)."
    elif len(identities) == 1:
        note = f"Every run read the same cache content (identity <code>{_e(next(iter(identities)))}</code>)."
    else:
        note = f"<b>The runs read {len(identities)} different cache contents</b>: compare them with care."
    out = [f"<p>{note} Cache path{'s' if len(caches) > 1 else ''}: "
           + ", ".join(f"<code>{_e(c)}</code>" for c in sorted(caches)) + ".</p>",
           table(header, rows, "Each run's settings where runs differ (config.yaml), its cache's content identity "
                 "and training data (data.json), its best validation accuracy in % (summary.json) and what its "
                 "test evaluation used (eval.json).", "settings")]
    if shared:
        out.append("<p>Settings every run shares:</p><ul class='shared'>"
                   + "".join(f"<li><code>{_e(k)}</code> {_e(_setting(v))}</li>" for k, v in shared.items())
                   + "</ul>")
    return "\n".join(out)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 else "s")


def _setting(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def tests_section(study: StudyResults) -> str:
    """The paired test of every pair of evaluated runs on the same test frames, Holm-adjusted over the pairs."""
    res = resolution(study)
    if res is None:
        return ("<p class='muted'>No paired test: fewer than two runs evaluated on the same test frames with "
                "per-subject counts.</p>")
    titles = {r.name: r.title for r in study.runs}
    pairs = res["pairs"]
    holm = stats.holm([p["p_value"] for p in pairs])
    rows = []
    for p, adjusted in zip(pairs, holm):
        ci = p["ci95"]
        rows.append([f"{titles.get(p['a'], p['a'])} − {titles.get(p['b'], p['b'])}", f"{100 * p['diff']:+.1f}",
                     "-" if not ci or None in ci else f"{100 * ci[0]:+.1f} to {100 * ci[1]:+.1f}",
                     f"{p['p_value']:.3g}", f"{adjusted:.3g}",
                     "-" if p["min_detectable_diff"] is None else f"{100 * p['min_detectable_diff']:.1f}",
                     str(p["subjects"]), p["method"]])
    header = ["pair (A − B)", "difference (points)", "95 % interval", "p", "p (Holm)", "smallest detectable",
              "subjects", "method"]
    caption = ("Difference in mean balanced accuracy over every labelled test frame, paired by test subject; p from "
               "the paired permutation test within subjects (two-sided), Holm-adjusted over this table's pairs; "
               "the smallest difference detectable with 80 % power at 5 %.")
    return table(header, rows, caption)


def literature_section(lit: literature.LiteratureStudy | None) -> str:
    if lit is None:
        return ""
    out = ["<h3>The literature's layout</h3>", f"<p class='muted'>{_e(literature.caption(lit).replace('`', ''))}</p>"]
    for metric, kind, title in literature.tables(lit):
        header, rows = literature.table_cells(lit, metric, kind, "md")
        note = literature.value_intervals(lit, metric) if kind == "value" else None
        out += [f"<h4>{_e(title)}</h4>", table(header, rows, note)]
    return "\n".join(out)


def method_section(studies: list[StudyResults]) -> str:
    """How the numbers were obtained: the protocol, read from the runs themselves."""
    items = []
    for study in studies:
        done = [r for r in study.runs if r.state == "done"]
        configs = [_flat(_read(path / "config.yaml", "yaml")) for _, path in _units(study)]
        configs = [c for c in configs if c]
        if not configs:
            continue
        c = configs[0]
        first = _read(next((p for _, p in _units(study) if (p / "eval.json").is_file()), study.dir) / "eval.json",
                      "json") or {}
        folds = literature.fold_count(study.dir, study.record)
        seeds = study.record.get("seeds")
        text = (f"<b>{_e(study.title)}</b>: each run trained for {_e(c.get('train.epochs'))} epochs of "
                f"{_e(c.get('train.batches_per_epoch'))} batches of {_e(c.get('train.pos_per_au'))} positive + "
                f"{_e(c.get('train.neg_per_au'))} negative frames per AU, validated on "
                f"{_e(c.get('train.val_batches'))} balanced batches after each epoch; the best validation "
                "checkpoint was tested")
        if first:
            text += (f" on {_e(first.get('batches'))} balanced test batches per AU (seed {_e(first.get('seed'))}) "
                     f"drawn from the {_e(first.get('split'))} split: {_count(len(first.get('subjects') or []), 'subject')}, "
                     f"{_e(first.get('frames_in_split'))} frames. Intervals: {_e(first.get('ci_note'))}.")
        else:
            text += "."
        if folds:
            text += f" Subject-exclusive {folds}-fold cross-validation: each fold tested on its own subjects."
        if seeds:
            text += f" {seeds} training seeds per run."
        text += f" {len(done)} of {len(study.runs)} runs done."
        items.append(f"<li>{text}</li>")
    return ("<ul>" + "".join(items) + "</ul>") if items else "<p class='muted'>No run trained yet.</p>"


def render(studies: list[StudyResults], folder: Path, figures: dict[str, list[Path]],
           lit: list[literature.LiteratureStudy]) -> str:
    """The whole page; ``figures`` as ``report.make_figures`` returns them (PNG files, read and embedded)."""
    lit_by_dir = {s.dir.resolve(): s for s in lit}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>",
           f"<title>aubench report: {_e(', '.join(s.name for s in studies))}</title>",
           f"<style>{STYLE}</style></head><body>",
           "<header><h1>aubench report</h1>",
           f"<p class='muted'>{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} under <code>{_e(folder)}</code>; "
           f"written {stamp} by aubench {_e(__version__)} (<code>aubench report {_e(folder)} --format html</code>). "
           "This file holds everything: tables, figures and settings; it fetches nothing. Training curves: "
           f"<code>tensorboard --logdir {_e(folder)}</code>.</p></header>",
           "<nav><b>Contents</b><ol>"]
    out += [f"<li><a href='#{_e(s.name)}'>{_e(s.title)}</a></li>" for s in studies]
    out += ["<li><a href='#method'>How the numbers were obtained</a></li>", "</ol></nav>"]
    for study in studies:
        out += [f"<section id='{_e(study.name)}'>", f"<h2>{_e(study.title)}</h2>",
                f"<p class='muted'>{_e(_caption(study).replace('`', ''))}</p>", "<h3>The paper's layout</h3>"]
        header, rows = study_table(study, "html")
        out.append(table(header, rows, "AUs as rows, runs as columns; accuracy in %."))
        res = _resolution_text(study)
        if res:
            out.append(f"<p class='note'>{_e(res)}</p>")
        missing = _not_done(study)
        if missing:
            out.append("<p>Runs not done:</p><ul>" + "".join(f"<li>{_e(m)}</li>" for m in missing) + "</ul>")
        for fig in figures.get(study.name, []):
            out.append(embed_png(fig, f"{study.title}: {fig.stem}"))
        out.append(literature_section(lit_by_dir.get(study.dir.resolve())))
        out += ["<h3>Paired tests between runs</h3>", tests_section(study),
                "<h3>Runs: settings and data</h3>", settings_section(study), "</section>"]
    if figures.get(""):
        out.append("<section id='figures'><h2>Figures across studies</h2>")
        out += [embed_png(fig, fig.stem) for fig in figures[""]]
        out.append("</section>")
    out += ["<section id='method'><h2>How the numbers were obtained</h2>", method_section(studies),
            "<p>Accuracy per AU is the paper's: balanced test batches of 4 positive and 4 negative frames per AU, "
            "decision at 0.5. The balanced accuracy (the mean of the true positive and true negative rates) is over "
            "every labelled test frame; its 95 % interval resamples test subjects, the unit that varies between "
            "studies (a jackknife with t quantiles under 20 subjects, else the percentile bootstrap). Paired tests "
            "permute the two runs' labels within each test subject. aubench's docs/training.md and "
            "docs/studies.md give the details.</p></section>",
            "</body></html>"]
    return "\n".join(out)


def write_html(folder: str | Path, out: str | Path | None = None, rope: float | None = None,
               pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """``report.write_report`` as one self-contained HTML page (figures embedded, both layouts, rankings)."""
    from aubench_cli.studies.report import write_report

    lit = literature.read(Path(folder))
    return write_report(folder, "html", out, rope=rope, pairs=pairs,
                        page=lambda studies, figures: render(studies, Path(folder), figures, lit))
