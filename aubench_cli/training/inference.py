"""A trained network applied to crops, and the per-AU decision thresholds chosen on its validation split.

``score_crops`` is the one forward path from uint8 crops to probabilities (``to_float``, the run's
normalization, channels_last, the network, a sigmoid) that ``aubench predict`` and the threshold search both use,
so a video predicted and the validation frames the thresholds came from go through the same code, in float32 on
any device (``device.inference_precision``: no autocast, no TF32), whatever precision the run trained in.

``store_val_thresholds`` runs a run's checkpoints over every frame of its validation split and keeps, per AU, the
threshold that maximises F1 of ``p >= t`` over the known labels (``f1_threshold``); it writes them into the run
as ``thresholds.json``, keyed by checkpoint and stamped with the checkpoint file's SHA-256, together with the
cache's AU list and crop settings (what ``predict`` checks its own crops against, without needing the cache).
The trainer calls it once at the end of a run, ``aubench eval`` when the file is missing or stale.

``load_checkpoint`` reads the checkpoint files the trainer writes (``CHECKPOINT_VERSION``); it lives here, below
the trainer, so that the dependency runs one way: the trainer imports this module, never the reverse.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aubench_cli import __version__
from aubench_cli.device import inference_precision
from aubench_cli.errors import UsageError
from aubench_cli.fileio import atomic_write_text
from aubench_cli.models import create_model
from aubench_cli.training.transforms import FeatureStats, normalize, to_float

THRESHOLDS_FILE = "thresholds.json"
THRESHOLDS_FORMAT = "aubench-thresholds"
THRESHOLDS_VERSION = 1
CHECKPOINTS = ("best", "last")


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 of a checkpoint file (hex): what a prediction or a threshold was made with."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class RunModel:
    """A checkpoint's network, ready for inference on CPU, with what it needs to read crops."""

    model: nn.Module
    arch: str
    au_names: list[str]
    norm: str
    stats: FeatureStats
    epoch: int


CHECKPOINT_VERSION = 1  # what ``load_checkpoint`` reads and the trainer writes


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint file written by the trainer, on the CPU; UsageError (with the fix) when missing, damaged or
    of another version."""
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}", "is this a run directory written by aubench train?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise UsageError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}",
                         "the file is damaged; resume from the other checkpoint or retrain") from exc
    if state.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise UsageError(f"checkpoint {path} has version {state.get('checkpoint_version')}, this aubench reads "
                         f"{CHECKPOINT_VERSION}", "retrain with this version of aubench")
    return state


def load_run_model(path: str | Path, device: torch.device | str = "cpu") -> RunModel:
    """The network of one checkpoint file (``best.pt`` / ``last.pt``) in eval mode, channels_last."""
    state = load_checkpoint(Path(path))
    return run_model_from_state(state, device)


def run_model_from_state(state: dict[str, Any], device: torch.device | str = "cpu") -> RunModel:
    au_names = list(state["au_names"])
    model = create_model(state["arch"], len(au_names))
    model.load_state_dict(state["model"])
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    return RunModel(model, state["arch"], au_names, state["norm"], FeatureStats(**state["norm_stats"]),
                    int(state.get("epoch", 0)))


def score_crops(run: RunModel, crops: np.ndarray) -> np.ndarray:
    """(n, 96, 96) uint8 crops -> (n, K) float32 probabilities, one forward pass under inference_mode, in
    float32."""
    if len(crops) == 0:
        return np.zeros((0, len(run.au_names)), np.float32)
    device = next(run.model.parameters()).device
    with torch.inference_mode(), inference_precision(device, "fp32"):
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(device)
        x = normalize(to_float(x), run.norm, run.stats).contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(run.model(x).float()).cpu().numpy()


def score_frames(run: RunModel, images: Any, index: np.ndarray, batch: int = 512) -> np.ndarray:
    """Probabilities for the frames ``index`` of a cache's images (in that order), ``batch`` at a time."""
    out = [score_crops(run, np.asarray(images[index[i:i + batch]])) for i in range(0, len(index), batch)]
    return np.concatenate(out) if out else np.zeros((0, len(run.au_names)), np.float32)


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float | None]:
    """The threshold ``t`` maximising F1 of ``scores >= t`` against ``labels`` (1 / 0; -1 unknown is ignored).

    Every cut between two distinct scores is tried; ``t`` is the midpoint between the lowest score called
    positive and the next lower one (0 below the lowest), the highest such cut when several give the same F1.
    Returns (t, its F1); (0.5, None) when there is no known positive.
    """
    known = labels >= 0
    s = np.asarray(scores, dtype=np.float64)[known]
    y = np.asarray(labels)[known] == 1
    positives = int(y.sum())
    if positives == 0:
        return 0.5, None
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    f1 = 2.0 * tp / (tp + fp + positives)  # 2TP / (2TP + FP + FN), FN = positives - TP
    cut = np.r_[s[1:] != s[:-1], True]  # a threshold can only fall between two different scores
    f1 = np.where(cut, f1, -1.0)
    k = int(np.argmax(f1))  # the first maximum: the highest threshold among equals
    below = s[k + 1] if k + 1 < len(s) else 0.0
    return float((s[k] + below) / 2.0), float(f1[k])


def f1_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float | None:
    known = labels >= 0
    y = labels[known] == 1
    pred = scores[known] >= threshold
    tp = int((pred & y).sum())
    denom = 2 * tp + int((pred & ~y).sum()) + int((~pred & y).sum())
    return 2.0 * tp / denom if denom else None


def read_thresholds_file(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / THRESHOLDS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("format") != THRESHOLDS_FORMAT:
        return None
    return data


def store_val_thresholds(run_dir: str | Path, cache: Any, labels: np.ndarray, val_index: np.ndarray,
                         device: torch.device | str = "cpu", checkpoints: tuple[str, ...] = CHECKPOINTS,
                         only_missing: bool = False, batch: int = 512) -> dict[str, Any]:
    """Choose and store per-AU F1-maximising thresholds of the run's checkpoints on its validation frames.

    ``labels``: (N, K) over the whole cache in the run's AU order; ``val_index``: the validation frames.
    ``only_missing``: leave checkpoints whose stored thresholds match the file's digest alone. Returns the file.
    """
    run_dir = Path(run_dir)
    stored = read_thresholds_file(run_dir) or {}
    entries: dict[str, Any] = dict(stored.get("checkpoints", {}))
    scored: dict[str, tuple[str, dict[str, Any]]] = {}  # model weights digest -> the entry computed for them
    val_index = np.asarray(val_index)
    for which in checkpoints:
        path = run_dir / f"{which}.pt"
        if not path.is_file():
            continue
        digest = checkpoint_digest(path)
        if only_missing and entries.get(which, {}).get("sha256") == digest:
            continue
        state = load_checkpoint(path)
        weights = hashlib.sha256(b"".join(t.cpu().numpy().tobytes() for t in state["model"].values())).hexdigest()
        if weights in scored:  # last.pt holds the same network as best.pt: no second pass over the split
            entries[which] = {**scored[weights], "sha256": digest}
            continue
        run = run_model_from_state(state, device)
        scores = score_frames(run, cache.images, val_index, batch)
        per_au: dict[str, Any] = {"thresholds": {}, "f1": {}, "f1_at_0.5": {}, "positives": {}}
        for k, au in enumerate(run.au_names):
            col = labels[val_index, k]
            t, f1 = f1_threshold(scores[:, k], col)
            per_au["thresholds"][au] = t
            per_au["f1"][au] = f1
            per_au["f1_at_0.5"][au] = f1_at(scores[:, k], col, 0.5)
            per_au["positives"][au] = int((col == 1).sum())
        entry = {"sha256": digest, "epoch": int(state.get("epoch", 0)), "frames": int(len(val_index)), **per_au}
        scored[weights] = entry
        entries[which] = entry
    header = getattr(cache, "header", {}) or {}
    # the crops the run was trained on: recorded once (a cache rebuilt later must not overwrite the record)
    record = stored.get("cache") or {"path": str(getattr(cache, "path", "")), "created": header.get("created"),
                                      "au_names": header.get("au_names"), "settings": header.get("settings")}
    data = {
        "format": THRESHOLDS_FORMAT, "format_version": THRESHOLDS_VERSION, "aubench_version": __version__,
        "rule": "per AU, the threshold maximising F1 of p >= t over the validation split's known labels "
                "(midpoint between adjacent scores)",
        "split": "val",
        "cache": record,
        "checkpoints": entries,
    }
    atomic_write_text(run_dir / THRESHOLDS_FILE, json.dumps(data, indent=2))
    return data


def val_thresholds(run_dir: str | Path, which: str, digest: str) -> dict[str, float]:
    """The stored validation thresholds of checkpoint ``which``; UsageError when missing or made for another file."""
    run_dir = Path(run_dir)
    data = read_thresholds_file(run_dir)
    entry = (data or {}).get("checkpoints", {}).get(which)
    hint = (f"'aubench eval {run_dir} --checkpoint {which}' computes them on the run's validation split; "
            "or use --threshold 0.5")
    if entry is None:
        raise UsageError(f"run {run_dir} has no validation thresholds for its {which} checkpoint", hint)
    if entry.get("sha256") != digest:
        raise UsageError(f"the validation thresholds of run {run_dir} were chosen for another {which}.pt "
                         "(the checkpoint changed since)", hint)
    return {au: float(t) for au, t in entry["thresholds"].items()}
