"""Run the whole pipeline on an embedded synthetic dataset: synth, preprocess, train the baseline, eval, profile.

The data is synthetic (a public-domain photo with rendered AU deformations): a demo of the tool, never a
substitute for real AU-coded videos. The schedule is the paper's protocol shortened to a few minutes on a CPU.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from aubench_cli.commands.choices import complete_device
from aubench_cli.commands._render import print_json, progress, say, stderr, stdout

NAME = "demo"

SYNTHETIC = "[bold yellow]SYNTHETIC DATA[/]: a demo of the pipeline, not a result about real faces"


def command(
    out: Annotated[str, typer.Option("--out", help="Folder for the dataset, cache and run.")] = "aubench-demo",
    subjects: Annotated[int, typer.Option("--subjects", help="Synthetic subjects.")] = 10,
    frames: Annotated[int, typer.Option("--frames", help="Frames per video.")] = 150,
    epochs: Annotated[int, typer.Option("--epochs", help="Training epochs (the paper: 600).")] = 12,
    batches_per_epoch: Annotated[int, typer.Option("--batches-per-epoch", help="Training batches per epoch (the paper: 300).")] = 40,
    eval_batches: Annotated[int, typer.Option("--eval-batches", help="Balanced test batches (the paper: 3000).")] = 3000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the data, the split and the training.")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", autocompletion=complete_device)] = "auto",
    json_out: Annotated[bool, typer.Option("--json", help="Print the final evaluation as JSON (as eval --json).")] = False,
) -> None:
    from aubench_cli.commands.eval import render as render_eval
    from aubench_cli.commands.profile import render_table
    from aubench_cli.demo import DemoOptions, run_demo

    options = DemoOptions(out=out, subjects=subjects, frames=frames, epochs=epochs,
                          batches_per_epoch=batches_per_epoch, eval_batches=eval_batches, seed=seed, device=device)
    started = time.perf_counter()
    bar = progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   transient=False)
    tasks: dict[str, int] = {}

    def on_stage(stage: str, info: dict) -> None:
        note = " (reused)" if info.get("reused") else ""
        message = f"[{time.perf_counter() - started:5.0f}s] {stage}{note} {info.get('path', '')}"
        say(bar, message)

    def on_frames(done: int, total: int) -> None:
        if "synth" not in tasks:
            tasks["synth"] = bar.add_task("synth", total=total)
        bar.update(tasks["synth"], completed=done)

    def on_train(event: dict) -> None:
        if event["event"] == "start":
            tasks["train"] = bar.add_task("train", total=event["total"])
        elif event["event"] == "step":
            bar.update(tasks["train"], advance=1, description=f"train (epoch {event['epoch']})")

    stderr.print(SYNTHETIC)
    with bar:
        result = run_demo(options, on_stage, train_progress=on_train, frames_progress=on_frames)
    elapsed = time.perf_counter() - started
    if json_out:
        print_json(result["evaluation"])
        return
    render_eval([result["evaluation"]], [])
    render_table(result["profile"], paper=True)
    paths = result["paths"]
    stdout.print(f"\n{SYNTHETIC}")
    stdout.print(f"dataset: {paths['data']}\ncache:   {paths['cache']}\nrun:     {paths['run']} "
                 f"(config.yaml, metrics.csv, best.pt, eval.json)\nfinished in {elapsed:.0f} s")
