"""Training as the paper did it: balanced batches, per-AU BCE, per-epoch validation, the best checkpoint kept.

``train(cfg, out)`` runs one configuration into a run directory: ``config.yaml`` (the resolved settings),
``data.json`` (AUs, splits, the Section V subset), ``metrics.csv`` (one row per epoch), ``best.pt`` (best mean
validation accuracy) and ``last.pt`` (where to resume). A checkpoint holds the model, optimizer, epoch and step,
the best score so far and every random state, so ``resume`` continues exactly where the run stopped, an
interrupted epoch included. The data path stays on the training device: uint8 frames are gathered (from RAM when
the frames fit, else from the memory-mapped cache), converted, augmented with kornia and normalized there.
Launched by torchrun, each process draws its own batches (the epoch's batches are split between them), gradients
are averaged by DistributedDataParallel, and rank 0 alone writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from aubench_cli import __version__
from aubench_cli import config as cfgmod
from aubench_cli.errors import AubenchError, UsageError, suggest
from aubench_cli.fileio import atomic_write_bytes, atomic_write_text
from aubench_cli.models import create_model, get_model_info
from aubench_cli.models.weights import LoadReport, choose_layout, load_pretrained, load_weights_file
from aubench_cli.device import resolve_device
from aubench_cli.training.inference import store_val_thresholds
from aubench_cli.training.sampling import (
    BalancedSampler,
    build_pools,
    check_balance,
    check_balanceable,
    correct_counts,
    make_sampler,
    per_au_bce,
)
from aubench_cli.training.transforms import (
    NEEDS_FEATURE_STATS,
    FeatureStats,
    augment,
    build_augmentation,
    check_norm,
    feature_stats,
    normalize,
    to_float,
)

CHECKPOINT_VERSION = 1
OPTIMIZERS = {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
PRELOAD_LIMIT_BYTES = 4 * 1024**3  # frames used by a run are copied to RAM below this size; above, read from disk

LogFn = Callable[[str], None]
ProgressFn = Callable[[dict], None]


def _seed_rng(seed: int, *stream: int) -> np.random.Generator:
    """An independent, reproducible stream per purpose (pools, validation, subsets, training batches...)."""
    return np.random.default_rng([seed, *stream])


# ----------------------------------------------------------------------------------------------------------------
# data


@dataclass
class RunData:
    cache: Any
    au_names: list[str]
    au_columns: np.ndarray  # columns of the cache's label matrix that this run uses
    labels: np.ndarray  # (N, K) int8 over the whole cache, restricted to au_columns
    train_index: np.ndarray
    val_index: np.ndarray
    record: dict[str, Any] = field(default_factory=dict)


def select_subset(cache: Any, index: np.ndarray, frames_frac: float, subjects_frac: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Section V: a fraction of the training subjects, each keeping ``frames_frac / subjects_frac`` of its frames.

    With ``subjects_frac = 1`` this is the "frames" experiment (every subject, a fraction f of its frames); with
    ``frames_frac = 0.2`` and ``subjects_frac = s`` it is the "subjects" experiment (20 % of the frames in all,
    from a fraction s of the subjects).
    """
    for name, value in (("frames_frac", frames_frac), ("subjects_frac", subjects_frac)):
        if not 0 < value <= 1:
            raise UsageError(f"data.{name} must be in (0, 1], got {value}", "e.g. --frames-frac 0.2")
    if frames_frac > subjects_frac + 1e-9:
        raise UsageError(
            f"--frames-frac {frames_frac} is more than --subjects-frac {subjects_frac} can provide",
            "the total frame fraction cannot exceed the subject fraction (each subject gives at most all its frames)",
        )
    subject_of = cache.subject_index[index]
    subjects = np.unique(subject_of)
    if frames_frac == 1 and subjects_frac == 1:
        return index, {"frames_frac": 1.0, "subjects_frac": 1.0, "subjects": len(subjects), "frames": len(index),
                       "per_subject_frac": 1.0}
    n_subjects = max(1, round(subjects_frac * len(subjects)))
    chosen = np.sort(rng.choice(subjects, n_subjects, replace=False))
    per_subject = min(1.0, frames_frac / subjects_frac)
    keep = []
    for s in chosen:  # one iteration per subject, not per frame
        frames = index[subject_of == s]
        n = max(1, round(per_subject * len(frames)))
        keep.append(np.sort(rng.choice(frames, n, replace=False)))
    subset = np.sort(np.concatenate(keep))
    return subset, {
        "frames_frac": frames_frac, "subjects_frac": subjects_frac, "per_subject_frac": per_subject,
        "subjects": int(n_subjects), "subjects_available": int(len(subjects)), "frames": int(len(subset)),
        "frames_available": int(len(index)), "subject_names": [cache.subjects[i] for i in chosen],
    }


def prepare_data(cfg: cfgmod.Config, log: LogFn) -> RunData:
    from aubench_cli.data.cache import cache_identity, open_cache
    from aubench_cli.data.splits import subject_roles

    cache = open_cache(cfg.data.cache)
    au_names = list(cache.au_names)
    train_index, val_index = cache.indices("train"), cache.indices("val")
    for split, index in (("train", train_index), ("val", val_index)):
        if len(index) == 0:
            raise UsageError(f"the cache's {split} split has no frames", "re-run aubench preprocess with more subjects")

    train_index, subset = select_subset(cache, train_index, cfg.data.frames_frac, cfg.data.subjects_frac,
                                        _seed_rng(cfg.train.seed, 4))
    bad: dict[str, list[str]] = {}
    for split, index in (("train", train_index), ("val", val_index)):
        for au in check_balanceable(cache.labels, index, au_names, split):
            bad.setdefault(au, []).append(split)
    if bad:
        described = "; ".join(f"{au} in {'/'.join(s)}" for au, s in bad.items())
        if not cfg.data.drop_unbalanceable:
            raise UsageError(
                f"cannot balance batches: no positive or no negative frames for {described}",
                "add data, or pass --drop-unbalanceable to train without those AUs",
            )
        log(f"warning: dropping AUs that cannot be balanced: {described}")
    columns = np.array([k for k, au in enumerate(au_names) if au not in bad], dtype=np.int64)
    if len(columns) == 0:
        raise UsageError("no AU can be balanced in this cache", "check the labels the preprocessor reported")
    labels = np.ascontiguousarray(cache.labels[:, columns])
    record = {
        "cache": str(Path(cfg.data.cache).resolve()),
        "cache_identity": cache_identity(cache),  # content, not path: what --resume RUN --cache P checks
        "cache_created": cache.header.get("created"),
        "cache_format_version": cache.header.get("format_version"),
        "au_names": [au_names[k] for k in columns],
        "dropped_aus": sorted(bad),
        "splits": {s: {"frames": int(len(cache.indices(s))), "subjects": int(len(np.unique(cache.subject_index[cache.indices(s)])))}
                   for s in ("train", "val", "test")},
        "subset": subset,
        "subject_roles": subject_roles(cache, train_index, val_index),  # what evaluate checks its test subjects against
    }
    return RunData(cache, record["au_names"], columns, labels, train_index, val_index, record)


class FrameSource:
    """Gathers uint8 frames onto the device: from RAM (or device memory) when they fit, else from the cache."""

    def __init__(self, images: Any, needed: np.ndarray, device: torch.device, limit: int = PRELOAD_LIMIT_BYTES):
        self.device = device
        frame_bytes = int(np.prod(images.shape[1:]))
        self.preloaded = len(needed) * frame_bytes <= limit
        self.images = images
        self.lookup: np.ndarray | None = None
        self.store: torch.Tensor | None = None
        if self.preloaded:
            lookup = np.full(len(images), -1, dtype=np.int64)
            lookup[needed] = np.arange(len(needed))
            self.lookup = lookup
            store = torch.from_numpy(np.ascontiguousarray(images[needed]))
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                store = store.to(device) if store.numel() < 0.25 * free else store.pin_memory()
            self.store = store

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        if self.store is not None:
            local = torch.from_numpy(self.lookup[idx])
            batch = self.store[local.to(self.store.device)]
        else:
            batch = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
            if self.device.type == "cuda":
                batch = batch.pin_memory()
        return batch.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Dist(rank, world, local_rank), device


# ----------------------------------------------------------------------------------------------------------------
# checkpoints and run files


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
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


def resume_cache(run_dir: Path, saved_cache: str, cache: str | Path) -> str:
    """The cache a resumed run continues on: ``cache`` (resolved) when its content identity is the one the run
    was trained on (``data.json``), so a moved or copied cache works and another cache, at any path, is refused."""
    from aubench_cli.data.cache import cache_identity

    record_path = Path(run_dir) / "data.json"
    recorded = json.loads(record_path.read_text()).get("cache_identity") if record_path.is_file() else None
    if recorded is None:  # a run from before identities were recorded: the cache at the path it names
        try:
            recorded = cache_identity(saved_cache)
        except AubenchError:
            raise UsageError(f"run {run_dir} records no cache identity and its cache {saved_cache} is gone",
                             "resume it where its cache is, or train it again") from None
    given = cache_identity(cache)
    if given != recorded:
        raise UsageError(f"cache {cache} holds other content than the cache run {run_dir} was trained on "
                         f"(content identity {given[:12]}, the run's {recorded[:12]})",
                         "resume with the cache it was trained on (moved or copied is fine), or train a new run")
    return str(Path(cache).resolve())


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, out.getvalue())


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def _number(value: str) -> Any:
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def default_run_name(cfg: cfgmod.Config) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.model.arch}-{cfg.train.balance}-{cfg.train.norm}-{cfg.train.aug}-{stamp}"


# ----------------------------------------------------------------------------------------------------------------
# the loop


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _set_rng_state(rng: np.random.Generator, state: str) -> None:
    rng.bit_generator.state = json.loads(state)


def _optimizer(cfg: cfgmod.Config, model: nn.Module) -> torch.optim.Optimizer:
    info = get_model_info(cfg.model.arch)
    name = cfg.train.optimizer or info.optimizer
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}", suggest(name, OPTIMIZERS))
    lr = cfg.train.lr if cfg.train.lr is not None else info.lr
    return OPTIMIZERS[name](model.parameters(), lr=lr)


def _use_channels_last(cfg: cfgmod.Config) -> bool:
    # "auto" is channels_last: on CUDA it is the layout tensor cores want, and on the project's 2-core CPU every
    # one of the 11 networks trained as fast or faster in it (1.0x VGG-16 to 2x ResNet50/InceptionV3,
    # docs/performance.md).
    return cfg.train.channels_last in ("auto", "true", "yes", "on", "1")


@dataclass
class Step:
    """What one training step needs, built once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    source: FrameSource
    augmentation: nn.Module | None
    norm: str
    stats: FeatureStats
    weighted: bool
    channels_last: bool
    autocast: Any

    def inputs(self, idx: np.ndarray, train: bool) -> torch.Tensor:
        x = to_float(self.source(idx))
        if train:
            x = augment(self.augmentation, x)
        x = normalize(x, self.norm, self.stats)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, idx: np.ndarray, targets: torch.Tensor) -> torch.Tensor:
        x = self.inputs(idx, train=True)
        with self.autocast:
            logits = self.model(x)
        loss = per_au_bce(logits, targets, weighted=self.weighted)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def train(
    cfg: cfgmod.Config,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    epochs: int | None = None,
    overwrite: bool = False,
    cache: str | Path | None = None,
    log: LogFn = lambda msg: None,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Train one configuration into ``out``; returns the run's summary (also written to ``summary.json``).

    With ``resume`` the configuration comes from the run's ``last.pt`` (``cfg`` only supplies the device),
    ``epochs``, when given, replaces the run's total number of epochs, and ``cache``, when given, is where the
    run's cache is now (accepted when its content identity is the run's: see ``resume_cache``).
    """
    ddp, device = init_distributed(cfg.train.device)
    run_dir = Path(out) if out else Path("runs") / default_run_name(cfg)
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(run_dir / "last.pt")
        saved = cfgmod.from_dict(state["config"])
        if epochs is not None:  # a larger --epochs extends the schedule to that total
            if epochs < state["epoch"]:
                raise UsageError(f"--epochs {epochs} is fewer than the {state['epoch']} epochs already done",
                                 f"pass --epochs {state['epoch']} or more")
            saved.train.epochs = epochs
        saved.train.device = cfg.train.device
        saved.data.cache = resume_cache(run_dir, saved.data.cache, cache if cache is not None else saved.data.cache)
        cfg = saved
    else:
        _prepare_run_dir(run_dir, overwrite, ddp)
    _validate(cfg)
    # The layout is resolved once and recorded in config.yaml and the checkpoints (resume and evaluate rebuild it).
    cfg.model.layout, layout_note = choose_layout(cfg.model.arch, cfg.model.layout, pretrained=cfg.model.pretrained
                                                  and state is None, weights_file=bool(cfg.model.weights) and state is None)
    if layout_note:
        log(layout_note)
    cfg.data.cache = str(Path(cfg.data.cache).resolve())  # the run finds its cache from any directory
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world)))))

    data = prepare_data(cfg, log)
    k = len(data.au_names)
    norm_stats = FeatureStats()
    if cfg.train.norm in NEEDS_FEATURE_STATS:
        if state is not None:
            norm_stats = FeatureStats(**state["norm_stats"])
        else:
            norm_stats, n_stats = feature_stats(data.cache.images, data.train_index, _seed_rng(cfg.train.seed, 5))
            data.record["feature_stats_frames"] = n_stats
    data.record["norm_stats"] = {"mean": norm_stats.mean, "std": norm_stats.std}

    torch.manual_seed(cfg.train.seed)  # the paper: every network initialized from the same seed
    model = create_model(cfg.model.arch, k, layout=cfg.model.layout)
    load_report = None
    if state is None and (cfg.model.weights or cfg.model.pretrained):
        allow = cfg.model.allow_partial_weights
        load_report = (load_weights_file(model, cfg.model.arch, cfg.model.weights, allow) if cfg.model.weights
                       else load_pretrained(model, cfg.model.arch, allow))
        _record_weights(load_report, run_dir, ddp.main, log)
    elif state is None and not get_model_info(cfg.model.arch).from_scratch:
        log(f"note: {cfg.model.arch} starts from random init; the paper fine-tuned it from pretrained weights "
            "(pass --weights FILE or --pretrained)")
    channels_last = _use_channels_last(cfg)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    train_model: nn.Module = model
    if ddp.world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    sampler = make_sampler(cfg.train.balance, data.labels, data.train_index, _seed_rng(cfg.train.seed, 1),
                           cfg.train.pos_per_au, cfg.train.neg_per_au)
    val_sampler = BalancedSampler(build_pools(data.labels, data.val_index), cfg.train.pos_per_au, cfg.train.neg_per_au)
    val_rng = _seed_rng(cfg.train.seed, 2)
    val_batches = [val_sampler.draw(val_rng)[0] for _ in range(cfg.train.val_batches)]
    val_targets = torch.from_numpy(val_sampler.targets).to(device)
    batch_rng = _seed_rng(cfg.train.seed, 3, ddp.rank)

    needed = np.unique(np.concatenate([data.train_index, *val_batches])) if val_batches else data.train_index
    source = FrameSource(data.cache.images, needed, device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.train.amp
                else contextlib.nullcontext())
    step = Step(train_model, optimizer, source, build_augmentation(cfg.train.aug, cfg.augment), cfg.train.norm,
                norm_stats, cfg.train.balance == "cost", channels_last, autocast)

    steps_per_epoch = math.ceil(cfg.train.batches_per_epoch / ddp.world)
    my_val = val_batches[ddp.rank::ddp.world]
    metrics_path = run_dir / "metrics.csv"
    rows = [r for r in read_metrics(metrics_path) if int(r["epoch"]) <= (state["epoch"] if state else 0)]
    start_epoch, start_step = 1, 0
    best = {"epoch": 0, "mean": -1.0}
    loss_sum = torch.zeros((), device=device)
    epoch_seconds = 0.0
    if state is not None:
        start_epoch, start_step, best = state["epoch"] + 1, state["step"], state["best"]
        if start_step:  # an interrupted epoch continues at its next batch
            start_epoch -= 1
            loss_sum += state["loss_sum"]
            epoch_seconds = state["epoch_seconds"]
        _set_rng_state(batch_rng, state["rng"]["numpy"][ddp.rank])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)

    if ddp.main:
        atomic_write_text(run_dir / "config.yaml", cfgmod.dump_yaml(cfg))
        record = dict(data.record, weights=load_report.as_dict() if load_report else None, world_size=ddp.world,
                      device=str(device), channels_last=channels_last, frames_preloaded=source.preloaded)
        atomic_write_text(run_dir / "data.json", json.dumps(record, indent=2))
        np.save(run_dir / "train_frames.npy", data.train_index.astype(np.int64))

    def checkpoint(epoch: int, step_in_epoch: int) -> dict[str, Any]:
        numpy_states = [_rng_state(batch_rng)]
        if ddp.world > 1:
            gathered: list[Any] = [None] * ddp.world
            dist.all_gather_object(gathered, numpy_states[0])
            numpy_states = gathered
        return {
            "checkpoint_version": CHECKPOINT_VERSION, "aubench_version": __version__,
            "arch": cfg.model.arch, "au_names": data.au_names, "config": cfgmod.to_dict(cfg),
            "norm": cfg.train.norm, "norm_stats": {"mean": norm_stats.mean, "std": norm_stats.std},
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": epoch, "step": step_in_epoch, "best": best,
            "loss_sum": float(loss_sum), "epoch_seconds": epoch_seconds,
            "rng": {"numpy": numpy_states, "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None},
        }

    total_steps = (cfg.train.epochs - start_epoch + 1) * steps_per_epoch - start_step
    if progress:
        progress({"event": "start", "total": total_steps, "batch_size": sampler.batch_size * ddp.world,
                  "epochs": cfg.train.epochs, "run": str(run_dir)})
    epoch = start_epoch
    with _deferred_interrupt() as interrupted:
        try:
            for epoch in range(start_epoch, cfg.train.epochs + 1):
                train_model.train()
                first = start_step if epoch == start_epoch else 0
                if first == 0:
                    loss_sum.zero_()
                    epoch_seconds = 0.0
                tick = time.perf_counter()
                for step_i in range(first, steps_per_epoch):
                    if _stop_requested(interrupted, ddp):
                        # Ctrl-C: steps 0..step_i-1 of this epoch are done; save exactly that, then stop.
                        epoch_seconds += time.perf_counter() - tick
                        ckpt = checkpoint(epoch, step_i) if step_i else checkpoint(epoch - 1, 0)
                        if ddp.main:
                            save_checkpoint(run_dir / "last.pt", ckpt)
                            write_metrics(metrics_path, rows)
                        raise KeyboardInterrupt
                    idx, targets = sampler.draw(batch_rng, data.labels)
                    t = torch.from_numpy(np.ascontiguousarray(targets)).to(device, non_blocking=True)
                    loss_sum += step.train_step(idx, t)
                    if progress:
                        progress({"event": "step", "epoch": epoch, "images": sampler.batch_size * ddp.world})
                epoch_seconds += time.perf_counter() - tick
                train_loss = float(ddp.all_sum(loss_sum.clone())) / (steps_per_epoch * ddp.world)
                per_au = _validate_epoch(step, my_val, val_targets, ddp, k)
                mean = float(np.mean(per_au))
                improved = mean > best["mean"]
                if improved:
                    best = {"epoch": epoch, "mean": mean, "per_au": dict(zip(data.au_names, map(float, per_au)))}
                images = steps_per_epoch * sampler.batch_size * ddp.world
                row = {"epoch": epoch, "train_loss": round(train_loss, 6),
                       **{f"val_{au}": round(float(a), 6) for au, a in zip(data.au_names, per_au)},
                       "val_mean": round(mean, 6), "lr": optimizer.param_groups[0]["lr"],
                       "seconds": round(epoch_seconds, 3), "images_per_s": round(images / max(epoch_seconds, 1e-9), 1)}
                rows.append(row)
                ckpt = checkpoint(epoch, 0)
                if ddp.main:
                    if improved:
                        save_checkpoint(run_dir / "best.pt", ckpt)
                    save_checkpoint(run_dir / "last.pt", ckpt)
                    write_metrics(metrics_path, rows)
                if progress:
                    progress({"event": "epoch", **row, "best_epoch": best["epoch"]})
        except torch.cuda.OutOfMemoryError as exc:
            raise AubenchError(
                f"CUDA out of memory training {cfg.model.arch} with batches of {sampler.batch_size}",
                "use fewer frames per AU (--set train.pos_per_au=2 --set train.neg_per_au=2), a smaller network, "
                "or a GPU with more memory",
            ) from exc
    summary = {
        "run": str(run_dir), "arch": cfg.model.arch, "au_names": data.au_names, "epochs": cfg.train.epochs,
        "best_epoch": best["epoch"], "best_val_mean_accuracy": best["mean"], "best_val_per_au": best.get("per_au", {}),
        "last": rows[-1] if rows else None, "world_size": ddp.world, "device": str(device),
        "train_frames": int(len(data.train_index)), "dropped_aus": data.record["dropped_aus"],
        # sum of every weight: equal on every DDP rank, and a quick check that two runs ended identical
        "weights_checksum": float(sum(p.detach().double().sum() for p in model.parameters())),
    }
    if ddp.main:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        # per-AU F1-maximising thresholds on the validation split, for `aubench predict --threshold val`
        store_val_thresholds(run_dir, data.cache, data.labels, data.val_index, device)
    return summary


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first Ctrl-C into a flag the loop checks between steps (a second one interrupts at once)."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):  # noqa: ARG001
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_requested(flag: dict, ddp: Dist) -> bool:
    if ddp.world == 1:
        return flag["set"]
    t = torch.tensor([1.0 if flag["set"] else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)  # every rank stops at the same step
    return bool(t.item())


def _validate_epoch(step: Step, batches: list[np.ndarray], targets: torch.Tensor, ddp: Dist, k: int) -> np.ndarray:
    step.model.eval()
    correct = torch.zeros(k, dtype=torch.float64, device=targets.device)
    total = torch.zeros(k, dtype=torch.float64, device=targets.device)
    with torch.inference_mode(), step.autocast:
        for idx in batches:
            c, n = correct_counts(step.model(step.inputs(idx, train=False)).float(), targets)
            correct += c
            total += n
    correct, total = ddp.all_sum(correct.clone()), ddp.all_sum(total.clone())
    return (correct / total.clamp(min=1)).cpu().numpy()


def _record_weights(report: LoadReport, run_dir: Path, main: bool, log: LogFn) -> None:
    """The weights report in the log and in the run directory (weights.json)."""
    for line in report.log_lines():
        log(line)
    if main:
        report.write_json(run_dir / "weights.json")


def _validate(cfg: cfgmod.Config) -> None:
    get_model_info(cfg.model.arch)
    check_balance(cfg.train.balance)
    check_norm(cfg.train.norm)
    build_augmentation(cfg.train.aug, cfg.augment)
    for name in ("epochs", "batches_per_epoch", "val_batches", "pos_per_au", "neg_per_au"):
        if getattr(cfg.train, name) < 1:
            raise UsageError(f"train.{name} must be at least 1, got {getattr(cfg.train, name)}", "e.g. 1")
    if cfg.model.weights and cfg.model.pretrained:
        raise UsageError("--weights and --pretrained both given", "choose one source of weights")


def _prepare_run_dir(run_dir: Path, overwrite: bool, ddp: Dist) -> None:
    if not ddp.main:
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise UsageError(f"run directory {run_dir} already exists",
                             f"continue it with --resume {run_dir}, replace it with --overwrite, or pick another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
