"""Evaluation as the paper did it (3000 balanced test batches, per-AU accuracy) plus what the field reports.

Every frame of the split goes through the network once, in large batches; the balanced test batches (4 + 4 per AU,
fixed by the seed, so every model is tested on the same frames) then index those predictions. Per AU: accuracy
at 0.5 over its own frames of the batches (Tables I and II) with a 95 % Wilson interval; beyond the paper, F1,
AUC and the positive rate over the whole split at its natural distribution. Several runs evaluated on the same
cache and seed share their batches, so their decisions are paired: McNemar's exact test says which
differences are significant.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aubench_cli import config as cfgmod
from aubench_cli.errors import UsageError
from aubench_cli.models import create_model
from aubench_cli.device import resolve_device
from aubench_cli.training.sampling import BalancedSampler, build_pools, check_balanceable
from aubench_cli.fileio import atomic_write_text
from aubench_cli.training.inference import store_val_thresholds
from aubench_cli.training.trainer import load_checkpoint
from aubench_cli.training.transforms import FeatureStats, normalize, to_float

EVAL_STREAM = 7  # the random stream of test batches: np.random.default_rng([seed, 7])
Z95 = 1.959963984540054
ProgressFn = Callable[[int, int], None]


def latest_run(root: str | Path = "runs") -> Path:
    root = Path(root)
    runs = [p for p in root.glob("*") if (p / "best.pt").is_file()] if root.is_dir() else []
    if not runs:
        raise UsageError(f"no finished run under {root}/", "train one with aubench train, or name the run directory")
    return max(runs, key=lambda p: (p / "best.pt").stat().st_mtime)


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (stays inside [0, 1], sane at 0 or n successes)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test on paired decisions: only the discordant pairs matter."""
    from scipy.stats import binomtest

    b = int(np.sum(a_correct & ~b_correct))  # A right, B wrong
    c = int(np.sum(~a_correct & b_correct))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only": b, "b_only": c, "p_value": p}


def natural_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """F1 at 0.5, AUC and rates over every known label of the split (its natural distribution)."""
    from sklearn.metrics import f1_score, roc_auc_score

    known = labels >= 0
    y, s = labels[known], scores[known]
    out: dict[str, float | None] = {"frames": int(known.sum()), "positive_rate": float(y.mean()) if len(y) else None,
                                    "predicted_rate": float((s > 0.5).mean()) if len(y) else None}
    out["f1"] = float(f1_score(y, s > 0.5, zero_division=0)) if len(y) else None
    out["auc"] = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
    return out


def _load(run: Path, which: str) -> dict[str, Any]:
    if which not in ("best", "last"):
        raise UsageError(f"--checkpoint must be best or last, got {which!r}", "e.g. --checkpoint best")
    if not run.is_dir():
        raise UsageError(f"run directory {run} not found", "name a directory written by aubench train")
    return load_checkpoint(run / f"{which}.pt")


def _scores(model: torch.nn.Module, images: Any, index: np.ndarray, norm: str, stats: FeatureStats,
            device: torch.device, batch: int, progress: ProgressFn | None) -> np.ndarray:
    """Sigmoid outputs for the frames ``index`` (in that order), in large batches under inference_mode."""
    cuda = device.type == "cuda"
    model = model.to(memory_format=torch.channels_last)  # faster on CUDA and on the CPUs measured (performance.md)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    out = []
    with torch.inference_mode(), autocast:
        for start in range(0, len(index), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[index[start:start + batch]]))
            if cuda:
                chunk = chunk.pin_memory()
            x = normalize(to_float(chunk.to(device, non_blocking=True)), norm, stats)
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(torch.sigmoid(model(x).float()).cpu())
            if progress:
                progress(min(start + batch, len(index)), len(index))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def evaluate_run(
    run: str | Path,
    *,
    cache: str | Path | None = None,
    split: str = "test",
    batches: int = 3000,
    seed: int = 0,
    checkpoint: str = "best",
    device: str = "auto",
    batch_size: int = 512,
    write: bool = True,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Evaluate one run; returns (and writes as eval.json / eval.csv) its result, with per-frame decisions kept
    in memory under ``_decisions`` for paired comparisons."""
    from aubench_cli.data.cache import open_cache
    from aubench_cli.data.splits import check_held_out

    run = Path(run)
    state = _load(run, checkpoint)
    cfg = cfgmod.from_dict(state["config"])
    au_names: list[str] = list(state["au_names"])
    cache_path = Path(cache) if cache else Path(cfg.data.cache)
    data = open_cache(cache_path)
    missing = [au for au in au_names if au not in data.au_names]
    if missing:
        raise UsageError(
            f"cache {cache_path} has no labels for {', '.join(missing)}, which run {run.name} predicts "
            f"(cache AUs: {', '.join(data.au_names)})",
            "evaluate on a cache preprocessed from a dataset with the same AUs",
        )
    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split {split!r}", "use test, val or train")
    if batches < 1:
        raise UsageError(f"--batches must be at least 1, got {batches}", "the paper uses 3000")
    columns = [data.au_names.index(au) for au in au_names]
    labels = np.ascontiguousarray(data.labels[:, columns])
    index = data.indices(split)
    check_held_out(run, data, split, index)  # no subject it tests may be one the run trained or validated on
    bad = check_balanceable(labels, index, au_names, split)
    if bad:
        raise UsageError(f"the {split} split has no positive or no negative frame for {', '.join(bad)}",
                         "evaluate on a split where every AU occurs and is absent")

    torch_device = resolve_device(device)
    model = create_model(state["arch"], len(au_names), layout=cfg.model.layout)  # the run's build layout
    model.load_state_dict(state["model"])
    model = model.to(torch_device).eval()
    stats = FeatureStats(**state["norm_stats"])
    scores = _scores(model, data.images, index, state["norm"], stats, torch_device, batch_size, progress)
    position = np.full(len(data.labels), -1, dtype=np.int64)
    position[index] = np.arange(len(index))

    # The paper's test: balanced batches, fixed by the seed, indexing the split's predictions.
    sampler = BalancedSampler(build_pools(labels, index))
    rng = np.random.default_rng([seed, EVAL_STREAM])
    drawn = np.stack([sampler.draw(rng)[0] for _ in range(batches)])  # (batches, 8K)
    digest = hashlib.sha1(np.ascontiguousarray(drawn).tobytes()).hexdigest()[:16]  # same digest, same frames
    targets = sampler.targets  # (8K, K): 1/0 for the AU owning the row, -1 elsewhere
    rows, aus = np.nonzero(targets >= 0)  # each AU's own 8 rows of a batch
    frames = drawn[:, rows]  # (batches, 8K) frames; column j belongs to AU aus[j]
    pred = scores[position[frames], aus] > 0.5
    truth = targets[rows, aus] == 1
    correct = pred == truth  # (batches, 8K)

    per_au: dict[str, dict[str, Any]] = {}
    decisions: dict[str, np.ndarray] = {}
    for k, au in enumerate(au_names):
        own = correct[:, aus == k].reshape(-1)
        n, c = own.size, int(own.sum())
        lo, hi = wilson(c, n)
        per_au[au] = {"accuracy": c / n, "ci95": [lo, hi], "n": n,
                      **natural_metrics(scores[:, k], labels[index, k])}
        decisions[au] = own
    all_decisions = np.concatenate(list(decisions.values()))
    lo, hi = wilson(int(all_decisions.sum()), all_decisions.size)
    result: dict[str, Any] = {
        "run": str(run), "arch": state["arch"], "checkpoint": checkpoint, "epoch": state["epoch"],
        "cache": str(cache_path), "split": split, "batches": batches, "seed": seed, "batch_digest": digest,
        "frames_in_split": int(len(index)), "mean_accuracy": float(np.mean([v["accuracy"] for v in per_au.values()])),
        "mean_ci95": [lo, hi], "per_au": per_au,
        "mean_f1": _mean([v["f1"] for v in per_au.values()]), "mean_auc": _mean([v["auc"] for v in per_au.values()]),
    }
    if write:
        atomic_write_text(run / "eval.json", json.dumps(result, indent=2))
        atomic_write_text(run / "eval.csv", _csv(result))
        if cache_path.resolve() == Path(cfg.data.cache).resolve():  # the run's own validation split: thresholds
            store_val_thresholds(run, data, labels, data.indices("val"), torch_device, (checkpoint,), only_missing=True)
    result["_decisions"] = decisions
    return result


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _csv(result: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["au", "accuracy", "ci95_low", "ci95_high", "f1", "auc", "positive_rate", "predicted_rate"])
    for au, m in result["per_au"].items():
        writer.writerow([au, m["accuracy"], *m["ci95"], m["f1"], m["auc"], m["positive_rate"], m["predicted_rate"]])
    writer.writerow(["AVG", result["mean_accuracy"], *result["mean_ci95"], result["mean_f1"], result["mean_auc"], "", ""])
    return out.getvalue()


def compare(results: list[dict[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """McNemar's test for each pair of runs, per AU and over all AUs' decisions, on their shared batches."""
    pairs = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            a, b = results[i], results[j]
            if a["batch_digest"] != b["batch_digest"]:
                raise UsageError("runs compared on different test batches", "evaluate them with the same --cache, --split, --seed and --batches")
            shared = [au for au in a["per_au"] if au in b["per_au"]]
            per_au = {au: mcnemar(a["_decisions"][au], b["_decisions"][au]) for au in shared}
            overall = mcnemar(np.concatenate([a["_decisions"][au] for au in shared]),
                              np.concatenate([b["_decisions"][au] for au in shared]))
            for test in [*per_au.values(), overall]:
                test["significant"] = test["p_value"] < alpha
            pairs.append({"a": a["run"], "b": b["run"], "mean_accuracy_diff": a["mean_accuracy"] - b["mean_accuracy"],
                          "overall": overall, "per_au": per_au})
    return pairs


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The result without its in-memory per-frame decisions."""
    return {k: v for k, v in result.items() if not k.startswith("_")}


def evaluate(
    runs: str | Path | list[str | Path],
    *,
    cache: str | Path | None = None,
    split: str = "test",
    batches: int = 3000,
    seed: int = 0,
    checkpoint: str = "best",
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate one run (its result) or several (``{"runs": [...], "comparisons": [...]}``), as ``eval --json``."""
    many = isinstance(runs, (list, tuple))
    results = [evaluate_run(run, cache=cache, split=split, batches=batches, seed=seed, checkpoint=checkpoint,
                            device=device) for run in (runs if many else [runs])]
    if not many:
        return public(results[0])
    return {"runs": [public(r) for r in results], "comparisons": compare(results) if len(results) > 1 else []}
