"""What a study needs to know of each network without importing torch: its per-image costs as a function of the
number of outputs K, and whether the paper trained it from scratch.

A dry run or a submission of a study only plans: importing torch, torchvision and timm and tracing 11 networks
with fvcore to learn their FLOPs took most of its time (seconds to a minute). The figures are exactly linear in K
(only the classifier grows: ``in_features`` weights and one bias per output, one multiply-add and one activation
per output), so ``catalog.json`` stores, per network, the costs at K = 1 and the growth per output, written by
``python -m aubench_cli.studies.catalog`` from the live registry and ``profiling.count_costs``;
``tests/test_launcher.py`` checks it against the live figures, so a change of a network that is not written back
fails the suite. A network not in the file (a user's own registration) falls back to live counting.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

CATALOG = Path(__file__).with_name("catalog.json")
FIELDS = ("flops", "params", "memory_mb")


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    try:
        return json.loads(CATALOG.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def known(arch: str) -> bool:
    return arch in _table()


def costs(arch: str, outputs: int) -> dict[str, Any]:
    """Per-image FLOPs, params and memory (MB) of ``arch`` with ``outputs`` logits, from the table."""
    row = _table()[arch]
    out = {f: row["at1"][f] + (outputs - 1) * row["per_output"][f] for f in FIELDS}
    out["flops"], out["params"] = int(out["flops"]), int(out["params"])
    out["memory_mb"] = round(out["memory_mb"], 4)
    return out


def from_scratch(arch: str) -> bool | None:
    row = _table().get(arch)
    return None if row is None else bool(row["from_scratch"])


def local_weights_note(arch: str) -> str:
    return str((_table().get(arch) or {}).get("local_weights_note", ""))


def live_row(arch: str) -> dict[str, Any]:
    """The table's row for ``arch``, measured now (imports torch, traces the network twice)."""
    from aubench_cli.models import create_model, get_model_info
    from aubench_cli.profiling import count_costs

    def measure(k: int) -> dict[str, float]:
        c = count_costs(create_model(arch, k))
        return {"flops": c.flops, "params": c.params, "memory_mb": c.memory_mb}

    one, two = measure(1), measure(2)
    info = get_model_info(arch)
    return {"at1": one, "per_output": {f: round(two[f] - one[f], 9) for f in FIELDS}, "from_scratch": info.from_scratch,
            "local_weights_note": info.local_weights_note}


def write() -> Path:
    from aubench_cli.fileio import atomic_write_text
    from aubench_cli.models import list_models

    table = {arch: live_row(arch) for arch in list_models()}
    atomic_write_text(CATALOG, json.dumps(table, indent=1) + "\n")
    _table.cache_clear()
    return CATALOG


if __name__ == "__main__":
    print(f"wrote {write()}")
