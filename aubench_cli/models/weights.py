"""Loading weights into a network: a local file (``--weights``) or a library's registry (``--pretrained``).

The formats published weights really come in all load fully:

- a state dict, an aubench checkpoint (its ``model`` entry) or a training checkpoint holding ``state_dict`` or
  ``model_state_dict`` (the authors' LightCNN releases), with wrapper prefixes stripped in any combination and
  order: ``module.`` (DataParallel / DDP), ``_orig_mod.`` (torch.compile), ``model.`` (Lightning-style wrappers);
- torchvision's published DenseNet checkpoints, whose dense layers use legacy names (``denselayer1.norm.1.weight``)
  that torchvision's own loader renames (``norm1.weight``); so do we;
- VGG-Face files converted from the authors' release (``conv1_1.weight`` ... ``conv5_3``, ``fc6``-``fc8``): the
  convolutions map in order onto ``features.N``, ``fc8`` is the classifier, and ``fc6``/``fc7`` are reported as
  unexpected (our VGG networks end in global pooling and one linear layer, as Table I's parameter count shows).

The classifier is always replaced (the paper swaps the last fully connected layer for one output per AU). A
layer whose shape depends only on the input size (``ModelInfo.size_dependent``: LightCNN's first fully connected
layer, 8x8x128 inputs at the authors' 128x128 and 6x6x128 at 96x96) keeps its init when the file's does not fit,
and is listed as ``reinitialized``. Any other tensor the file leaves at init is ``missing``, and a load with
missing tensors is refused, naming the first few and the likely cause, unless ``allow_partial`` is given.
BatchNorm ``num_batches_tracked`` counters never count as missing (published checkpoints predate them).
"""

from __future__ import annotations

import json
import pickle
import re
import socket
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aubench_cli.errors import AubenchError, UsageError
from aubench_cli.fileio import atomic_write_text
from aubench_cli.models import check_layout, get_model_info

# Prefixes wrappers put on state-dict keys: DataParallel/DDP, torch.compile, Lightning-style ``self.model``.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")
# Checkpoint entries that hold the state dict, looked for in this order.
_STATE_KEYS = ("model", "state_dict", "model_state_dict")
# torchvision's published DenseNet checkpoints: ``denselayerN.norm.1.weight`` for ``denselayerN.norm1.weight``
# (the pattern of torchvision.models.densenet._load_state_dict).
_DENSENET_LEGACY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_VGG_FACE_CONV = re.compile(r"^conv(\d+)_(\d+)\.(weight|bias)$")
_VGG_FACE_FC = re.compile(r"^fc(\d+)\.(weight|bias)$")
_BATCH_COUNTER = "num_batches_tracked"
_SHOWN = 4  # tensors named in a refusal


@dataclass
class LoadReport:
    """What loading a state dict did to a network; ``as_dict`` is ``weights.json`` and ``models --json``."""

    source: str
    arch: str = ""
    loaded: list[str] = field(default_factory=list)  # network tensors set from the file
    missing: list[str] = field(default_factory=list)  # network tensors left at init (refused unless allowed)
    unexpected: list[str] = field(default_factory=list)  # file tensors not used
    replaced: list[str] = field(default_factory=list)  # the network's new classifier
    reinitialized: list[str] = field(default_factory=list)  # size-dependent layers whose file shape did not fit
    conversions: list[str] = field(default_factory=list)  # renamings applied to the file's keys
    params: dict[str, int] = field(default_factory=dict)  # values (parameters and buffers) in each list
    allow_partial: bool = False

    def summary(self) -> str:
        text = (f"{self.source}: {len(self.loaded)} tensors loaded ({self.params.get('loaded', 0):,} values), "
                f"{len(self.missing)} missing (kept from init), {len(self.unexpected)} unexpected (ignored), "
                f"classifier replaced ({len(self.replaced)} tensors)")
        if self.reinitialized:
            text += f", {len(self.reinitialized)} re-initialised (input-size dependent)"
        return text

    def log_lines(self) -> list[str]:
        """The summary, then each non-empty list (names shortened), for a run's log and ``aubench models``."""
        lines = [f"weights: {self.summary()}"]
        lines += [f"weights: {note}" for note in self.conversions]
        for label in ("missing", "reinitialized", "unexpected"):
            keys = getattr(self, label)
            if keys:
                lines.append(f"weights: {label} ({self.params[label]:,} values): {_shorten(keys, 8)}")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "arch": self.arch, "loaded": len(self.loaded), "missing": self.missing,
                "unexpected": self.unexpected, "replaced": self.replaced, "reinitialized": self.reinitialized,
                "params": dict(self.params), "conversions": self.conversions, "allow_partial": self.allow_partial}

    def write_json(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(self.as_dict(), indent=2))


class PartialWeightsError(UsageError):
    """A load that would leave tensors outside the classifier at init; carries the full report."""

    def __init__(self, message: str, hint: str, report: LoadReport):
        super().__init__(message, hint)
        self.report = report


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file or a checkpoint (its ``model``/``state_dict`` entry), prefixes stripped."""
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
    while isinstance(obj, dict) and not _all_tensors(obj):  # checkpoints, possibly nested
        inner = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not obj or not _all_tensors(obj):
        raise UsageError(f"{path} holds no state dict",
                         "save one with torch.save(model.state_dict(), PATH), or a dict with it under 'state_dict'")
    return strip_wrappers(obj)


def _all_tensors(obj: dict) -> bool:
    return all(isinstance(v, torch.Tensor) for v in obj.values())


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``), in any combination and order."""
    out = {}
    for key, value in state.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, stripped = key[len(prefix):], True
        out[key] = value
    return out


def _densenet_legacy_names(state: dict[str, torch.Tensor], model: nn.Module, head: str) -> tuple[dict[str, torch.Tensor], str]:
    renamed, count = {}, 0
    for key, value in state.items():
        match = _DENSENET_LEGACY.match(key)
        if match:
            key, count = match.group(1) + match.group(2), count + 1
        renamed[key] = value
    return renamed, f"renamed {count} legacy DenseNet keys (denselayerN.norm.1 -> norm1, as torchvision does)" if count else ""


def _vgg_face_names(state: dict[str, torch.Tensor], model: nn.Module, head: str) -> tuple[dict[str, torch.Tensor], str]:
    convs = sorted({(int(m.group(1)), int(m.group(2))) for k in state if (m := _VGG_FACE_CONV.match(k))})
    if not convs:
        return state, ""
    targets = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if len(convs) != len(targets):
        raise UsageError(f"the file has {len(convs)} VGG-Face convolutions (convX_Y), the network {len(targets)}",
                         "pass a VGG-16 VGG-Face conversion (conv1_1 ... conv5_3)")
    names = {f"conv{a}_{b}": target for (a, b), target in zip(convs, targets)}
    fcs = sorted({int(m.group(1)) for k in state if (m := _VGG_FACE_FC.match(k))})
    renamed = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if module in names:
            key = f"{names[module]}.{leaf}"
        elif fcs and module == f"fc{fcs[-1]}":  # the last fully connected layer is the classifier
            key = f"{head}.{leaf}"
        renamed[key] = value
    last = f"; fc{fcs[-1]} is the classifier" if fcs else ""
    return renamed, (f"mapped {len(convs)} VGG-Face convolutions conv1_1..conv{convs[-1][0]}_{convs[-1][1]} in order "
                     f"onto {targets[0]}..{targets[-1]}{last}")


# Renamings for the published formats of each network (applied before matching names).
CONVERSIONS = {
    "densenet121": (_densenet_legacy_names,),
    "facevgg": (_vgg_face_names,),
    "vgg16": (_vgg_face_names,),
}


def _under(key: str, module: str) -> bool:
    return key.startswith(module + ".")


def _natural(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _shorten(keys: list[str], n: int) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def plan_load(model: nn.Module, arch: str, state: dict[str, torch.Tensor],
              source: str) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """What loading ``state`` into ``model`` would do, and the tensors it would load; nothing is changed yet."""
    info = get_model_info(arch)
    head = info.classifier
    report = LoadReport(source=source, arch=arch)
    state = strip_wrappers(state)
    for convert in CONVERSIONS.get(arch, ()):
        state, note = convert(state, model, head)
        if note:
            report.conversions.append(note)
    own = model.state_dict()

    # The file's own classifier: its last module under the classifier's name (torchvision's VGG keeps fc6 and
    # fc7 as classifier.0 and .3 before classifier.6: those are unexpected, as VGG-Face's fc6/fc7 are).
    file_head = sorted({k.rpartition(".")[0] for k in state if _under(k, head)}, key=_natural)
    replaced_in_file = file_head[-1] if file_head else None

    usable: dict[str, torch.Tensor] = {}
    mismatched, size_mismatch = [], set()
    for key, tensor in state.items():
        if _under(key, head) and key.rpartition(".")[0] == replaced_in_file:
            continue
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape == tensor.shape:
            usable[key] = tensor
        else:
            module = next((m for m in info.size_dependent if _under(key, m)), None)
            fits_rows = tensor.dim() == own[key].dim() and tensor.shape[0] == own[key].shape[0]
            if module is not None and fits_rows:
                size_mismatch.add(module)  # its input width differs: the file was trained at another size
            else:
                mismatched.append(f"{key}: file {tuple(tensor.shape)} vs network {tuple(own[key].shape)}")
    if mismatched:
        resizable = f" (and {', '.join(info.size_dependent)}, which depends on the input size)" if info.size_dependent else ""
        raise UsageError(
            f"weights in {source} do not fit {arch}: " + "; ".join(mismatched[:3])
            + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else ""),
            f"is the file for another network or variant? only the classifier{resizable} may differ in shape",
        )
    if not usable:
        raise UsageError(
            f"none of the {len(state)} tensors in {source} match {arch}'s layers (the file has "
            f"{_shorten(list(state), 3)}; {arch} expects {_shorten(list(own), 3)})",
            "is the file for another network? docs/architectures.md lists the formats each network accepts",
        )
    for module in size_mismatch:  # all of a re-initialised module keeps its init, never half of it
        for key in [k for k in usable if _under(k, module)]:
            del usable[key]
    for key in own:
        if _under(key, head):
            report.replaced.append(key)
        elif key in usable:
            report.loaded.append(key)
        elif any(_under(key, m) for m in info.size_dependent):
            report.reinitialized.append(key)
        elif not key.endswith(_BATCH_COUNTER):  # published checkpoints predate these counters
            report.missing.append(key)
    for label in ("loaded", "missing", "unexpected", "replaced", "reinitialized"):
        getattr(report, label).sort(key=_natural)
    for label in ("loaded", "missing", "replaced", "reinitialized"):
        report.params[label] = sum(own[k].numel() for k in getattr(report, label))
    report.params["unexpected"] = sum(state[k].numel() for k in report.unexpected)
    return report, usable


def likely_cause(report: LoadReport, arch: str) -> str:
    """A guess at why a file leaves tensors at init, for the refusal message."""
    unexpected = report.unexpected
    if any(_DENSENET_LEGACY.match(k) for k in unexpected):
        return "legacy DenseNet names (denselayerN.norm.1)? only densenet121 renames them"
    if any(_VGG_FACE_CONV.match(k) for k in unexpected):
        return "VGG-Face names (convX_Y)? only facevgg and vgg16 map them"
    for missing in report.missing:
        wrapped = next((k for k in unexpected if k.endswith("." + missing)), None)
        if wrapped:
            return f"an unknown prefix {wrapped[: -len(missing)]!r} on the file's keys? remove it"
    if not unexpected:
        loaded = [k for k in report.loaded if not k.endswith(_BATCH_COUNTER)]
        return (f"the file holds only part of {arch} ({len(loaded)} of {len(loaded) + len(report.missing)} "
                "tensors): a truncated or filtered save?")
    return (f"weights of another network or version? {len(unexpected)} of the file's tensors match no layer "
            f"(e.g. {_shorten(unexpected, 2)})")


def load_into(model: nn.Module, arch: str, state: dict[str, torch.Tensor], source: str,
              allow_partial: bool = False) -> LoadReport:
    """Load ``state`` into ``model`` (of architecture ``arch``), replacing its classifier.

    Refused (``PartialWeightsError``) when tensors outside the classifier and the size-dependent layers would be
    left at init, unless ``allow_partial``.
    """
    report, usable = plan_load(model, arch, state, source)
    report.allow_partial = allow_partial
    if report.missing and not allow_partial:
        n = len(report.missing)
        raise PartialWeightsError(
            f"weights in {source} leave {n} of {arch}'s tensors ({report.params['missing']:,} values) at random "
            f"init: {_shorten(report.missing, _SHOWN)}; likely cause: {likely_cause(report, arch)}",
            "fix the file, or pass --allow-partial-weights (model.allow_partial_weights: true) to fine-tune a "
            f"partly random network; `aubench models {arch} --weights FILE --allow-partial-weights --json` lists all",
            report,
        )
    model.load_state_dict(usable, strict=False)
    return report


def load_weights_file(model: nn.Module, arch: str, path: str | Path, allow_partial: bool = False) -> LoadReport:
    return load_into(model, arch, read_state_dict(path), str(path), allow_partial)


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
            # The published checkpoint as it is (DenseNet's keys legacy): our conversions rename it.
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
    return dict(state), where


def load_pretrained(model: nn.Module, arch: str, allow_partial: bool = False) -> LoadReport:
    state, where = registry_state_dict(arch)
    return load_into(model, arch, state, where, allow_partial)


def choose_layout(arch: str, layout: str | None, pretrained: bool = False, weights_file: bool = False) -> tuple[str | None, str]:
    """The build layout of ``arch`` for a run, and a line for its log ("" when there is nothing to say).

    A layout the user set is kept. Otherwise ``--pretrained`` builds the layout the registry's weights were
    trained in (ResNet50: torchvision's v1.5), and anything else the network's default (ResNet50: the paper's v1).
    """
    if layout is not None:
        return check_layout(arch, layout), ""
    info = get_model_info(arch)
    default = check_layout(arch, None)
    if default is None:
        return None, ""
    if pretrained and info.pretrained_layout:
        return info.pretrained_layout, (
            f"note: {arch} built in layout {info.pretrained_layout}, the layout its {info.pretrained_source} "
            f"weights were trained in (Table I's figures are for {default}; set model.layout={default} to use it)")
    if weights_file and info.pretrained_layout and info.pretrained_layout != default:
        return default, (
            f"note: {arch} built in layout {default} (the paper's); if the weights file holds "
            f"{info.pretrained_source} weights, which were trained in {info.pretrained_layout}, set "
            f"model.layout={info.pretrained_layout}")
    return default, ""
