"""Evaluate trained runs on the paper's 3000 balanced test batches, with the metrics the field reports.

Per AU: accuracy at 0.5 over its own frames of the batches (Tables I and II) with a 95 % interval, and F1, AUC
and positive rate over the whole split. With several runs: one table, a column per run, and McNemar's test for
each pair on their shared batches. Writes eval.json and eval.csv into each run directory.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aubench_cli.commands._render import print_json, progress, stdout

NAME = "eval"


def command(
    runs: Annotated[Optional[list[str]], typer.Argument(help="Run directories [default: the latest under runs/].")] = None,
    cache: Annotated[Optional[str], typer.Option("--cache", help="Cache to test on [default: the run's own].")] = None,
    split: Annotated[str, typer.Option("--split", help="test | val | train.")] = "test",
    batches: Annotated[int, typer.Option("--batches", help="Balanced test batches (4 + 4 per AU).")] = 3000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the test batches: same seed, same frames.")] = 0,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best | last.")] = "best",
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N.")] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    from aubench_cli.evaluation.evaluate import compare, evaluate_run, latest_run, public

    run_dirs = runs or [str(latest_run())]
    results = []
    with progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        for run in run_dirs:
            task = bar.add_task(f"eval {run}", total=None)
            results.append(evaluate_run(run, cache=cache, split=split, batches=batches, seed=seed,
                                        checkpoint=checkpoint, device=device,
                                        progress=lambda done, total, t=task: bar.update(t, completed=done, total=total)))
    pairs = compare(results) if len(results) > 1 else []
    if json_out:
        print_json(public(results[0]) if len(results) == 1 else
                   {"runs": [public(r) for r in results], "comparisons": pairs})
        return
    render(results, pairs)


def render(results: list[dict], pairs: list[dict]) -> None:
    first = results[0]
    caption = (f"{first['split']} split, {first['batches']} balanced batches (seed {first['seed']}); "
               "accuracy at 0.5 over each AU's own frames, 95 % Wilson interval; F1/AUC over the whole split")
    if len(results) == 1:
        table = Table(title=f"{first['run']} ({first['arch']}, {first['checkpoint']} checkpoint, epoch {first['epoch']})",
                      caption=caption)
        for col in ("AU", "accuracy", "95 % CI", "F1", "AUC", "positive rate"):
            table.add_column(col, justify="left" if col == "AU" else "right")
        for au, m in first["per_au"].items():
            table.add_row(au, f"{100 * m['accuracy']:.1f}", f"{100 * m['ci95'][0]:.1f}-{100 * m['ci95'][1]:.1f}",
                          _f(m["f1"]), _f(m["auc"]), _f(m["positive_rate"]))
        table.add_row("AVG", f"{100 * first['mean_accuracy']:.1f}",
                      f"{100 * first['mean_ci95'][0]:.1f}-{100 * first['mean_ci95'][1]:.1f}",
                      _f(first["mean_f1"]), _f(first["mean_auc"]), "", style="bold")
        stdout.print(table)
        return
    table = Table(title="Accuracy (%) per AU; best in bold, second best [bracketed]", caption=caption)
    table.add_column("AU")
    for r in results:
        table.add_column(_name(r), justify="right")
    aus = list(first["per_au"])
    for au in aus:
        table.add_row(au, *_ranked([r["per_au"].get(au, {}).get("accuracy") for r in results]))
    table.add_row("AVG", *_ranked([r["mean_accuracy"] for r in results]), style="bold")
    stdout.print(table)
    sig = Table(title="Paired comparisons (McNemar's exact test on the shared batches, * = p < 0.05)")
    for col in ("A", "B", "mean acc A - B", "p (all AUs)", "AUs with a significant difference"):
        sig.add_column(col)
    for p in pairs:
        marked = [au for au, t in p["per_au"].items() if t["significant"]]
        sig.add_row(_short(p["a"]), _short(p["b"]), f"{100 * p['mean_accuracy_diff']:+.2f}",
                    f"{p['overall']['p_value']:.3g}{' *' if p['overall']['significant'] else ''}",
                    ", ".join(marked) or "none")
    stdout.print(sig)


def _ranked(values: list[float | None]) -> list[str]:
    known = sorted({v for v in values if v is not None}, reverse=True)
    cells = []
    for v in values:
        if v is None:
            cells.append("-")
        elif v == known[0]:
            cells.append(f"[bold]{100 * v:.1f}[/]")
        elif len(known) > 1 and v == known[1]:
            cells.append(f"[{100 * v:.1f}]".replace("[", "\\[", 1))
        else:
            cells.append(f"{100 * v:.1f}")
    return cells


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _short(run: str) -> str:
    return run.rstrip("/").split("/")[-1]


def _name(r: dict) -> str:
    return f"{_short(r['run'])}\n({r['arch']})"
