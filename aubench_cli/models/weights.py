"""Loading weights into a network: a local file (``--weights``) or a library's registry (``--pretrained``).

The classifier is always replaced: the paper swaps the last fully-connected layer for one with an output per AU
and fine-tunes from the rest. Loading reports which tensors were loaded, which the network kept from its own
init (missing), which the file had that the network does not use (unexpected) and the replaced classifier; a
shape mismatch outside the classifier is an error naming the tensors. Registry weights are read from the
library's cache when present; offline, ``--pretrained`` fails fast and says which file to pass instead.
"""

from __future__ import annotations

import pickle
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aubench_cli.errors import AubenchError, UsageError
from aubench_cli.models import get_model_info

# Prefixes other tools put on state-dict keys: DataParallel/DDP ("module."), torch.compile ("_orig_mod.").
_STRIP_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.loaded)} tensors loaded, {len(self.missing)} missing (kept from init), "
            f"{len(self.unexpected)} unexpected (ignored), classifier replaced ({len(self.replaced)} tensors)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": len(self.loaded), "missing": self.missing,
                "unexpected": self.unexpected, "replaced": self.replaced}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file or an aubench checkpoint (its ``model`` entry)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"weights file {str(path)!r} not found", "pass the path of a .pt/.pth state dict or checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise UsageError(
            f"cannot read weights from {path}: {str(exc).splitlines()[0]}",
            "pass a file written by torch.save(model.state_dict()) or an aubench checkpoint",
        ) from exc
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} holds no state dict", "save one with torch.save(model.state_dict(), PATH)")
    return {_strip(k): v for k, v in obj.items()}


def _strip(key: str) -> str:
    for prefix in _STRIP_PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_into(model: nn.Module, arch: str, state: dict[str, torch.Tensor], source: str) -> LoadReport:
    """Load ``state`` into ``model`` (of architecture ``arch``), replacing its classifier."""
    head = get_model_info(arch).classifier + "."
    own = model.state_dict()
    report = LoadReport(source=source)
    usable: dict[str, torch.Tensor] = {}
    mismatched = []
    for key, tensor in state.items():
        if key.startswith(head):
            continue
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != tensor.shape:
            mismatched.append(f"{key}: file {tuple(tensor.shape)} vs network {tuple(own[key].shape)}")
        else:
            usable[key] = tensor
    if mismatched:
        shown = "; ".join(mismatched[:3]) + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise UsageError(f"weights in {source} do not fit {arch}: {shown}", "pass weights saved from this architecture")
    if not usable:
        raise UsageError(
            f"none of the {len(state)} tensors in {source} match {arch}'s layers",
            "is the file for another network? `aubench models` lists each network's layout source",
        )
    model.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.replaced = sorted(k for k in own if k.startswith(head))
    report.missing = sorted(k for k in own if k not in usable and not k.startswith(head))
    return report


def load_weights_file(model: nn.Module, arch: str, path: str | Path) -> LoadReport:
    return load_into(model, arch, read_state_dict(path), str(path))


def registry_state_dict(arch: str, timeout: float = 10.0) -> tuple[dict[str, torch.Tensor], str]:
    """The library registry's pretrained weights for ``arch`` (cached download), or a clear error offline."""
    info = get_model_info(arch)
    if not info.pretrained_source:
        hint = info.local_weights_note or f"the paper trained {arch} from random init: drop --pretrained"
        raise UsageError(f"no library registry has pretrained weights for {arch}", hint)
    library, name = info.pretrained_source.split(":", 1)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # fail fast offline instead of hanging on a connect
    try:
        if library == "torchvision":
            import torchvision.models as tvm

            enum_name, member = name.split(".")
            weights = getattr(tvm, enum_name)[member]
            state = weights.get_state_dict(progress=False, check_hash=False)
            where = weights.url
        else:
            import timm

            state = timm.create_model(name, pretrained=True).state_dict()
            where = f"timm {name}"
    except Exception as exc:  # noqa: BLE001  (any download failure means the same to the user)
        raise AubenchError(
            f"could not fetch pretrained weights for {arch} from {library} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no network'})",
            f"offline? download {name} on a connected machine, save its state_dict and pass it with --weights FILE",
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return {_strip(k): v for k, v in state.items()}, where


def load_pretrained(model: nn.Module, arch: str) -> LoadReport:
    state, where = registry_state_dict(arch)
    return load_into(model, arch, state, where)
