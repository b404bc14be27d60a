"""Evaluate trained runs on the paper's 3000 balanced test batches, with intervals and paired tests over subjects.

Per AU: the paper's accuracy at 0.5 over its own frames of the batches (Tables I and II); the balanced accuracy
over every labelled frame of the split (what the batches estimate) with a 95 % interval over the test subjects
(--ci-unit to choose); F1, AUC and positive rate over the whole split. With several runs: one table, a column per
run, and for each pair the difference in balanced accuracy, its interval, the smallest difference the split can
detect, and a permutation test within subjects (Holm across AUs). Writes eval.json and eval.csv into each run.
Inference runs in float32 on any device (--precision bf16: bfloat16 autocast, faster on GPUs, logits rounded);
eval.json says which. On another dataset's cache (--cache OTHER), the AUs both code are tested, matched by name,
and the others named; --split all tests every frame of such a cache (refused on the run's own cache: it holds the
training subjects).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aubench_cli.commands._render import print_json, progress, stdout
from aubench_cli.commands.choices import Checkpoint, CiUnit, Precision, Split, complete_device

NAME = "eval"


def command(
    runs: Annotated[Optional[list[str]], typer.Argument(help="Run directories.", show_default="the latest under runs/")] = None,
    cache: Annotated[Optional[str], typer.Option("--cache", help="Cache to test on.", show_default="the run's own")] = None,
    split: Annotated[Split, typer.Option("--split", help="Split to test on; all: every frame (another dataset's cache).")] = Split.test,
    batches: Annotated[int, typer.Option("--batches", help="Balanced test batches (4 + 4 per AU).")] = 3000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the test batches: same seed, same frames.")] = 0,
    checkpoint: Annotated[Checkpoint, typer.Option("--checkpoint", help="Checkpoint to test.")] = Checkpoint.best,
    ci_unit: Annotated[CiUnit, typer.Option("--ci-unit", help="Unit resampled for intervals and swapped by the paired test.")] = CiUnit.subject,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", autocompletion=complete_device)] = "auto",
    precision: Annotated[Precision, typer.Option("--precision", help="fp32: float32 on any device (TF32 off); bf16: bfloat16 autocast (faster on GPUs, logits rounded).")] = Precision.fp32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    rope: Annotated[float, typer.Option("--rope", help="With several runs: region of practical equivalence, in points of balanced accuracy.")] = 1.0,
    pair: Annotated[Optional[list[str]], typer.Option("--pair", help="A,B: also test these two runs for practical equivalence (repeatable; the top two always).")] = None,
) -> None:
    from aubench_cli.evaluation.evaluate import compare, evaluate_run, latest_run, public
    from aubench_cli.evaluation.ranking import eval_rankings, parse_pairs, rope_from_points

    rope_fraction, pairs_asked = rope_from_points(rope), parse_pairs(pair)  # bad options fail before evaluating

    run_dirs = runs or [str(latest_run())]
    results = []
    with progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        for run in run_dirs:
            task = bar.add_task(f"eval {run}", total=None)
            results.append(evaluate_run(run, cache=cache, split=split.value, batches=batches, seed=seed,
                                        checkpoint=checkpoint.value, device=device, ci_unit=ci_unit.value,
                                        precision=precision.value,
                                        progress=lambda done, total, t=task: bar.update(t, completed=done, total=total)))
    pairs = compare(results) if len(results) > 1 else []
    ranked = eval_rankings(results, rope=rope_fraction, pairs=pairs_asked, seed=seed) if len(results) > 1 else None
    if json_out:
        print_json(public(results[0]) if len(results) == 1 else
                   {"runs": [public(r) for r in results], "comparisons": pairs, "rankings": ranked})
        return
    render(results, pairs)
    if ranked:
        render_rankings(ranked)
    for r in results:
        for line in not_tested(r):
            stdout.print(line, markup=False)


def caption(result: dict) -> str:
    """What the numbers are, and over which unit the interval is (printed under every eval table)."""
    unit = result.get("ci_unit", "subject")
    where = f"{result['split']} split" if "fold" not in result else f"fold {result['fold']} of {result['folds']}"
    return (f"{where}, {result['batches']} balanced batches (seed {result['seed']}), inference in "
            f"{result.get('precision', 'fp32')}. accuracy: the "
            f"paper's, at 0.5 over each AU's own frames of the batches; balanced: mean of TPR and TNR over every "
            f"labelled frame; 95 % CI of the balanced accuracy over {unit}s: {result.get('ci_note', '')}. F1, AUC "
            "over the whole split")


def not_tested(result: dict) -> list[str]:
    """The AUs a cross-dataset evaluation could not test, said under its table."""
    lines = []
    if result.get("aus_missing"):
        lines.append(f"{_short(result['run'])}: not tested (the cache has no labels for them): "
                     + ", ".join(result["aus_missing"]))
    if result.get("aus_unpredicted"):
        lines.append(f"{_short(result['run'])}: the cache's AUs the run does not predict: "
                     + ", ".join(result["aus_unpredicted"]))
    return lines


def render(results: list[dict], pairs: list[dict]) -> None:
    first = results[0]
    if len(results) == 1:
        table = Table(title=f"{first['run']} ({first['arch']}, {first['checkpoint']} checkpoint, epoch {first['epoch']})",
                      caption=escape(caption(first)))
        for col in ("AU", "accuracy", "balanced", "95 % CI", "F1", "AUC", "positive rate"):
            table.add_column(col, justify="left" if col == "AU" else "right")
        for au, m in first["per_au"].items():
            table.add_row(au, _pct(m["accuracy"]), _pct(m.get("balanced_accuracy")), _ci(m.get("ci95")),
                          _f(m["f1"]), _f(m["auc"]), _f(m["positive_rate"]))
        table.add_row("AVG", _pct(first["mean_accuracy"]), _pct(first.get("balanced_accuracy")),
                      _ci(first.get("mean_ci95")), _f(first["mean_f1"]), _f(first["mean_auc"]), "", style="bold")
        stdout.print(table)
        return
    table = Table(title="Accuracy (%) per AU; best in bold, second best [bracketed]", caption=escape(caption(first)))
    table.add_column("AU")
    for r in results:
        table.add_column(escape(_name(r)), justify="right")
    aus = list(dict.fromkeys(au for r in results for au in r["per_au"]))
    for au in aus:
        table.add_row(au, *ranked_cells([r["per_au"].get(au, {}).get("accuracy") for r in results]))
    table.add_row("AVG", *ranked_cells([r["mean_accuracy"] for r in results]), style="bold")
    stdout.print(table)
    unit = pairs[0]["ci_unit"] if pairs else "subject"
    sig = Table(title=f"Paired comparisons: balanced accuracy A - B (points), 95 % CI and permutation test within "
                      f"{unit}s; * = p < 0.05 (per AU: Holm-adjusted)")
    for col in ("A", "B", "acc A - B", "bal. A - B", "95 % CI", "+-", "detectable", "p (mean)",
                "AUs with a significant difference", "not compared"):
        sig.add_column(col)
    for p in pairs:
        marked = [au for au, t in p["per_au"].items() if t["significant"]]
        sig.add_row(escape(_short(p["a"])), escape(_short(p["b"])), _signed(p["mean_accuracy_diff"]),
                    _signed(p["balanced_accuracy_diff"]), _ci(p["balanced_accuracy_diff_ci95"], signed=True),
                    _pct(p["half_width"], 2), _pct(p["min_detectable_diff"], 2),
                    f"{p['overall']['p_value']:.3g}{' *' if p['overall']['significant'] else ''}",
                    ", ".join(marked) or "none", ", ".join(p["not_compared"]) or "-")
    stdout.print(sig)
    stdout.print("+-: 95 % half-width of the difference; detectable: the smallest difference this test split detects "
                 "with 80 % power at 5 % (about 2.8 standard errors); acc: the paper's 3000-batch figure, not tested",
                 markup=False)
    for note in dict.fromkeys(p["note"] for p in pairs):
        stdout.print(f"note: {note}", markup=False)


def render_rankings(r: dict) -> None:
    """The rank table (mean rank, 95 % rank interval, P(best), CD group), the ROPE comparisons and the summary."""
    from aubench_cli.evaluation.ranking import rope_points

    cd = r["critical_difference"]
    group_of = {name: i + 1 for i, g in enumerate(cd["groups"]) for name in g}
    resampling = (f"{r['resamples']} paired resamples of {r['subjects']} test subjects" if r.get("resampled", True)
                  else f"no resampling ({r['subjects']} test subject, one seed: ranks on the data alone)")
    table = Table(title=f"Rankings on mean balanced accuracy: {resampling}; CD groups: {cd['note']}")
    for col in ("run", "balanced", "mean rank", "95 % rank interval", "P(best)", "CD group", "Friedman mean rank"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for row in sorted(r["runs"], key=lambda x: x["mean_rank"] if x["mean_rank"] is not None else 1e9):
        ci = row["rank_ci95"]
        table.add_row(escape(row["run"]), _pct(row["value"]), _f2(row["mean_rank"]),
                      "-" if not ci else f"{ci[0]:g}-{ci[1]:g}", _f2(row["p_best"]), str(group_of.get(row["run"], "-")),
                      _f2(cd["mean_ranks"].get(row["run"])))
    stdout.print(table)
    for c in r["rope_comparisons"]:
        if c["p_a"] is None:
            continue
        stdout.print(f"{c['a']} vs {c['b']} (ROPE {rope_points(c['rope'])}, Bayesian signed-rank over "
                     f"{c['subjects']} subjects): P({c['a']} better) {c['p_a']:.3f}, P(equivalent) "
                     f"{c['p_equivalent']:.3f}, P({c['b']} better) {c['p_b']:.3f}: {c['verdict']}", markup=False)
    stdout.print(f"summary: {r['summary']}", markup=False)


def _f2(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def ranked_cells(values: list[float | None]) -> list[str]:
    """Cells in %, to 0.1, best bold and second [bracketed] by ``stats.ranks`` (the report's marks)."""
    from aubench_cli.evaluation.stats import ranks

    cells = []
    for v, rank in zip(values, ranks(values)):
        if v is None:
            cells.append("-")
        elif rank == 1:
            cells.append(f"[bold]{100 * v:.1f}[/]")
        elif rank == 2:
            cells.append(escape(f"[{100 * v:.1f}]"))
        else:
            cells.append(f"{100 * v:.1f}")
    return cells


def _pct(v: float | None, decimals: int = 1) -> str:
    return "-" if v is None else f"{100 * v:.{decimals}f}"


def _signed(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.2f}"


def _ci(ci: list[float] | None, signed: bool = False) -> str:
    if not ci:
        return "-"
    fmt = "{:+.2f}" if signed else "{:.1f}"
    return f"{fmt.format(100 * ci[0])} to {fmt.format(100 * ci[1])}" if signed else \
        f"{fmt.format(100 * ci[0])}-{fmt.format(100 * ci[1])}"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _short(run: str) -> str:
    return run.rstrip("/").split("/")[-1]


def _name(r: dict) -> str:
    return f"{_short(r['run'])}\n({r['arch']})"
