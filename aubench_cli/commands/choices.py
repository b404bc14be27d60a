"""Options with a fixed set of values, as Enums: Typer validates them, lists them in --help and completes them.

The values mirror the library's registries (sampling.BALANCING, transforms.NORMALIZATIONS / AUGMENTATIONS,
data.labels.LAYOUTS, studies.report.FORMATS / LAYOUTS); tests/test_cli.py checks that they stay equal. They are spelt out
here so that building the CLI does not import torch.
"""

from __future__ import annotations

from enum import Enum


class Split(str, Enum):
    test = "test"
    val = "val"
    train = "train"
    all = "all"


class Checkpoint(str, Enum):
    best = "best"
    last = "last"


class Precision(str, Enum):
    fp32 = "fp32"
    bf16 = "bf16"


class CiUnit(str, Enum):
    subject = "subject"
    video = "video"
    frame = "frame"


class Balance(str, Enum):
    oversample = "oversample"
    undersample = "undersample"
    random = "random"
    cost = "cost"


class Norm(str, Enum):
    raw = "raw"
    sample_center = "sample-center"
    sample_norm = "sample-norm"
    feature_center = "feature-center"
    feature_norm = "feature-norm"


class Aug(str, Enum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"


class Optimizer(str, Enum):
    adagrad = "adagrad"
    adam = "adam"
    sgd = "sgd"


class CudaGraphs(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class ReportFormat(str, Enum):
    md = "md"
    csv = "csv"
    html = "html"
    tex = "tex"


class ReportLayout(str, Enum):
    paper = "paper"
    literature = "literature"


class Layout(str, Enum):
    generic = "generic"
    disfa = "disfa"
    bp4d = "bp4d"
    affwild2 = "affwild2"


class InputFormat(str, Enum):
    auto = "auto"
    generic = "generic"
    disfa = "disfa"
    bp4d = "bp4d"
    affwild2 = "affwild2"


DEVICES = ("auto", "cpu", "cuda", "cuda:0", "cuda:1", "cuda:2", "cuda:3")


def complete_device(incomplete: str) -> list[str]:
    """Shell completion for --device, which also takes any cuda:N (validated by device.resolve_device)."""
    return [d for d in DEVICES if d.startswith(incomplete)]


def value(choice: Enum | None) -> str | None:
    """The plain string of an Enum choice (None stays None)."""
    return None if choice is None else str(choice.value)


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"
