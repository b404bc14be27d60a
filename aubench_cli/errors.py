"""Domain errors: problems a person can fix, raised by library code and rendered once by the CLI boundary.

Every error carries what went wrong (``message``) and what would be right (``hint``). ``UsageError`` is for
bad usage or input (exit code 2); ``AubenchError`` itself for failures while doing the work (exit code 1).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class AubenchError(Exception):
    """A failure a user can act on; exit code 1."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(AubenchError):
    """Bad usage or input (unknown name, malformed option, unreadable file); exit code 2."""

    exit_code = 2


def debug_enabled() -> bool:
    """``AUBENCH_DEBUG=1``: let tracebacks through the CLI's error boundary."""
    return os.environ.get("AUBENCH_DEBUG", "") not in ("", "0")


def suggest(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest valid choices to ``name``, or all of them when none is close."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "valid choices: " + ", ".join(choices)
