"""Predict per-frame AUs for new videos with a trained run: one CSV per video, OpenFace-style columns.

Frames go through exactly the crops of ``aubench preprocess`` (detection, tracking, 4-landmark alignment, 96x96
grayscale), then the run's normalization and network. Every decoded frame gets a row (no face: ``success`` 0 and
empty AU cells). Videos run in parallel workers, streamed (flat memory), resumable (a finished CSV whose sidecar
matches the run, checkpoint and thresholds is kept). ``--plot`` and ``--overlay`` draw the results. Prints a
summary, or JSON with ``--json``; exits 1 when some video could not be read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aubench_cli.commands.choices import Checkpoint, value
from aubench_cli.commands.preprocess import _line, _stderr_console, run_with_frames_bar
from aubench_cli.errors import plural

NAME = "predict"


def command(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory written by aubench train.")],
    inputs: Annotated[list[Path], typer.Argument(
        metavar="INPUT...", help="Video files, frame folders, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the CSVs (created).")] = Path("predictions"),
    checkpoint: Annotated[Checkpoint, typer.Option("--checkpoint", help="Checkpoint to apply.")] = Checkpoint.best,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", help="Processes working on videos in parallel (0: one per CPU core).")] = 0,
    batch: Annotated[int, typer.Option("--batch", help="Faces scored per forward pass.")] = 64,
    threshold: Annotated[str, typer.Option(
        "--threshold", help="AUxx_c = 1 at probability >= this; 'val': the run's per-AU thresholds "
                            "(F1-maximising on its validation split).")] = "0.5",
    plot: Annotated[bool, typer.Option("--plot", help="Also write <name>.png: probabilities over time.")] = False,
    overlay: Annotated[bool, typer.Option(
        "--overlay", help="Also write <name>.overlay.mp4: frames with the crop and AU bars.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Predict per-frame AUs for new videos with a trained run."""
    from aubench_cli.evaluation.predict import PredictOptions, run_predict

    options = PredictOptions(checkpoint=value(checkpoint), out=out, workers=workers, batch=batch, threshold=threshold,
                             plot=plot, overlay=overlay)
    stderr = _stderr_console()

    def on_start(event: dict) -> None:
        if event.get("kept"):
            stderr.print(f"resuming: {plural(event['kept'], 'video')} already predicted with this run")

    summary = run_with_frames_bar("predict", stderr, as_json, on_start,
                                  lambda progress: run_predict(run, inputs, options, progress=progress),
                                  render_summary)
    stderr.file.flush()
    if summary["failures"]:
        raise typer.Exit(1)


def render_summary(summary: dict, console: Console) -> None:
    v = summary["videos"]
    fps = summary.get("frames_per_second")
    workers = summary["workers"]
    speed = f"; {fps:.0f} frames/s with {workers} worker{'s' if workers != 1 else ''}" if fps else ""
    console.print(Text.assemble(
        (summary["out"], "bold"),
        f": {plural(v['listed'], 'video')} ({v['predicted_now']} predicted now, {v['kept']} kept from before, "
        f"{v['failed']} failed); {summary['frames']} frames, {summary['faces_found']} with a face "
        f"({summary['faces_found_pct']:.1f}%){speed}",
    ))
    console.print(f"run {summary['run']} ({summary['arch']}, {summary['checkpoint']} checkpoint, epoch "
                  f"{summary['epoch']}), threshold {summary['threshold']}", markup=False, highlight=False)
    for f in summary["failures"]:
        console.print(_line("failed", "red", f"{f['video']}: {f['reason']}"))
    if not summary["faces_found"]:  # nothing predicted: no table of "-"
        return
    table = Table(title="AU presence (share of frames with a face where AUxx_c = 1)", title_justify="left")
    for col in ("AU", "threshold", "present"):
        table.add_column(col, justify="left" if col == "AU" else "right")
    for au in summary["au_names"]:
        rate = summary["presence"][au]
        table.add_row(au, f"{summary['thresholds'][au]:.3f}", "-" if rate is None else f"{rate:.3f}")
    console.print(table)
