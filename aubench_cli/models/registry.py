"""The model registry: one decorated builder per network, with the facts the tool needs about it.

A builder is a function ``build(num_outputs: int, input_size: int = 96[, layout: str]) -> nn.Module`` named as
the network. ``ModelInfo`` records what the paper did with the network (trained from scratch with Adagrad or
fine-tuned with Adam), its input channels, the dotted name of its final classifier layer (replaced when weights
are loaded), the layers whose shape depends on the input size (re-initialised when a file was trained at another
size), its build layouts if it has several (ResNet50: v1, v1.5), and where pretrained weights come from.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from aubench_cli.errors import UsageError, suggest


Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Builder
    title: str  # as the paper's Table I names it
    column: int  # the network's column in the paper's Table I; lists follow it
    in_chans: int  # 1: takes the grayscale crop; 3: repeats it to RGB inside forward (the paper's 3-channel nets)
    from_scratch: bool  # True: random init, Adagrad lr 0.005; False: pretrained, fine-tuned with Adam lr 1e-4
    classifier: str  # dotted module name of the final Linear layer
    # Where pretrained weights come from: "torchvision:<WeightsEnum member>", "timm:<model.tag>", or "" when
    # they exist only as a user's local file (LightCNN, VGG-Face) or the paper trained from scratch.
    pretrained_source: str = ""
    local_weights_note: str = ""
    # Modules whose weight shape depends only on the input size (LightCNN's first fully connected layer): a file
    # trained at another size loads everything else, and these keep their init, listed as "reinitialized".
    size_dependent: tuple[str, ...] = ()
    # Build layouts (``model.layout``), the first being the default; ``pretrained_layout`` is the one the library
    # registry's weights were trained in, built for --pretrained unless the user set a layout.
    layouts: tuple[str, ...] = ()
    pretrained_layout: str = ""

    @property
    def optimizer(self) -> str:
        return "adagrad" if self.from_scratch else "adam"

    @property
    def lr(self) -> float:
        return 0.005 if self.from_scratch else 1e-4


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    title: str,
    column: int,
    in_chans: int,
    from_scratch: bool,
    classifier: str,
    pretrained_source: str = "",
    local_weights_note: str = "",
    size_dependent: tuple[str, ...] = (),
    layouts: tuple[str, ...] = (),
    pretrained_layout: str = "",
) -> Callable[[Builder], Builder]:
    """Register a builder under its function name; a duplicate name is a programming error."""

    def decorate(builder: Builder) -> Builder:
        name = builder.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            title=title,
            column=column,
            in_chans=in_chans,
            from_scratch=from_scratch,
            classifier=classifier,
            pretrained_source=pretrained_source,
            local_weights_note=local_weights_note,
            size_dependent=size_dependent,
            layouts=layouts,
            pretrained_layout=pretrained_layout,
        )
        return builder

    return decorate


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a glob pattern, in the order of the paper's Table I."""
    infos = sorted(_REGISTRY.values(), key=lambda info: info.column)
    return [info.name for info in infos if fnmatch.fnmatch(info.name, pattern)]


def get_model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown architecture {name!r}", suggest(name, _REGISTRY)) from None


def check_layout(name: str, layout: str | None) -> str | None:
    """The layout ``name`` is built in: ``layout`` checked against the network's, or its default (None: it has one)."""
    info = get_model_info(name)
    if not info.layouts:
        if layout is not None:
            with_layouts = [n for n in list_models() if _REGISTRY[n].layouts]
            raise UsageError(f"{name} is built in one layout only; model.layout={layout} does not apply to it",
                             f"drop model.layout (it applies to {', '.join(with_layouts)})")
        return None
    if layout is None:
        return info.layouts[0]
    if layout not in info.layouts:
        raise UsageError(f"unknown layout {layout!r} for {name}", f"use one of: {', '.join(info.layouts)}")
    return layout


def create_model(name: str, num_outputs: int = 12, input_size: int = 96, layout: str | None = None) -> nn.Module:
    """Build a network by name with ``num_outputs`` logits (random init; see ``weights`` for loading).

    ``layout`` picks one of the network's build layouts (``ModelInfo.layouts``); None builds its default.
    """
    info = get_model_info(name)
    layout = check_layout(name, layout)
    if num_outputs < 1:
        raise UsageError(f"a network needs at least one output, got {num_outputs}", "pass the number of AUs")
    if input_size < 32:
        raise UsageError(f"input size {input_size} is too small", "the paper uses 96 (32 is the least every network takes)")
    model = info.builder(num_outputs, input_size) if layout is None else info.builder(num_outputs, input_size, layout)
    model.aubench_arch = name  # type: ignore[assignment]
    model.aubench_layout = layout  # type: ignore[assignment]
    return model
