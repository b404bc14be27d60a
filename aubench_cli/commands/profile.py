"""Parameters, MACs, FLOPs, memory and measured speed of the networks (the paper's Table I).

FLOPs and memory follow the paper's conventions (docs/architectures.md); MACs are fvcore's own count. --paper
builds every network with 14 outputs, as the paper's counts imply, and prints the paper's figures beside ours.
``--set model.layout=v1.5`` profiles ResNet50 in torchvision's layout instead of the paper's v1 (the layout is
shown beside the name of every network that has several).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from aubench_cli import config as cfgmod
from aubench_cli.commands.choices import complete_device
from aubench_cli.commands._render import kilo, mega, print_json, progress, signed_pct, stderr, stdout
from aubench_cli.errors import UsageError

NAME = "profile"


def command(
    archs: Annotated[Optional[list[str]], typer.Argument(help="Networks to profile (default with --all: every one).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Profile every registered network.")] = False,
    input_size: Annotated[Optional[int], typer.Option("--input", help="Input side in pixels.", show_default="96")] = None,
    outputs: Annotated[Optional[int], typer.Option("--outputs", help="Number of outputs.", show_default="12, 14 with --paper")] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", help="Batch size for the speed measurement.", show_default="16")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.", show_default="auto", autocompletion=complete_device)] = None,
    paper: Annotated[bool, typer.Option("--paper", help="14 outputs and the paper's Table I figures beside ours.")] = False,
    no_speed: Annotated[bool, typer.Option("--no-speed", help="Skip the latency measurement (counts only).")] = False,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Preset YAML (its profile: section).")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting, e.g. profile.batch=32.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list on stdout.")] = False,
) -> None:
    if archs and all_:
        raise UsageError("give network names or --all, not both", "e.g. aubench profile vgg16 resnet50, or aubench profile --all")
    if not archs and not all_:
        raise UsageError("which networks?", "name them (aubench profile baseline vgg16) or pass --all")
    from aubench_cli.profiling import profile_models

    resolved = cfgmod.resolve(preset, sets, {
        "profile.input_size": input_size, "profile.outputs": outputs, "profile.batch": batch, "profile.device": device,
    })
    cfg = resolved.profile

    with progress(SpinnerColumn(), TextColumn("profiling {task.description}"), TimeElapsedColumn()) as bar:
        task = bar.add_task("", total=None)
        rows = profile_models(
            archs or None, input_size=cfg.input_size, outputs=cfg.outputs, batch=cfg.batch, device=cfg.device,
            paper=paper, measure=not no_speed, progress=lambda arch: bar.update(task, description=arch),
            layout=resolved.model.layout,
        )
    if json_out:
        print_json(rows)
    else:
        render_table(rows, paper)
    unsupported = {r["arch"]: r["unsupported_ops"] for r in rows if r["unsupported_ops"]}
    for arch, ops in unsupported.items():
        stderr.print(f"[yellow]{arch}: ops not counted by fvcore:[/] " + ", ".join(f"{k} x{v}" for k, v in ops.items()))


def render_table(rows: list[dict], paper: bool) -> None:
    r0 = rows[0]
    where = f"{r0['input_size']}x{r0['input_size']} input, {r0['outputs']} outputs"
    if r0["images_per_s"] is not None:
        where += f", speed at batch {r0['batch']} on {r0['device']}"
    table = Table(title=f"Network costs ({where})", caption="FLOPs and memory in the paper's conventions; MACs: fvcore")
    cols = ["arch", "params", "MACs", "FLOPs", "memory MB", "ms/batch", "images/s"]
    if paper:
        cols += ["paper FLOPs", "Δ", "paper params", "Δ", "paper MB", "Δ"]
    for c in cols:
        table.add_column(c, justify="left" if c == "arch" else "right")
    for r in rows:
        name = r["arch"] + (f" ({r['layout']})" if r["layout"] else "")
        cells = [name, kilo(r["params"]), mega(r["macs"]), mega(r["flops"]), f"{r['memory_mb']:.2f}",
                 "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f}",
                 "-" if r["images_per_s"] is None else f"{r['images_per_s']:.0f}"]
        if paper:
            cells += [mega(r["paper_flops"]), signed_pct(r["flops_diff"]), kilo(r["paper_params"]),
                      signed_pct(r["params_diff"]), f"{r['paper_memory_mb']:.2f}", signed_pct(r["memory_diff"])]
        table.add_row(*cells)
    stdout.print(table)
