"""Tables and figures of finished studies in the paper's layout, with the paper's numbers beside ours.

DIR is a study directory written by aubench study (it holds study.json), or a folder of them (studies/): then
every study is reported, and Fig. 2's two panels share one figure. Tables: AUs as rows, runs as columns, an AVG
row, best in bold and second best [bracketed]; FLOPs / #params / memory rows for the architectures. Runs that are
missing, unfinished or failed are shown as such. Figures (PNG) go to figures/ beside the report;
--format html writes one self-contained page instead (figures embedded, the literature's tables, each run's
settings and cache identity, the paired tests, how the numbers were obtained).
--layout literature: the AU literature's tables (runs as rows, AUs as columns, Avg. last; F1 at 0.5 and balanced
accuracy; with folds the mean ± sd over folds and the pooled figure with its interval over subjects), in Markdown,
LaTeX (--format tex, booktabs) or CSV, into DIR/report-literature.<format>.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from aubench_cli.commands.choices import ReportFormat, ReportLayout
from aubench_cli.commands._render import print_json, stderr
from aubench_cli.errors import plural

NAME = "report"


def command(
    folder: Annotated[str, typer.Argument(help="Study directory (studies/<preset>) or a folder of them (studies/).")],
    fmt: Annotated[ReportFormat, typer.Option("--format", help="Report format.")] = ReportFormat.md,
    out: Annotated[Optional[str], typer.Option("--out", help="Report file (default: DIR/report.<format>); - prints it on stdout.")] = None,
    layout: Annotated[ReportLayout, typer.Option("--layout", help="paper: AUs as rows, the paper's numbers beside ours; literature: runs as rows, AUs as columns, F1 and folds (md, tex, csv).")] = ReportLayout.paper,
    aus: Annotated[Optional[str], typer.Option("--aus", help="Literature layout: only these AUs, in this order, e.g. AU01,AU02,AU04 (Avg. over them).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was written (paths, run states) as JSON.")] = False,
    rope: Annotated[float, typer.Option("--rope", help="Region of practical equivalence of the rankings' Bayesian comparisons, in points of balanced accuracy.")] = 1.0,
    pair: Annotated[Optional[list[str]], typer.Option("--pair", help="A,B: also compare these two runs for practical equivalence (repeatable; the top two always).")] = None,
) -> None:
    from aubench_cli.evaluation.ranking import parse_pairs, rope_from_points

    only = [a.strip() for a in aus.split(",") if a.strip()] if aus else None
    if layout == ReportLayout.literature:
        from aubench_cli.studies.literature import literature_report

        written = literature_report(folder, fmt.value, out, only, rope_from_points(rope), parse_pairs(pair))
    elif fmt.value == "html" and not aus:
        from aubench_cli.studies.html import write_html

        written = write_html(folder, out, rope_from_points(rope), parse_pairs(pair))
    else:
        from aubench_cli.studies.report import write_report

        written = write_report(folder, fmt.value, out, aus=only, rope=rope_from_points(rope), pairs=parse_pairs(pair))
    if written["text"] is not None:
        sys.stdout.write(written["text"])
        sys.stdout.flush()
    if json_out:
        print_json({k: v for k, v in written.items() if k != "text"})
        return
    if written["report"]:
        stderr.print(f"report written to {written['report']}", markup=False)
    if written.get("embedded_figures"):
        stderr.print(f"{plural(len(written['embedded_figures']), 'figure')} embedded in the page (it needs no other file)",
                     markup=False)
    elif layout == ReportLayout.paper:
        stderr.print(f"{plural(len(written['figures']), 'figure')} in {written['figures'][0].rsplit('/', 1)[0] if written['figures'] else '-'}",
                     markup=False)
    for study in written["studies"]:
        not_done = {name: state for name, state in study["runs"].items() if state != "done"}
        if not_done:
            stderr.print(f"{study['name']}: not done: " + ", ".join(f"{n} ({s})" for n, s in not_done.items()),
                         style="yellow", markup=False)
