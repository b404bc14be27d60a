"""device.keep_host_memory: large CPU blocks come from glibc's heap and are reused, unless the user says otherwise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachefixture import make_cache

from aubench_cli import config as cfgmod

ROOT = Path(__file__).resolve().parents[1]

# In a fresh process: apply (or not), allocate and free a 64 MiB tensor, allocate it again, and report glibc's
# count of bytes in mmap'd blocks while the second one is alive (mallinfo2's hblkhd).
PROBE = r"""
import ctypes, json, sys
import torch
from aubench_cli.device import keep_host_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_host_memory()
t = torch.ones(64 << 20, dtype=torch.uint8); del t
t = torch.ones(64 << 20, dtype=torch.uint8)
print(json.dumps({"applied": applied, "mmapped": libc.mallinfo2().hblkhd}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "AUBENCH_HOST"))}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")


def test_large_blocks_come_from_the_heap_once_applied():
    kept = _probe()
    assert kept["applied"] is True
    assert kept["mmapped"] < 64 << 20  # the 64 MiB block lives in the heap, not in a fresh mapping


def test_the_system_allocator_when_asked_or_when_the_user_tuned_glibc():
    for env in ({"AUBENCH_HOST_ALLOCATOR": "system"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}):
        plain = _probe(**env)
        assert plain["applied"] is False, env
        assert plain["mmapped"] >= 64 << 20, env  # glibc's default: the block is mapped afresh


def test_train_and_eval_apply_it(tmp_path, monkeypatch):
    from aubench_cli.evaluation import evaluate
    from aubench_cli.training import trainer

    calls: list[str] = []
    monkeypatch.setattr(trainer, "keep_host_memory", lambda: calls.append("train") or True)
    monkeypatch.setattr(evaluate, "keep_host_memory", lambda: calls.append("eval") or True)
    cache = make_cache(tmp_path / "c", subjects=6, frames=40)
    cfg = cfgmod.resolve(sets=["train.epochs=1", "train.batches_per_epoch=1", "train.val_batches=1"], options={"data.cache": str(cache)})
    trainer.train(cfg, tmp_path / "run")
    evaluate.evaluate_run(tmp_path / "run", batches=2)
    assert calls == ["train", "eval"]
