"""Rendering shared by the commands: JSON on stdout for machines, Rich tables for people, notes on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn

# Tables are wide (Table I has 11 columns with --paper): when stdout is a file or a pipe, don't squeeze them
# into 80 columns.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False)
# after a run's first epoch, the rest of its time is said when it is at least this long (seconds)
PACE_NOTE_MIN_S = 60.0


def progress(*columns: str | ProgressColumn, transient: bool = True) -> Progress:
    """A Rich progress bar on stderr; off when stderr is not a terminal, so logs and pipes stay clean."""
    return Progress(*columns, console=stderr, transient=transient, disable=not stderr.is_terminal)


def say(bar: Progress, line: str, markup: bool = True) -> None:
    """A line on stderr beside a progress bar: above it while it is live, plainly when it is off."""
    (stderr if bar.disable else bar.console).print(line, markup=markup)


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (no Rich markup or wrapping), so ``| jq`` always works."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")
    sys.stdout.flush()


def human(n: float | int | None, unit: str = "") -> str:
    """12_345_678 -> '12.3M'."""
    if n is None:
        return "-"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{suffix}{unit}"
    return f"{n:g}{unit}"


def kilo(n: int) -> str:
    """Parameters as the paper prints them: 3,649K."""
    return f"{n / 1e3:,.0f}K"


def mega(n: int) -> str:
    """FLOPs as the paper prints them: 1,102.7M."""
    return f"{n / 1e6:,.1f}M"


def signed_pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.2f}%"


def duration(seconds: float) -> str:
    """42 -> '42 s', 200 -> '3.3 min', 108000 -> '30.0 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def pace_note(first_epoch_s: float, remaining: int, device: str,
              shorten: str = "--epochs 10 --batches-per-epoch 50") -> str | None:
    """After a run's first epoch: how long the rest of it takes at its pace; on a CPU, where that is hours (the
    paper's protocol is sized for a GPU), how to take a first look sooner (``shorten``: the command's options)."""
    rest = first_epoch_s * remaining
    if remaining <= 0 or rest < PACE_NOTE_MIN_S:  # nothing left, or a short run: the bar says enough
        return None
    rest_of_run = "the last epoch takes" if remaining == 1 else f"the other {remaining} epochs take"
    note = f"at this pace ({duration(first_epoch_s)} for the first epoch) {rest_of_run} about {duration(rest)}"
    if device.startswith("cpu") and rest > 3600:
        note += ("; the paper's protocol is sized for a GPU: for a first look on this CPU shorten it "
                 f"(e.g. {shorten}), or run aubench demo")
    return note
