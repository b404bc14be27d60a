"""Write a labelled synthetic AU dataset (a test fixture and a demo, never a substitute for real data).

Renders videos of the astronaut photo that scikit-image ships, with the paper's Action Units as graded local
deformations, per-subject identity, head pose, lighting and noise, and writes them with their labels in the
generic, DISFA, BP4D or Aff-Wild2 layout. Prints a summary (files, frames, positive rate per AU), or JSON with
``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aubench_cli.commands._render import print_json
from aubench_cli.commands.choices import Layout
from aubench_cli.data.synth import SynthConfig, parse_size, synthesize
from aubench_cli.data.synth.dataset import check_output

NAME = "synth"

stderr = Console(stderr=True, highlight=False)


def command(
    out: Annotated[Path, typer.Argument(help="Folder to write the dataset into (new or empty).")],
    subjects: Annotated[int, typer.Option("--subjects", help="Number of synthetic subjects.")] = 6,
    videos_per_subject: Annotated[
        int | None,
        typer.Option("--videos-per-subject", help="Videos per subject (default: 2 for generic and bp4d, 1 for "
                     "disfa and affwild2)."),
    ] = None,
    frames: Annotated[int, typer.Option("--frames", help="Frames per video.")] = 120,
    size: Annotated[str, typer.Option("--size", help="Frame size WIDTHxHEIGHT (at least 96x96).")] = "640x480",
    fps: Annotated[
        float, typer.Option("--fps", help="Frames per second (AU episodes last the same time at any rate).")
    ] = 30.0,
    layout: Annotated[Layout, typer.Option("--layout", case_sensitive=False, help="Dataset layout to write.")] = Layout.generic,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed writes identical labels and frames.")] = 0,
    motion: Annotated[str, typer.Option("--motion", help="Head motion between frames: smooth (a continuous video) or "
                                        "jumpy (a new pose every frame, like shot cuts or sampled frames).")] = "smooth",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Write into OUT even if it is not empty.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Write a labelled synthetic AU dataset."""
    width, height = parse_size(size)
    config = SynthConfig(subjects=subjects, videos_per_subject=videos_per_subject, frames=frames, width=width,
                         height=height, fps=fps, layout=layout.value, seed=seed, motion=motion)
    config.validate()  # bad options fail before the progress bar appears
    check_output(Path(out), overwrite)  # so does a folder that is not empty
    bar = Progress(
        TextColumn("[bold]synth"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("frames"),
        TimeElapsedColumn(),
        console=stderr,
        disable=as_json and not stderr.is_terminal,
    )
    with bar:
        task = bar.add_task("frames", total=config.subjects * config.videos * config.frames)
        summary = synthesize(out, config, progress=lambda done, total: bar.update(task, completed=done),
                             overwrite=overwrite)
    if as_json:
        print_json(summary)
        return
    stderr.print(
        f"[bold]{summary['out']}[/bold]: {summary['layout']} layout, {summary['subjects']} subjects, "
        f"{summary['videos']} videos, {summary['frames']} frames of {width}x{height} in {summary['seconds']:.1f} s "
        f"({summary['frames_per_second']} frames/s); {summary['unknown_labels']} unknown labels"
    )
    table = Table()
    table.add_column("AU")
    table.add_column("positive rate", justify="right")
    for au, rate in summary["positive_rate"].items():
        table.add_row(au, f"{rate:.3f}")
    stderr.print("positive rate per AU: intensity >= 2, share of known labels")
    stderr.print(table)
    stderr.print("[dim]synthetic data: a test fixture and a demo, never a substitute for real data[/dim]")
