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


def progress(*columns: str | ProgressColumn, transient: bool = True) -> Progress:
    """A Rich progress bar on stderr; off when stderr is not a terminal, so logs and pipes stay clean."""
    return Progress(*columns, console=stderr, transient=transient, disable=not stderr.is_terminal)


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
