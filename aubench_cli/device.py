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
