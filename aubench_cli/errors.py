"""Domain errors: problems a person can fix, raised by library code and rendered once by the CLI boundary.

Every error carries what went wrong (``message``) and what would be right (``hint``). ``UsageError`` is for
bad usage or input (exit code 2); ``AubenchError`` itself for failures while doing the work (exit code 1).
"""

from __future__ import annotations

import difflib
import errno
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


# errno -> (why, in words; what to do; exit code). A path the user chose that we may not write is bad usage (2);
# a full disk is a failure while doing the work (1).
_OS_ERRORS = {
    errno.EACCES: ("permission denied", "make it writable, or choose another --out", 2),
    errno.EPERM: ("operation not permitted", "make it writable, or choose another --out", 2),
    errno.EROFS: ("read-only file system", "choose an --out on a writable disk", 2),
    errno.ENOSPC: ("no space left on the device", "free space on that disk, or choose an --out on another", 1),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota, or choose an --out on another disk", 1),
    errno.ENAMETOOLONG: ("the path is too long", "choose a shorter --out or run name", 2),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another --out", 2),
    errno.EISDIR: ("it is a folder", "choose another --out", 2),
    errno.ENOENT: ("a folder on the path does not exist (removed while running?)", "check the path and re-run", 2),
}


def from_os_error(exc: OSError) -> AubenchError:
    """One line for a file-system error the library let through: what could not be written, why, what to do.

    Exit code 2 for a path the user chose (permission, read-only, name), 1 for a full disk or any other failure."""
    why, fix, code = _OS_ERRORS.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and re-run", 1))
    target = exc.filename if exc.filename is not None else None
    if target is not None:
        target = os.fsdecode(target)
        verb = "write"
        name = os.path.basename(target.rstrip("/"))
        if exc.errno in (errno.EACCES, errno.EPERM) and os.path.exists(target) and not os.access(target, os.R_OK):
            verb, fix = "read", "make it readable, or give another path"
        elif os.path.isdir(target):
            verb = "write in"
        elif not os.path.exists(target) and name.startswith(".") and os.path.isdir(os.path.dirname(target) or "."):
            verb, target = "write in", os.path.dirname(target) or "."  # our hidden temp file: name its folder
        elif not os.path.exists(target) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            verb = "create"
        where = f"{target}" + (f" -> {exc.filename2}" if getattr(exc, "filename2", None) else "")
        message = f"cannot {verb} {where}: {why}"
    else:
        message = f"a file operation failed: {why}"
    err = AubenchError(message, fix)
    err.exit_code = code
    return err


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


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``: a count with its noun in the right number (messages never say '1 videos')."""
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
