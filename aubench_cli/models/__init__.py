"""The networks of the paper's Table I, behind one registry.

Each family lives in its own file and registers its builders with ``@register_model``; everything that lists
networks (CLI choices, ``profile --all``, presets) reads this registry. Every model takes N x 1 x 96 x 96
grayscale crops and returns N x K logits; 3-channel networks repeat the gray channel inside their ``forward``.
``weights`` loads pretrained weights (a user's file or a library registry) into them. May use the bottom layer
(``config``, ``errors``, ``device``, ``fileio``) and nothing else of aubench: never ``data``, ``training``,
``evaluation`` or ``studies``.
"""

from aubench_cli.models.registry import (
    ModelInfo,
    check_layout,
    create_model,
    get_model_info,
    list_models,
    register_model,
)

# Importing the family modules registers their builders (in the order of the paper's Table I).
from aubench_cli.models import simple as _simple  # noqa: E402,F401  baseline, emonets
from aubench_cli.models import lightcnn as _lightcnn  # noqa: E402,F401
from aubench_cli.models import imagenet as _imagenet  # noqa: E402,F401

__all__ = ["ModelInfo", "check_layout", "create_model", "get_model_info", "list_models", "register_model"]
