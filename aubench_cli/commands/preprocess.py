"""Align the faces of a dataset folder into a cache: 96x96 grayscale crops with labels, splits and landmarks.

Reads the generic, DISFA, BP4D or Aff-Wild2 layout (``--format auto`` tells them apart), finds and follows the
face with mediapipe, levels the eyes, and writes one shard per video (resumable: a rerun skips finished videos).
Prints a summary (videos, frames, faces found, failures, per-AU positive rates per split), or JSON with
``--json``; exits 1 when some video could not be read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from aubench_cli.errors import UsageError, plural, suggest
from aubench_cli.data.labels import LAYOUTS, SCALES
from aubench_cli.data.preprocess import PreprocessOptions, parse_splits, run_preprocess

from aubench_cli.commands.choices import InputFormat, value

NAME = "preprocess"


def _stderr_console() -> Console:
    """A console on a duplicate of stderr: the run points descriptor 2 itself at /dev/null while mediapipe's
    C++ threads chatter, and the progress bar must still reach the terminal."""
    try:
        if sys.stderr.fileno() == 2:
            return Console(file=os.fdopen(os.dup(2), "w", buffering=1), highlight=False)
    except (AttributeError, OSError, ValueError):  # stderr captured in memory (tests): use it as it is
        pass
    return Console(file=sys.stderr, highlight=False)


class _FramesPerSecond(ProgressColumn):
    """Frames per second since the bar started (rich's own speed column averages over a short window only)."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:6.1f} frames/s", style="cyan")


def frames_events(bar: Progress, on_start: Callable[[dict], None]) -> Callable[[dict], None]:
    """The handler of a ``frames_bar``'s events (preprocess and predict send the same ones): ``start`` (frames and
    videos to do; ``on_start`` prints what else it says), ``frames`` done, and one ``video`` per finished video,
    a failed one printed above the bar."""
    state = {"task": None, "done": 0, "videos": 0, "shown": set()}

    def on_progress(event: dict) -> None:
        kind = event.get("event")
        if kind == "start":
            state["videos"] = event["videos"]
            state["task"] = bar.add_task("frames", total=max(event["frames"], 1), videos=f"0/{plural(event['videos'], 'video')}")
            on_start(event)
        elif state["task"] is None:
            return
        elif kind == "frames":
            bar.advance(state["task"], event["n"])
        elif kind == "video":
            state["done"] += 1
            bar.update(state["task"], videos=f"{state['done']}/{plural(state['videos'], 'video')}")
            if event["status"] == "failed":
                bar.console.print(_line("failed", "red", f"{event['video']}: {event['error']}"))
                state["shown"].add(str(event["video"]))

    on_progress.shown = state["shown"]  # type: ignore[attr-defined]  # failures already printed above the bar
    return on_progress


def frames_bar(label: str, console: Console, as_json: bool) -> Progress:
    """The progress bar of the commands that go through videos frame by frame (preprocess, predict): frames done,
    frames/s, videos done, on stderr."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        _FramesPerSecond(),
        TextColumn("{task.fields[videos]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
        disable=as_json and not console.is_terminal,
    )


def close_unused(bar: Progress) -> None:
    """Stop a bar that never showed a task without a trace: Rich would leave an empty line (its final render, and
    on a pipe a newline of its own) above the error or summary that follows."""
    if bar.disable:
        return
    bar.live.transient = True
    bar.live.stop()
    bar.disable = True  # its __exit__ then stops nothing more


def run_with_frames_bar(label: str, stderr: Console, as_json: bool, on_start: Callable[[dict], None],
                        job: Callable[[Callable[[dict], None]], dict], render: Callable[[dict, Console], None]) -> dict:
    """What preprocess and predict share: ``job(progress)`` run under a frames bar on stderr, its duration in
    ``seconds``, then its summary printed as JSON on stdout (``--json``) or ``render``-ed on stderr."""
    bar = frames_bar(label, stderr, as_json)
    started = time.perf_counter()
    events = frames_events(bar, on_start)
    with bar:
        try:
            summary = job(events)
        finally:
            if not bar.tasks:  # nothing drawn (an error before the first video, a no-op resume): no blank line
                close_unused(bar)
    summary.setdefault("seconds", round(time.perf_counter() - started, 2))
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:  # a failure printed above the bar is not printed again under the summary
        failures = [f for f in summary.get("failures", []) if str(f.get("video")) not in events.shown]
        render({**summary, "failures": failures}, stderr)
    return summary


def command(
    input: Annotated[Path | None, typer.Argument(
        metavar="INPUT", help="Dataset folder (generic manifest.csv, DISFA, BP4D or Aff-Wild2 layout).",
        show_default=False)] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Cache folder to write (created; resumed if it exists).")] = Path("aubench-cache"),
    format: Annotated[InputFormat, typer.Option(
        "--format", case_sensitive=False, help="Layout of INPUT (auto tells them apart).")] = InputFormat.auto,
    workers: Annotated[int, typer.Option(
        "--workers", "-j", help="Processes working on videos in parallel (0: one per CPU core).")] = 0,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="Intensity labels count as present at >= this (DISFA 0-5 scale).")] = 2.0,
    label_scale: Annotated[str, typer.Option(
        "--label-scale", metavar=" | ".join(("auto", *SCALES)), help="How label values are read: auto (the layout's coding; generic: decided from the "
        "data), binary (1/0) or intensity (0-5, present at >= --threshold).")] = "auto",
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 1 when a label value is outside the scale or an AU is named twice (they are read "
        "as unknown / the first column, and reported, either way).")] = False,
    split_seed: Annotated[Optional[int], typer.Option(
        "--split-seed", help="Seed of the subject split (when the manifest gives none). Default: the cache's "
        "recorded seed, else 0, else of the seeds that give every split a subject the one closest to the shares.", show_default=False)] = None,
    splits: Annotated[str, typer.Option(
        "--splits", help="Train,val,test shares of subjects (the paper's by default).")] = "0.74,0.11,0.15",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Rebuild an existing cache made with other settings.")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify", help="Check the cache at --out without writing: every video's size and checksum, the journal "
        "against the header; exit 1 when something is damaged or missing (INPUT not needed).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Align the faces of a dataset folder into a cache."""
    if verify:
        return _verify(out, as_json)
    if input is None:
        raise UsageError("missing INPUT, the dataset folder", "aubench preprocess INPUT [--out CACHE]; "
                         "or --verify to check a cache")
    format = value(format)  # type: ignore[assignment]
    if format not in ("auto", *LAYOUTS):
        raise UsageError(f"unknown --format {format!r}", suggest(format, ("auto", *LAYOUTS)))
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}", "0 uses every CPU core")
    if label_scale not in ("auto", *SCALES):
        raise UsageError(f"unknown --label-scale {label_scale!r}", suggest(label_scale, ("auto", *SCALES)))
    options = PreprocessOptions(
        layout=format, threshold=threshold, workers=workers, split_seed=split_seed, splits=parse_splits(splits),
        overwrite=overwrite, label_scale=label_scale, strict=strict,
    )
    stderr = _stderr_console()

    def on_start(event: dict) -> None:
        if event.get("already_done"):
            stderr.print(f"resuming: {plural(event['already_done'], 'video')} already in the cache")
        for note in event.get("notes", []):
            stderr.print(_line("rerun", "cyan", note))

    summary = run_with_frames_bar("preprocess", stderr, as_json, on_start,
                                  lambda progress: run_preprocess(input, out, options, progress=progress),
                                  render_summary)
    if summary.get("strict_failed"):
        stderr.print(_line("--strict", "red", f"{summary['label_problems']} label problems (listed above): exit 1"))
    # a video left out of the cache (unreadable labels, its file missing) fails the command, as a failed video does;
    # label files without a video are only reported
    skipped = [s for s in summary["skipped"] if not s["reason"].startswith("labels without")]
    if skipped and not summary["failures"]:
        stderr.print(_line("error:", "bold red", f"{plural(len(skipped), 'video')} skipped (listed above): exit 1 - "
                           "fix them and run the same command again (the cache is resumed)"))
    stderr.file.flush()
    if summary["failures"] or summary.get("strict_failed") or skipped:
        raise typer.Exit(1)


def _verify(out: Path, as_json: bool) -> None:
    """``--verify``: the cache checked, nothing written; exit 1 when a video or the journal is damaged."""
    from aubench_cli.data.cache import verify_cache

    stderr = Console(stderr=True, highlight=False, soft_wrap=True)
    report = verify_cache(out)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    for d in report["damaged"]:
        stderr.print(_line("damaged", "red", f"{d['video']}: {d['reason']}"))
    if report["journal"]:
        stderr.print(_line("journal", "yellow", report["journal"]))
    if report["ok"]:
        stderr.print(Text.assemble((str(out), "bold"), f": {plural(report['videos'], 'video')}, {plural(report['frames'], 'frame')}: "
                                                       "sizes and checksums intact"))
        return
    n = len(report["damaged"])
    problems = ([f"{n} of {report['videos']} videos damaged or missing"] if n else []) + (
        [report["journal"]] if report["journal"] else [])
    stderr.print(_line("error:", "bold red", f"cache {out}: {'; '.join(problems)} - re-run '{report['fix']}' to "
                       "repair it (only what is damaged is redone)"))
    raise typer.Exit(1)


def _line(tag: str, style: str, text: str) -> Text:
    """A tagged report line; the text (paths, video names, reasons) is never read as Rich markup."""
    return Text.assemble((tag, style), " ", text)


def render_label_report(summary: dict, console: Console) -> None:
    """The label scale with its evidence, the values outside it (the first few, then the count), AUs named twice."""
    scale = summary.get("label_scale")
    if scale:
        text = scale["scale"] + (f" (0-5, present at >= {scale['threshold']:g})" if scale.get("threshold") else "")
        console.print(_line("label scale", "cyan", f"{text}: {scale['evidence']}"))
    outside = summary.get("label_values_outside_scale") or {"count": 0, "first": []}
    if outside["count"]:
        console.print(_line("labels", "yellow", f"{outside['count']} values outside the scale, read as unknown:"))
        for s in outside["first"][:10]:
            console.print(Text(f"  {s['file']} line {s['line']} column {s['column']}: {s['value']!r}"))
        if outside["count"] > 10:
            console.print(Text(f"  ... and {outside['count'] - 10} more (see --json for the first {len(outside['first'])})"))
    for d in summary.get("duplicate_au_columns", []):
        console.print(_line("labels", "yellow", f"{d['file']}: columns {' and '.join(d['columns'])} both name {d['au']}; "
                                                f"{d['used']} used, {d['disagreeing_rows']} rows disagree"))


def render_face_report(summary: dict, console: Console) -> None:
    """Videos with many frames without a face (worst first), identity switches, implausible alignments."""
    faceless = summary.get("videos_with_faceless_frames", [])
    if faceless:
        console.print(_line("faceless frames", "yellow", f"{len(faceless)} videos with 5% or more labelled frames "
                                                         "without a face (worst first):"))
        for f in faceless[:10]:
            console.print(Text(f"  {f['video']}: {f['no_face']} of {f['frames_labelled']} frames ({f['pct']:.1f}%)"))
        if len(faceless) > 10:
            console.print(Text(f"  ... and {len(faceless) - 10} more (see --json)"))
    if summary.get("identity_switches"):
        videos = summary.get("videos_with_identity_switches", [])
        console.print(_line("identity", "yellow", f"{summary['identity_switches']} possible identity switches (a face "
                                                  f"found again far from the one followed) in {', '.join(videos[:10])}"))
    if summary.get("implausible_alignments"):
        console.print(_line("alignment", "yellow", f"{summary['implausible_alignments']} implausible alignments "
                                                   "(upside-down or inconsistent landmarks): not written"))


def render_summary(summary: dict, console: Console) -> None:
    """The end-of-run report: counts, failures, skips and mismatches, then per-AU positive rates per split."""
    v = summary["videos"]
    fps = summary.get("frames_per_second")
    workers = summary["workers"]
    speed = f"; {fps:.0f} frames/s with {workers} worker{'s' if workers != 1 else ''}" if fps else ""
    console.print(Text.assemble(
        (summary["cache"], "bold"),
        f": {plural(v['in_cache'], 'video')} in the cache ({v['processed_now']} now, {v['already_done']} already done), "
        f"{v['failed']} failed, {v['skipped']} skipped; {summary['frames_read']} frames read, "
        f"{summary['frames_labelled']} labelled, {summary['faces_found']} faces found "
        f"({summary['faces_found_pct']:.1f}%){speed}",
    ))
    for f in summary["failures"]:
        console.print(_line("failed", "red", f"{f['video']}: {f['reason']}"))
    for s in summary["skipped"]:
        console.print(_line("skipped", "yellow", f"{s.get('file') or s['video']}: {s['reason']}"))
    for m in summary["mismatches"][:20]:
        for issue in m["issues"]:
            console.print(_line("labels", "yellow", f"{m['video']}: {issue}"))
    if len(summary["mismatches"]) > 20:
        console.print(f"... and {len(summary['mismatches']) - 20} more videos with label mismatches (see --json)")
    if summary["videos_without_face"]:
        console.print(_line("no face found", "yellow", "in " + ", ".join(summary["videos_without_face"][:10])))
    for note in summary.get("notes", []):
        console.print(_line("note", "yellow", note))
    render_label_report(summary, console)
    render_face_report(summary, console)
    # one row per AU, one column per split: fits a terminal whatever the number of AUs
    splits = summary["splits"]
    table = Table(title="positive rate per AU (share of known labels)", title_justify="left")
    table.add_column("AU")
    for split, info in splits.items():
        table.add_column(f"{split} ({info['subjects']} subj, {info['frames']} fr)", justify="right")
    for au in summary["au_names"]:
        rates = [info["positive_rate"][au] for info in splits.values()]
        table.add_row(au, *("-" if r is None else f"{r:.3f}" for r in rates))
    console.print(table)
