"""The device helpers every layer may use: ``auto`` picks CUDA when present; the numeric precision of inference
(``inference_precision``: float32 unless bf16 is asked for); glibc's handling of large host blocks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from aubench_cli.errors import UsageError

# Evaluation and predict: fp32 by default, so a checkpoint scores the same on a CPU and a GPU up to the order of
# sums; bf16 (autocast) when asked, for speed on GPUs, at the cost of logits rounded to 8 significant bits.
PRECISIONS = ("fp32", "bf16")


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


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}", "use fp32 (the default) or bf16")
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The dtype inference autocasts to on any device (None: none, float32 throughout)."""
    return torch.bfloat16 if check_precision(precision) == "bf16" else None


@contextlib.contextmanager
def inference_precision(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """Run the forward passes inside in ``precision`` on ``device``.

    ``fp32``: float32 throughout, autocast off and, on CUDA, TF32 off for convolutions and matrix products (cuDNN
    convolutions use TF32 by default: 10 mantissa bits), restored afterwards; the CPU and a GPU then agree up to
    the order of sums. ``bf16``: autocast to bfloat16 on the device (faster on GPUs; logits keep 8 significant
    bits, so frames near the threshold can flip and AUC sees ties)."""
    device_type = torch.device(device).type
    dtype = autocast_dtype(precision)
    if dtype is not None:
        with torch.autocast(device_type, dtype=dtype):
            yield
        return
    with contextlib.ExitStack() as stack:
        if device_type in ("cpu", "cuda"):
            stack.enter_context(torch.autocast(device_type, enabled=False))
        if device_type == "cuda":  # CUDA only
            stack.enter_context(_ieee_float32())
        yield


@contextlib.contextmanager
def _ieee_float32() -> Iterator[None]:
    """cuDNN convolutions and CUDA matrix products in IEEE float32 (no TF32) inside, as they were after. torch 2.9
    added per-operator flags and refuses a mix of those and the older ``allow_tf32`` ones: use the newer where
    they exist."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(cudnn_conv, "fp32_precision"):
        flags = [(cudnn_conv, "fp32_precision", "ieee"), (torch.backends.cuda.matmul, "fp32_precision", "ieee")]
    else:
        flags = [(torch.backends.cudnn, "allow_tf32", False), (torch.backends.cuda.matmul, "allow_tf32", False)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in flags]
    try:
        for owner, name, value in flags:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


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
