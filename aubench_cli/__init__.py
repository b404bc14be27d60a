"""aubench: benchmark CNNs and training settings for facial Action Unit detection.

The few names a researcher scripts with, loaded on first use (PEP 562) so that ``import aubench_cli`` and
``aubench --help`` stay free of torch::

    import aubench_cli as ab
    cache = ab.open_cache("cache/")
    cfg = ab.Config()                     # or ab.resolve_config("paper-baseline", sets=["train.epochs=2"])
    ab.train(cfg, "runs/baseline")
    ab.evaluate(["runs/baseline", "runs/vgg16"])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "open_cache": ("aubench_cli.data.cache", "open_cache"),
    "create_model": ("aubench_cli.models", "create_model"),
    "list_models": ("aubench_cli.models", "list_models"),
    "train": ("aubench_cli.training.trainer", "train"),
    "evaluate": ("aubench_cli.evaluation.evaluate", "evaluate"),
    "predict": ("aubench_cli.evaluation.predict", "run_predict"),
    "Config": ("aubench_cli.config", "Config"),
    "resolve_config": ("aubench_cli.config", "resolve"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'aubench_cli' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
