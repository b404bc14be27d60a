"""The device helper every layer may use: ``auto`` picks CUDA when present."""

from __future__ import annotations

import torch

from aubench_cli.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; anything else is passed to torch (``cuda:1``, ``cpu``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r}", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but no CUDA GPU is visible", "use --device cpu")
    return device


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_HOST_MEMORY_ENV = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")
_host_memory: dict[str, bool] = {}


def keep_host_memory() -> bool:
    """Ask glibc to serve large blocks from its heap and keep what is freed, for the rest of the process.

    By default glibc maps every block above 32 MiB afresh (``mmap``) and unmaps it when freed, so a CPU training
    step, which frees and re-allocates the same large activations and gradients every step (the baseline's first
    feature map is 113 MiB at batch 96), page-faults and zeroes them again each time: a third of the step on this
    2-core machine (docs/performance.md). Served from the heap, a freed block is reused by the next step. The
    process keeps its high-water mark of memory instead of returning it. Returns whether the setting was applied:
    not on a non-glibc system, when the user set glibc's own ``MALLOC_*`` / ``GLIBC_TUNABLES`` variables (theirs
    win), or with ``AUBENCH_HOST_ALLOCATOR=system``.
    """
    if "applied" in _host_memory:
        return _host_memory["applied"]
    import os
    import sys

    applied = False
    if (sys.platform.startswith("linux") and os.environ.get("AUBENCH_HOST_ALLOCATOR", "") != "system"
            and not any(name in os.environ for name in _HOST_MEMORY_ENV)):
        import ctypes

        try:
            libc = ctypes.CDLL(None)
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # musl or another libc without mallopt
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
            applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    _host_memory["applied"] = applied
    return applied
