"""Evaluation as the paper did it (3000 balanced test batches, per-AU accuracy) plus what the statistics allow.

Every frame of the split goes through the network once, in large batches, in float32 unless bf16 is asked for
(``precision``, recorded in the result: ``device.inference_precision``); the balanced test batches (4 + 4 per AU,
fixed by the seed, so every model is tested on the same frames) then index those predictions. Per AU:

- ``accuracy``: at 0.5 over its own frames of the batches (the paper's figure, Tables I and II);
- ``balanced_accuracy``: the mean of the true-positive and true-negative rates over *every* labelled frame of the
  split, the exact quantity the 3000 batches estimate with sampling noise;
- ``ci95``: a 95 % interval of the balanced accuracy over the units that were really sampled (subjects by
  default; ``stats.interval`` says how), never over the repeated draws of the batches;
- F1, AUC and the positive rate over the whole split at its natural distribution.

An AU's batches depend only on that AU (its positive and negative frames of the split), the seed and the batch
count, so runs with different AU lists are tested on the same frames for the AUs they share. A structured digest
(cache content identity, split map, split, seed, batch count, one digest per AU) says what was tested; ``compare``
pairs two runs on their shared AUs and tests the difference of balanced accuracies with a permutation test that
swaps the runs' predictions within each subject (``stats.paired``), Holm-corrected across AUs.

Another dataset (``cache`` with other AUs): the AUs the run and the cache both have are tested, matched by name,
each with the network's own output column for it (``shared_aus``); the others are named (``aus_missing``: the
run predicts them, the cache has no labels; ``aus_unpredicted``: the other way round). ``split="all"`` tests
every frame of such a cache; on the run's own cache it is refused, since it holds the training subjects.
``subject_counts`` keeps each test subject's counts at 0.5 per AU (tp, pos, tn, neg: FN = pos - tp,
FP = neg - tn), from which a report pools the folds of a k-fold protocol (``stats.pooled``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aubench_cli import config as cfgmod
from aubench_cli.device import check_precision, inference_precision, keep_host_memory, resolve_device
from aubench_cli.errors import UsageError, plural, suggest
from aubench_cli.evaluation import stats
from aubench_cli.fileio import atomic_write_text
from aubench_cli.training.inference import store_val_thresholds
from aubench_cli.models import create_model
from aubench_cli.training.sampling import check_balanceable
from aubench_cli.training.tracking import write_test
from aubench_cli.training.trainer import load_checkpoint
from aubench_cli.training.transforms import FeatureStats, normalize, to_float

EVAL_STREAM = 7  # test batches of AU a: np.random.default_rng([seed, 7, au_key(a)])
CI_STREAM = 8  # bootstrap resamples: np.random.default_rng([seed, 8])
COMPARE_STREAM = 9  # comparisons' resamples and Monte Carlo permutations
POS_PER_AU = NEG_PER_AU = 4
CI_UNITS = ("subject", "video", "frame")
SPLITS = ("test", "val", "train", "all")  # all: every frame of a cache (another dataset's: split_index)
DIGEST_PARTS = {"cache": "cache content (cache_identity)", "split_map": "split map (subject -> split)",
                "split": "split", "seed": "seed", "batches": "number of batches", "fold": "fold (of K)"}
ProgressFn = Callable[[int, int], None]


def latest_run(root: str | Path = "runs") -> Path:
    root = Path(root)
    runs = [p for p in root.glob("*") if (p / "best.pt").is_file()] if root.is_dir() else []
    if not runs:
        raise UsageError(f"no finished run under {root}/", "train one with aubench train, or name the run directory")
    return max(runs, key=lambda p: (p / "best.pt").stat().st_mtime)


def natural_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """F1 at 0.5, AUC and rates over every known label of the split (its natural distribution)."""
    from sklearn.metrics import roc_auc_score

    known = labels >= 0
    y, s = labels[known], scores[known]
    out: dict[str, float | None] = {"frames": int(known.sum()), "positive_rate": float(y.mean()) if len(y) else None,
                                    "predicted_rate": float((s > 0.5).mean()) if len(y) else None}
    # F1 from the counts (as stats.f1; sklearn's f1_score with zero_division=0 gives the same, at 3 ms a call)
    truth, pred = y == 1, s > 0.5
    tp, errors = int(np.sum(truth & pred)), int(np.sum(truth != pred))
    out["f1"] = (2 * tp / (2 * tp + errors) if 2 * tp + errors else 0.0) if len(y) else None
    out["auc"] = float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else None
    return out


def au_key(au: str) -> int:
    """A stable integer for an AU name (its random stream of test batches)."""
    return int.from_bytes(hashlib.sha256(au.encode()).digest()[:8], "little")


def draw_test_batches(labels: np.ndarray, index: np.ndarray, au: str, seed: int, batches: int,
                      pos: int = POS_PER_AU, neg: int = NEG_PER_AU) -> np.ndarray:
    """The balanced test batches of one AU: ``(batches, pos + neg)`` global frame indices, its positives first.

    ``labels`` is that AU's column over the whole cache; the draw depends only on it, ``index`` (the split), the
    AU's name, the seed and the batch count, never on the run's other AUs."""
    sub = labels[index]
    pools = index[sub == 1], index[sub == 0]
    rng = np.random.default_rng([seed, EVAL_STREAM, au_key(au)])
    parts = [pool[(rng.random((batches, n)) * len(pool)).astype(np.int64)] for pool, n in zip(pools, (pos, neg))]
    return np.concatenate(parts, axis=1)


def _load(run: Path, which: str) -> dict[str, Any]:
    if which not in ("best", "last"):
        raise UsageError(f"--checkpoint must be best or last, got {which!r}", "e.g. --checkpoint best")
    if not run.is_dir():
        raise UsageError(f"run directory {run} not found", "name a directory written by aubench train")
    return load_checkpoint(run / f"{which}.pt")


def _scores(model: torch.nn.Module, images: Any, index: np.ndarray, norm: str, stats_: FeatureStats,
            device: torch.device, batch: int, progress: ProgressFn | None, precision: str = "fp32") -> np.ndarray:
    """Sigmoid outputs for the frames ``index`` (in that order), in large batches under inference_mode, in
    ``precision`` (fp32 or bf16)."""
    cuda = device.type == "cuda"
    model = model.to(memory_format=torch.channels_last)  # faster on CUDA and on the CPUs measured (performance.md)
    out = []
    with torch.inference_mode(), inference_precision(device, precision):
        for start in range(0, len(index), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(images[index[start:start + batch]]))
            if cuda:
                chunk = chunk.pin_memory()
            x = normalize(to_float(chunk.to(device, non_blocking=True)), norm, stats_)
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(torch.sigmoid(model(x).float()).cpu())
            if progress:
                progress(min(start + batch, len(index)), len(index))
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def check_ci_unit(unit: str) -> str:
    if unit not in CI_UNITS:
        raise UsageError(f"unknown --ci-unit {unit!r}", suggest(unit, CI_UNITS))
    return unit


def split_units(data: Any, index: np.ndarray, unit: str) -> tuple[np.ndarray, list[str]]:
    """Codes 0..C-1 of each frame of ``index`` for the unit (subject, video or frame) and the units' names."""
    if unit == "frame":
        return np.arange(len(index), dtype=np.int64), [str(i) for i in index]
    codes, names = (data.subject_index, data.subjects) if unit == "subject" else (data.video_index, data.videos)
    present, inverse = np.unique(codes[index], return_inverse=True)
    return inverse.astype(np.int64), [names[i] for i in present]


def evaluate_run(
    run: str | Path,
    *,
    cache: str | Path | None = None,
    split: str = "test",
    batches: int = 3000,
    seed: int = 0,
    checkpoint: str = "best",
    device: str = "auto",
    ci_unit: str = "subject",
    resamples: int = stats.RESAMPLES,
    batch_size: int = 512,
    write: bool = True,
    progress: ProgressFn | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate one run; returns (and writes as eval.json / eval.csv) its result, with the per-frame decisions
    kept in memory under ``_pred`` / ``_labels`` / ``_units`` for paired comparisons. ``precision``: fp32 (the
    default, whatever the run trained with) or bf16 (autocast on the device); the result says which."""
    from aubench_cli.data.cache import cache_identity, open_cache, split_map_digest
    from aubench_cli.data.splits import check_held_out, empty_split_error, fold_eval_index

    run = Path(run)
    check_ci_unit(ci_unit)
    check_precision(precision)
    state = _load(run, checkpoint)
    cfg = cfgmod.from_dict(state["config"])
    run_aus: list[str] = list(state["au_names"])
    cache_path = Path(cache) if cache else Path(cfg.data.cache)
    data = open_cache(cache_path)
    au_names, outputs, aus_missing, aus_unpredicted = shared_aus(run_aus, data.au_names, run.name, cache_path)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}", "use test, val, train or all")
    if batches < 1:
        raise UsageError(f"--batches must be at least 1, got {batches}", "the paper uses 3000")
    if seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {seed}", "e.g. --seed 0")
    columns = [data.au_names.index(au) for au in au_names]
    labels = np.ascontiguousarray(data.labels[:, columns])
    fold = fold_eval_index(run, data, split)  # a fold run on its own cache: its fold's subjects (never "all")
    index = fold["index"] if fold else split_index(run, data, split, cache_path, Path(cfg.data.cache))
    if len(index) == 0:
        raise empty_split_error(split, cache_path)
    check_held_out(run, data, split, index)  # no subject it tests may be one the run trained or validated on
    bad = check_balanceable(labels, index, au_names, split)
    if bad:
        raise UsageError(f"the {split} split has no positive or no negative frame for {', '.join(bad)}",
                         "evaluate on a split where every AU occurs and is absent")

    torch_device = resolve_device(device)
    keep_host_memory()  # every batch re-allocates the same activations (device.keep_host_memory)
    model = create_model(state["arch"], len(run_aus), layout=cfg.model.layout)  # the run's build layout
    model.load_state_dict(state["model"])
    model = model.to(torch_device).eval()
    norm_stats = FeatureStats(**state["norm_stats"])
    scores = _scores(model, data.images, index, state["norm"], norm_stats, torch_device, batch_size, progress,
                     precision)
    scores = scores[:, outputs] if len(scores) else scores  # the network's columns of the AUs tested, in order
    pred = scores > 0.5  # (n, K) over the split's frames, in index order
    split_labels = labels[index]
    position = np.full(len(data.labels), -1, dtype=np.int64)
    position[index] = np.arange(len(index))

    # The paper's test: balanced batches, one stream per AU, indexing the split's predictions.
    truth = np.r_[np.ones(POS_PER_AU, bool), np.zeros(NEG_PER_AU, bool)]
    au_digests: dict[str, str] = {}
    per_au: dict[str, dict[str, Any]] = {}
    for k, au in enumerate(au_names):
        drawn = draw_test_batches(labels[:, k], index, au, seed, batches)
        au_digests[au] = hashlib.sha1(np.ascontiguousarray(drawn).tobytes()).hexdigest()[:16]
        correct = pred[position[drawn], k] == truth
        per_au[au] = {"accuracy": float(correct.mean()), "n": int(correct.size)}

    # What the batches estimate, and its uncertainty over the sampled units.
    codes, unit_names = split_units(data, index, ci_unit)
    counts = stats.unit_counts(pred, split_labels, codes, len(unit_names))
    ci = stats.interval(counts, np.random.default_rng([seed, CI_STREAM]), resamples)
    for k, au in enumerate(au_names):
        item = ci["per_au"][k]
        per_au[au].update(balanced_accuracy=item["value"], ci95=item["ci95"],
                          degenerate_resamples=item["degenerate"],
                          **natural_metrics(scores[:, k], split_labels[:, k]))
        if item.get("unavailable"):
            per_au[au]["ci_unavailable"] = item["unavailable"]
    subject_codes, subject_names = split_units(data, index, "subject")
    digest = {"cache": cache_identity(data), "split_map": split_map_digest(data.header), "split": split,
              "seed": seed, "batches": batches, "per_au": au_digests}
    if fold:
        digest["fold"] = f"{fold['fold']} of {fold['folds']}"
    result: dict[str, Any] = {
        "run": str(run), "arch": state["arch"], "checkpoint": checkpoint, "epoch": state["epoch"],
        "cache": str(cache_path), "split": split, "batches": batches, "seed": seed,
        "device": str(torch_device), "precision": precision,
        "digest": digest, "batch_digest": hashlib.sha1(json.dumps(digest, sort_keys=True).encode()).hexdigest()[:16],
        "frames_in_split": int(len(index)), "subjects": subject_names,
        **({"fold": fold["fold"], "folds": fold["folds"]} if fold else {}),
        "aus_missing": aus_missing, "aus_unpredicted": aus_unpredicted,
        "mean_accuracy": float(np.mean([v["accuracy"] for v in per_au.values()])),
        "balanced_accuracy": ci["mean"]["value"], "mean_ci95": ci["mean"]["ci95"],
        "ci_unit": ci_unit, "ci_method": ci["method"], "ci_units": ci["units"],
        "ci_note": stats.method_reason(ci["method"], ci["units"], ci_unit) + _unavailable_note(au_names, ci, ci_unit),
        "ci_replicates": ci["mean"]["replicates"], "degenerate_resamples": ci["mean"]["degenerate"],
        "per_au": per_au,
        "mean_f1": _mean([v["f1"] for v in per_au.values()]), "mean_auc": _mean([v["auc"] for v in per_au.values()]),
        "subject_counts": {"subjects": subject_names, "au_names": au_names,
                           "counts": stats.unit_counts(pred, split_labels, subject_codes, len(subject_names)).tolist()},
    }
    if write:
        atomic_write_text(run / "eval.json", json.dumps(result, indent=2))
        atomic_write_text(run / "eval.csv", _csv(result))
        if split == "test" and cache_path.resolve() == Path(cfg.data.cache).resolve():
            write_test(run, result)  # TensorBoard's HParams view: only where training wrote event files
        if cache_path.resolve() == Path(cfg.data.cache).resolve() and not aus_missing:  # the run's own validation split
            val = fold_eval_index(run, data, "val")
            store_val_thresholds(run, data, labels, val["index"] if val else data.indices("val"), torch_device,
                                 (checkpoint,), only_missing=True)
    result["_pred"], result["_labels"], result["_units"] = pred, split_labels, (codes, len(unit_names))
    return result


def shared_aus(run_aus: list[str], cache_aus: list[str], run_name: str,
               cache_path: Path) -> tuple[list[str], list[int], list[str], list[str]]:
    """What a run can be tested on in a cache, matched by AU name (another dataset codes other AUs, in another
    order): the AUs both have in the run's order, the network's output column of each, the run's AUs the cache
    has no labels for and the cache's AUs the run does not predict. A UsageError when they share none."""
    shared = [au for au in run_aus if au in cache_aus]
    if not shared:
        raise UsageError(
            f"cache {cache_path} shares no AU with run {run_name} (the run predicts {', '.join(run_aus)}; the "
            f"cache is labelled for {', '.join(cache_aus)})",
            "evaluate on a cache of a dataset coding at least one of the run's AUs")
    return (shared, [run_aus.index(au) for au in shared], [au for au in run_aus if au not in cache_aus],
            [au for au in cache_aus if au not in run_aus])


def _unavailable_note(au_names: list[str], ci: dict[str, Any], unit: str) -> str:
    """The AUs (and the mean) given no interval, and why (stats.SINGLE_HOLDER_UNAVAILABLE)."""
    missing = [au for au, item in zip(au_names, ci["per_au"]) if item.get("unavailable")]
    if not missing:
        return ""
    mean = " and for the mean over AUs" if ci["mean"].get("unavailable") else ""
    return (f"; no interval for {', '.join(missing)}{mean}: one {unit} holds all the positives (or negatives) of "
            f"{'it' if len(missing) == 1 else 'each'}, so their spread between {unit}s cannot be estimated (no "
            f"resample without that {unit} has any, and every resample with it has its one rate: an interval "
            "would be too narrow)")


def split_index(run: Path, data: Any, split: str, cache_path: Path, own_cache: Path) -> np.ndarray:
    """The frames of ``split``; ``all``: every frame of the cache, refused on the run's own cache (by content
    identity or path), which holds the subjects it trained on (``check_held_out`` then guards any other)."""
    if split != "all":
        return data.indices(split)
    from aubench_cli.data.cache import cache_identity

    try:
        record = json.loads((run / "data.json").read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    paths = [Path(p).resolve() for p in (record.get("cache"), own_cache) if p]
    own = record.get("cache_identity") == cache_identity(data) or cache_path.resolve() in paths
    if own:
        raise UsageError(
            f"--split all on {cache_path}, the cache run {run.name} was trained on, would test the subjects it "
            "trained and validated on",
            "use --split test here; --split all is for another dataset's cache (--cache OTHER)")
    return np.arange(len(data.labels), dtype=np.int64)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _csv(result: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["au", "accuracy", "balanced_accuracy", "ci95_low", "ci95_high", "f1", "auc", "positive_rate",
                     "predicted_rate"])
    for au, m in result["per_au"].items():
        writer.writerow([au, m["accuracy"], m["balanced_accuracy"], *(m["ci95"] or ["", ""]), m["f1"], m["auc"],
                         m["positive_rate"], m["predicted_rate"]])
    writer.writerow(["AVG", result["mean_accuracy"], result["balanced_accuracy"], *(result["mean_ci95"] or ["", ""]),
                     result["mean_f1"], result["mean_auc"], "", ""])
    return out.getvalue()


def pairing(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The AUs two results can be compared on, and why the others are not; a UsageError naming the part of the
    digest that differs when they were not tested on the same frames at all."""
    da, db = a["digest"], b["digest"]
    for key, what in DIGEST_PARTS.items():
        if da.get(key) != db.get(key):
            raise UsageError(
                f"{_short(a['run'])} and {_short(b['run'])} were tested on different frames: their {what} differ "
                f"({da.get(key)} vs {db.get(key)})",
                "evaluate both on the same cache content and split map, with the same --split, --seed and --batches")
    shared, not_compared = [], {}
    for au in list(a["per_au"]) + [au for au in b["per_au"] if au not in a["per_au"]]:
        if au not in b["per_au"]:
            not_compared[au] = f"only {_short(a['run'])} predicts it"
        elif au not in a["per_au"]:
            not_compared[au] = f"only {_short(b['run'])} predicts it"
        elif da["per_au"].get(au) != db["per_au"].get(au):
            not_compared[au] = "tested on different batches"
        else:
            shared.append(au)
    if not shared:
        raise UsageError(f"{_short(a['run'])} and {_short(b['run'])} share no AU", "compare runs that predict common AUs")
    return shared, not_compared


def _short(run: str) -> str:
    return str(run).rstrip("/").split("/")[-1]


def compare_counts(a: dict[str, Any], b: dict[str, Any], counts_a: np.ndarray, counts_b: np.ndarray,
                   shared: list[str], not_compared: dict[str, str], unit: str, seed: int, alpha: float = 0.05,
                   resamples: int = stats.RESAMPLES, permutations: int = stats.PERMUTATIONS) -> dict[str, Any]:
    """One pair's comparison from its per-unit counts ``(C, len(shared), 4)`` (see ``compare``)."""
    test = stats.paired(counts_a, counts_b, np.random.default_rng([seed, COMPARE_STREAM]), resamples, permutations)
    adjusted = stats.holm([item["p_value"] for item in test["per_au"]])
    per_au = {}
    for au, item, p_holm in zip(shared, test["per_au"], adjusted):
        per_au[au] = {"accuracy_diff": a["per_au"][au]["accuracy"] - b["per_au"][au]["accuracy"],
                      "balanced_accuracy_diff": item["value"], "ci95": item["ci95"], "half_width": item["half_width"],
                      "min_detectable_diff": item["min_detectable_diff"], "p_value": item["p_value"],
                      "p_holm": p_holm, "significant": p_holm < alpha, "degenerate_resamples": item["degenerate"]}
    m = test["mean"]
    can = test["min_p_value"] < alpha
    note = stats.method_reason(test["method"], test["units"], unit)
    if not can:
        note += (f"; with {plural(test['units'], unit)}, {test['units_differing']} of which the two runs decide "
                 f"differently on, the smallest possible p-value of the permutation test is "
                 f"{test['min_p_value']:.3g}, so no difference can be significant at {alpha:g}")
    mean_acc = float(np.mean([per_au[au]["accuracy_diff"] for au in shared]))
    return {
        "a": a["run"], "b": b["run"], "compared_aus": shared, "not_compared": not_compared,
        "mean_accuracy_diff": mean_acc, "balanced_accuracy_diff": m["value"], "balanced_accuracy_diff_ci95": m["ci95"],
        "half_width": m["half_width"], "min_detectable_diff": m["min_detectable_diff"],
        "ci_unit": unit, "ci_method": test["method"], "units": test["units"], "permutation": test["permutation"],
        "permutations": test["permutations"], "min_p_value": test["min_p_value"], "can_be_significant": can,
        "alpha": alpha, "note": note,
        "overall": {"balanced_accuracy_diff": m["value"], "ci95": m["ci95"], "half_width": m["half_width"],
                    "min_detectable_diff": m["min_detectable_diff"], "p_value": m["p_value"],
                    "significant": m["p_value"] < alpha, "degenerate_resamples": m["degenerate"]},
        "per_au": per_au,
    }


def compare(results: list[dict[str, Any]], alpha: float = 0.05, resamples: int = stats.RESAMPLES,
            permutations: int = stats.PERMUTATIONS) -> list[dict[str, Any]]:
    """Every pair of runs, on their shared AUs: difference of balanced accuracies with its interval, a paired
    permutation test within each unit (subject by default), Holm across AUs; ``mean_accuracy_diff`` is the
    paper's 3000-batch figure over the shared AUs."""
    pairs = []
    for i in range(len(results)):
        for j in range(i + 1, len(results)):
            a, b = results[i], results[j]
            shared, not_compared = pairing(a, b)
            if a["ci_unit"] != b["ci_unit"]:
                raise UsageError("runs evaluated with different --ci-unit", "evaluate them together with one --ci-unit")
            codes, n_units = a["_units"]
            ca = [list(a["per_au"]).index(au) for au in shared]
            cb = [list(b["per_au"]).index(au) for au in shared]
            counts_a = stats.unit_counts(a["_pred"][:, ca], a["_labels"][:, ca], codes, n_units)
            counts_b = stats.unit_counts(b["_pred"][:, cb], b["_labels"][:, cb], codes, n_units)
            pairs.append(compare_counts(a, b, counts_a, counts_b, shared, not_compared, a["ci_unit"],
                                        a["seed"], alpha, resamples, permutations))
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
    ci_unit: str = "subject",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Evaluate one run (its result) or several (``{"runs": [...], "comparisons": [...]}``), as ``eval --json``."""
    many = isinstance(runs, (list, tuple))
    results = [evaluate_run(run, cache=cache, split=split, batches=batches, seed=seed, checkpoint=checkpoint,
                            device=device, ci_unit=ci_unit, precision=precision) for run in (runs if many else [runs])]
    if not many:
        return public(results[0])
    return {"runs": [public(r) for r in results], "comparisons": compare(results) if len(results) > 1 else []}
