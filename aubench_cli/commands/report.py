"""Tables and figures of finished studies in the paper's layout, with the paper's numbers beside ours.

DIR is a study directory written by aubench study (it holds study.json), or a folder of them (studies/): then
every study is reported, and Fig. 2's two panels share one figure. Tables: AUs as rows, runs as columns, an AVG
row, best in bold and second best [bracketed]; FLOPs / #params / memory rows for the architectures. Runs that are
missing, unfinished or failed are shown as such. Figures (PNG) go to figures/ beside the report.
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
) -> None:
    from aubench_cli.studies.report import write_report

    only = [a.strip() for a in aus.split(",") if a.strip()] if aus else None
    written = write_report(folder, fmt.value, out, layout.value, only)
    if written["text"] is not None:
        sys.stdout.write(written["text"])
        sys.stdout.flush()
    if json_out:
        print_json({k: v for k, v in written.items() if k != "text"})
        return
    if written["report"]:
        stderr.print(f"report written to {written['report']}", markup=False)
    if layout == ReportLayout.paper:
        stderr.print(f"{plural(len(written['figures']), 'figure')} in {written['figures'][0].rsplit('/', 1)[0] if written['figures'] else '-'}",
                     markup=False)
    for study in written["studies"]:
        not_done = {name: state for name, state in study["runs"].items() if state != "done"}
        if not_done:
            stderr.print(f"{study['name']}: not done: " + ", ".join(f"{n} ({s})" for n, s in not_done.items()),
                         style="yellow", markup=False)
