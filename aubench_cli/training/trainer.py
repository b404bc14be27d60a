"""Training as the paper did it: balanced batches, per-AU BCE, per-epoch validation, the best checkpoint kept.

``train(cfg, out)`` runs one configuration into a run directory: ``config.yaml`` (the resolved settings),
``data.json`` (AUs, splits or the fold, the Section V subset), ``metrics.csv`` (one row per epoch), ``best.pt`` (best mean
validation accuracy) and ``last.pt`` (where to resume). Read it top to bottom: ``train`` calls ``open_run`` (the
directory and settings), ``set_up`` (data, model, optimizer, samplers), then per epoch ``train_epoch``,
``validate`` and ``end_epoch`` (metrics, best, checkpoints), and ``finish``.

Every random choice of training step s (its batch, its augmentation, the torch stream for dropout) is drawn from
streams keyed by (seed, s) (``BatchPlan``), so a checkpoint needs only the epoch and step to resume exactly. Under
torchrun every rank draws the same global batch, takes rows ``rank::W`` and weights its loss by the whole batch's
counts, so DDP's gradient average is the one-process gradient: a run on W processes is the same experiment as on
one (``--scale-batch`` trades that for throughput), except for dropout masks, which each rank draws for its own rows
(``dropout_across_ranks``: the same experiment in distribution, not mask for mask). The data path stays on the
training device: uint8 frames are gathered (resident when they fit, else from the memory-mapped cache), converted,
augmented and normalized there. Rank 0 alone writes. Branches for CUDA only are marked ``# CUDA only``.
"""

from __future__ import annotations

import contextlib
import copy
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
import yaml
from torch import nn

from aubench_cli import __version__
from aubench_cli import config as cfgmod
from aubench_cli.errors import AubenchError, UsageError, suggest
from aubench_cli.fileio import BackgroundWriter, atomic_write_bytes, atomic_write_text, check_writable
from aubench_cli.models import create_model, get_model_info
from aubench_cli.models.weights import choose_layout, load_pretrained, load_weights_file
from aubench_cli.device import keep_host_memory, resolve_device
# checkpoints are read where trained networks are used; the trainer writes them (one-way: trainer -> inference)
from aubench_cli.training.inference import CHECKPOINT_VERSION, load_checkpoint, store_val_thresholds
from aubench_cli.training.tracking import Tracker, hparams_of
from aubench_cli.training import graphs
from aubench_cli.training.optim import OPTIMIZERS, load_optimizer_state, make_optimizer
from aubench_cli.training.sampling import (
    BalancedSampler,
    build_pools,
    check_balance,
    check_balanceable,
    correct_counts,
    loss_weights,
    make_sampler,
    weighted_bce,
)
from aubench_cli.training.transforms import (
    NEEDS_FEATURE_STATS,
    Augmentation,
    FeatureStats,
    build_augmentation,
    check_norm,
    feature_stats,
    normalize,
    to_float,
)


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


SUBSET_DRAWS = 1000  # draws of the subjects tried for one that can give the frame budget (Section V, subjects)


def select_subset(cache: Any, index: np.ndarray, frames_frac: float, subjects_frac: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Section V: a fraction of the training subjects, and of the training frames.

    A fraction ``subjects_frac`` of the training subjects is drawn (``round(s x subjects)``, at least one). With
    ``frames_frac = 1`` each keeps all its frames ("60 % of the subjects"). With ``frames_frac = F < 1`` the run
    trains on the budget of ``round(F x training frames)`` frames whatever subjects were drawn: each chosen subject
    gives its share in proportion to its size, and the frames left by rounding go to the subjects with the largest
    remainders. ``subjects_frac = 1`` is the "frames" experiment (every subject, F of the frames); ``F = 0.2``
    with ``subjects_frac = s`` is the "subjects" experiment (20 % of the frames in all, from s of the subjects).

    Where the subjects drawn hold fewer frames than the budget (s = 20 %: they must give every frame, and smaller
    than average subjects, or ``round(s x N)`` subjects holding under F, cannot), the draw is repeated, up to
    ``SUBSET_DRAWS`` times, until one can; the first draw that can is used, so a set whose first draw already can
    is drawn as before. When no draw tried can (no subjects of that number hold the budget), the draw holding
    the most frames gives every frame: the run still trains, and the record says the budget was not met
    (``budget_met``, the realised ``frames`` and ``frames_share`` of the training frames, ``draws`` tried).
    """
    for name, value in (("frames_frac", frames_frac), ("subjects_frac", subjects_frac)):
        if not 0 < value <= 1:
            raise UsageError(f"data.{name} must be in (0, 1], got {value}", f"e.g. --{name.replace('_', '-')} 0.2")
    if frames_frac < 1 and frames_frac > subjects_frac + 1e-9:
        raise UsageError(
            f"--frames-frac {frames_frac} is more than --subjects-frac {subjects_frac} can provide",
            "the total frame fraction cannot exceed the subject fraction (each subject gives at most all its frames)",
        )
    subject_of = cache.subject_index[index]
    subjects, counts = np.unique(subject_of, return_counts=True)
    if frames_frac == 1 and subjects_frac == 1:
        return index, {"frames_frac": 1.0, "subjects_frac": 1.0, "subjects": len(subjects), "frames": len(index),
                       "per_subject_frac": 1.0, "frames_share": 1.0, "budget_met": True}
    n_subjects = max(1, round(subjects_frac * len(subjects)))
    size_of = dict(zip(subjects.tolist(), counts.tolist()))
    total = len(index) if frames_frac == 1 else int(round(frames_frac * len(index)))
    possible = int(np.sort(counts)[::-1][:n_subjects].sum()) >= total  # the largest subjects can give it
    best, draws = None, 0
    for draws in range(1, (SUBSET_DRAWS if possible and frames_frac < 1 else 1) + 1):
        drawn = np.sort(rng.choice(subjects, n_subjects, replace=False))
        held = sum(size_of[int(s)] for s in drawn)
        if best is None or held > best[1]:
            best = (drawn, held)
        if held >= total:
            break
    chosen, held = best
    frames_of = [index[subject_of == s] for s in chosen]  # one pass per subject, not per frame
    sizes = np.array([len(f) for f in frames_of], dtype=np.int64)
    budget_met = frames_frac == 1 or held >= total
    if frames_frac == 1 or not budget_met:
        take = sizes  # every frame of the drawn subjects: all of them, or all there is short of the budget
    else:
        share = total * sizes / sizes.sum()
        take = np.floor(share).astype(np.int64)
        leftover = total - int(take.sum())
        take[np.argsort(-(share - take), kind="stable")[:leftover]] += 1  # largest remainders first
    keep = [np.sort(rng.choice(f, n, replace=False)) for f, n in zip(frames_of, take)]
    subset = np.sort(np.concatenate(keep))
    record = {
        "frames_frac": frames_frac, "subjects_frac": subjects_frac,
        "per_subject_frac": float(take.sum() / sizes.sum()),
        "subjects": int(n_subjects), "subjects_available": int(len(subjects)), "frames": int(len(subset)),
        "frames_available": int(len(index)), "frames_share": round(len(subset) / len(index), 6),
        "subject_names": [cache.subjects[i] for i in chosen], "frames_per_subject": [int(n) for n in take],
        "budget_met": bool(budget_met), "draws": int(draws),
    }
    if frames_frac < 1:
        record["frames_budget"] = int(total)
    return subset, record


def prepare_data(cfg: cfgmod.Config, log: LogFn) -> RunData:
    from aubench_cli.data.cache import cache_identity, open_cache
    from aubench_cli.data.splits import empty_split_error, fold_plan, subject_frames, subject_roles

    cache = open_cache(cfg.data.cache)
    au_names = list(cache.au_names)
    folds = fold_plan(cache, cfg.data)  # under folds the cache's own split is not used
    if folds is None:
        train_index, val_index, test_index = cache.indices("train"), cache.indices("val"), cache.indices("test")
    else:
        train_index, val_index, test_index = (subject_frames(cache, folds.parts[p]) for p in ("train", "val", "test"))
        log(f"fold {folds.fold} of {folds.k} ({folds.source}): {len(folds.parts['train'])} training, "
            f"{len(folds.parts['val'])} validation and {len(folds.parts['test'])} test subjects")
    parts = {"train": train_index, "val": val_index, "test": test_index}  # before any Section V subset
    for split, index in (("train", train_index), ("val", val_index)):
        if len(index) == 0:
            raise empty_split_error(split, cfg.data.cache)

    train_index, subset = select_subset(cache, train_index, cfg.data.frames_frac, cfg.data.subjects_frac,
                                        _seed_rng(cfg.train.seed, 4))
    if not subset["budget_met"]:
        log(f"warning: no {subset['subjects']} of the {subset['subjects_available']} training subjects hold the "
            f"{subset['frames_budget']} frames of --frames-frac {cfg.data.frames_frac}; training on every frame of "
            f"the {subset['subjects']} drawn: {subset['frames']} frames, {subset['frames_share']:.1%} of the training "
            "frames (recorded in data.json)")
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
        # frames and subjects of the run's parts: the cache's splits, or the fold's
        "splits": {s: {"frames": int(len(ix)), "subjects": int(len(np.unique(cache.subject_index[ix])))}
                   for s, ix in parts.items()},
        "subset": subset,
        # what evaluate checks its test subjects against
        "subject_roles": subject_roles(cache, train_index, val_index, test_index),
    }
    if folds is not None:
        record["folds"] = folds.record()
        for au in check_balanceable(cache.labels, test_index, au_names, f"fold {folds.fold} test"):
            if au not in bad:
                log(f"warning: fold {folds.fold}'s test subjects have no positive or no negative frame for {au}: "
                    "evaluating this run will refuse that AU's test")
    return RunData(cache, record["au_names"], columns, labels, train_index, val_index, record)


def check_resumed_folds(run_dir: Path, data: RunData) -> None:
    """A resumed fold run must find the fold it started on (a fold file edited since would change its data)."""
    path = Path(run_dir) / "data.json"
    try:
        before = json.loads(path.read_text()).get("folds")
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    now = data.record.get("folds")
    if before is not None and (now or {}).get("subjects") != before.get("subjects"):
        raise UsageError(f"run {run_dir} was trained on other fold subjects than its settings give now "
                         "(was its fold file changed?)",
                         "restore the fold file it was trained with, or train a new run")


def available_memory() -> int:
    """Bytes of memory the OS can give without swapping (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def preload_limit() -> int:
    """Bytes of frames one rank may copy to RAM: half of the available memory, shared by the ranks of this machine
    (each holds its own copy)."""
    return available_memory() // 2 // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class FrameSource:
    """Gathers uint8 frames onto the device: resident in device memory (CUDA, when they fit in a quarter of it),
    else copied once to RAM (when they fit in ``limit``, by default ``preload_limit()``), else read per batch from
    the memory-mapped cache. One copy of the frames per rank, never two."""

    CHUNK = 8192  # frames copied at a time while preloading

    def __init__(self, images: Any, needed: np.ndarray, device: torch.device, limit: int | None = None):
        self.device = device
        self.images = images
        self.lookup: np.ndarray | None = None
        self.store: torch.Tensor | None = None
        nbytes = len(needed) * int(np.prod(images.shape[1:]))
        on_device = device.type == "cuda" and nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]  # CUDA only
        self.where = "device" if on_device else ("ram" if nbytes <= (preload_limit() if limit is None else limit)
                                                 else "disk")
        if self.where != "disk":
            lookup = np.full(len(images), -1, dtype=np.int64)
            lookup[needed] = np.arange(len(needed))
            self.lookup = lookup
            store = torch.empty((len(needed), *images.shape[1:]), dtype=torch.uint8,
                                device=device if on_device else "cpu")
            for start in range(0, len(needed), self.CHUNK):  # chunk by chunk: no second full copy on the host
                part = np.ascontiguousarray(images[needed[start:start + self.CHUNK]])
                store[start:start + len(part)].copy_(torch.from_numpy(part))
            self.store = store

    @property
    def preloaded(self) -> bool:
        return self.store is not None

    def __call__(self, idx: np.ndarray) -> torch.Tensor:
        if self.store is not None:
            local = torch.from_numpy(self.lookup[idx])
            batch = self.store[local.to(self.store.device, non_blocking=True)]
        else:
            batch = torch.from_numpy(np.ascontiguousarray(self.images[idx]))
        return batch.to(self.device, non_blocking=True)


# ----------------------------------------------------------------------------------------------------------------
# distributed


STOP_CHECK_EVERY = 8  # under DDP, ranks agree on a Ctrl-C every this many steps (one small host sync each time)


@dataclass
class Dist:
    """This process's place among the DDP ranks. Every collective goes through here, on the training device
    (NCCL reduces CUDA tensors only)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a host sync under DDP: call it every few steps)."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def stop_check_due(self, step: int) -> bool:
        return self.world == 1 or step % STOP_CHECK_EVERY == 0


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = resolve_device(device_name)
        return Dist(device=device), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_name not in ("auto", "cuda", "cpu"):
        raise UsageError(f"--device {device_name} under torchrun: each process takes the GPU of its LOCAL_RANK",
                         "use --device auto, cuda or cpu")
    use_cuda = device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:  # CUDA only: one GPU per rank, NCCL
        check_gpus_for_ranks(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    return Dist(rank, world, local_rank, device), device


def check_gpus_for_ranks(local_rank: int, local_world: int) -> None:
    """One GPU per process: refuse, on every process of the machine alike and before any process group, a launch
    with more processes than visible GPUs (torch.cuda.set_device would say only "invalid device ordinal")."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    wanted = max(local_rank + 1, local_world)
    if wanted > gpus:
        fewer = f"launch at most {gpus} (torchrun --nproc-per-node {gpus}), or " if gpus else ""
        raise UsageError(f"{wanted} training processes on this machine but {gpus} GPU{'s' if gpus != 1 else ''} "
                         "visible (each process needs its own GPU)",
                         f"{fewer}train on the CPU with --device cpu (the gloo backend)")


# ----------------------------------------------------------------------------------------------------------------
# checkpoints and run files


def save_checkpoint(path: Path | list[Path], state: dict[str, Any]) -> None:
    """``state`` serialized once and written, atomically, to each path."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    for one in [path] if isinstance(path, (str, Path)) else path:
        atomic_write_bytes(Path(one), buffer.getbuffer())  # a view: no copy of the bytes


def host_copy(obj: Any) -> Any:
    """``obj`` (a state dict: nested dicts, lists, tuples) with every tensor copied to host memory, so that what
    a background writer saves is this moment's state while training goes on changing the live tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):  # a shallow copy keeps the type and attributes (a state dict's _metadata)
        out = copy.copy(obj)
        for k, v in obj.items():
            out[k] = host_copy(v)
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


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
# one step: the batch plan (what each rank trains on) and the step itself


@dataclass
class LocalBatch:
    """This rank's part of one training batch, ready for ``Step.train_step``."""

    idx: np.ndarray  # frame indices of this rank's rows
    targets: torch.Tensor  # (b, K) int8: 1 / 0 where the frame counts for the AU, -1 where it does not
    weights: torch.Tensor  # (b, K) loss weights: normalised by the whole batch's counts, times the world size
    aug: torch.Tensor | None  # (b, len(PARAMS)) augmentation parameters, or None (group A)


class BatchPlan:
    """Every random choice of training step ``s`` is a function of (seed, s) alone: the batch, its augmentation
    parameters, the torch stream (dropout). By default every rank draws the same global batch and takes rows
    ``rank::W``, so W ranks run exactly the one-process experiment and a run resumes exactly with another world
    size. With ``scale_batch`` each rank draws its own full batch (streams keyed by rank too)."""

    def __init__(self, sampler: Any, labels: np.ndarray, augmentation: Augmentation | None, seed: int, ddp: Dist,
                 device: torch.device, weighted: bool, scale_batch: bool):
        self.sampler, self.labels, self.augmentation = sampler, labels, augmentation
        self.seed, self.ddp, self.device, self.weighted = seed, ddp, device, weighted
        self.scale_batch = scale_batch
        self.rows = slice(None) if scale_batch else slice(ddp.rank, None, ddp.world)
        self._fixed: tuple[np.ndarray, torch.Tensor, torch.Tensor] | None = None  # balanced samplers

    def _key(self, *stream: int) -> list[int]:
        return [self.seed, *stream, self.ddp.rank] if self.scale_batch else [self.seed, *stream]

    def __call__(self, step: int) -> LocalBatch:
        idx, targets, params, torch_seed = self.draw(step)
        torch.manual_seed(torch_seed)
        aug = None if params is None else torch.from_numpy(params[self.rows]).to(self.device, non_blocking=True)
        t, w = self._targets_and_weights(targets)
        return LocalBatch(idx[self.rows], t, w, aug)

    def draw(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
        """Step ``step``'s choices on the host, for the whole batch: frame indices, targets, augmentation
        parameters (None for group A) and the torch seed (dropout). ``graphs.EpochBuffers`` draws whole epochs
        through here, so both paths train on the same batches."""
        idx, targets = self.sampler.draw(np.random.default_rng(self._key(3, step)), self.labels)
        torch_seed = int(np.random.SeedSequence([self.seed, 8, step, self.ddp.rank]).generate_state(1)[0])
        params = None
        if self.augmentation is not None:
            params = self.augmentation.sample(np.random.default_rng(self._key(6, step)), len(idx))
        return idx, targets, params, torch_seed

    def _targets_and_weights(self, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self._fixed is not None and self._fixed[0] is targets:  # balanced batches: the same every step
            return self._fixed[1], self._fixed[2]
        full = torch.from_numpy(np.ascontiguousarray(targets))
        scale = 1 if self.scale_batch else self.ddp.world
        weights = loss_weights(full, self.weighted)[self.rows] * scale  # from the whole batch's counts
        t = full[self.rows].to(self.device, non_blocking=True)
        w = weights.to(self.device, non_blocking=True)
        if targets is getattr(self.sampler, "targets", None):
            self._fixed = (targets, t, w)
        return t, w


@dataclass
class Step:
    """What one training step needs, built once per run."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    source: FrameSource
    augmentation: Augmentation | None
    norm: str
    stats: FeatureStats
    channels_last: bool
    autocast: Any

    def inputs(self, idx: np.ndarray, aug: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``idx`` as the network sees them; augmented only when training parameters ``aug`` are given."""
        x = to_float(self.source(idx))
        if aug is not None and self.augmentation is not None:
            x = self.augmentation(x, aug)
        x = normalize(x, self.norm, self.stats)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def train_step(self, batch: LocalBatch) -> torch.Tensor:
        x = self.inputs(batch.idx, batch.aug)
        with self.autocast:
            logits = self.model(x)
        loss = weighted_bce(logits, batch.targets, batch.weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


# ----------------------------------------------------------------------------------------------------------------
# a run: set-up, one training epoch, validation, the end of an epoch (metrics, best, checkpoints)


@dataclass
class Run:
    """A run in progress: what ``set_up`` builds and the loop advances."""

    cfg: cfgmod.Config
    run_dir: Path
    ddp: Dist
    device: torch.device
    data: RunData
    model: nn.Module  # the bare network (what checkpoints hold)
    train_model: nn.Module  # the same, wrapped in DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    step: Step
    plan: BatchPlan
    batch_size: int  # of the global batch (all ranks together)
    steps_per_epoch: int
    val_batches: list[np.ndarray]  # this rank's share of the validation batches (val_share)
    val_counted: int  # how many of them count (the others only keep the ranks' forward passes in step)
    val_targets: torch.Tensor
    norm_stats: FeatureStats
    load_report: Any
    lr: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "mean": -1.0})
    start_epoch: int = 1
    first_step: int = 0  # of start_epoch (a run interrupted mid-epoch continues there)
    loss_sum: torch.Tensor | None = None  # this epoch's global loss so far / W, on the device
    epoch_seconds: float = 0.0
    tracker: Tracker | None = None  # TensorBoard event files (rank 0, unless turned off)
    graph_step: Any = None  # graphs.GraphStep when the step runs on static buffers (CUDA graphs), else None
    graph_val: Any = None  # graphs.GraphValidation likewise
    writer: BackgroundWriter = field(default_factory=BackgroundWriter)  # checkpoints written while training goes on


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
    keep_host_memory()  # each step re-allocates the same large tensors: reuse them (device.keep_host_memory)
    cfg, run_dir, state = open_run(cfg, out, resume, epochs, overwrite, ddp, cache, log)
    if ddp.main:
        check_writable(run_dir)  # an unwritable --out fails now, not at the first checkpoint
    run = set_up(cfg, run_dir, state, ddp, device, log)
    if ddp.main:
        if state is None:  # the run folder appears only now: settings, cache and AUs are checked
            _make_run_dir(run_dir, overwrite)
        write_run_record(run)
    if progress:
        total = (cfg.train.epochs - run.start_epoch + 1) * run.steps_per_epoch - run.first_step
        progress({"event": "start", "total": total, "batch_size": run.batch_size, "epochs": cfg.train.epochs,
                  "run": str(run_dir), "device": str(run.device)})
    # the writer's exit waits for the last checkpoint (and raises its error) before the summary is written
    with _deferred_interrupt() as interrupted, _cuda_oom_hint(run), run.writer:
        for epoch in range(run.start_epoch, cfg.train.epochs + 1):
            train_loss = train_epoch(run, epoch, interrupted, progress)
            per_au = validate(run)
            end_epoch(run, epoch, train_loss, per_au, progress)
    return finish(run)


def open_run(cfg: cfgmod.Config, out: str | Path | None, resume: bool, epochs: int | None, overwrite: bool,
             ddp: Dist, cache: str | Path | None = None, log: LogFn = lambda msg: None,
             ) -> tuple[cfgmod.Config, Path, dict[str, Any] | None]:
    """The run directory, the settings (a resumed run's own) and, when resuming, its last checkpoint."""
    run_dir = Path(out) if out else Path("runs") / default_run_name(cfg)
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(run_dir / "last.pt")
        if "rng" in state:
            raise UsageError(f"{run_dir} was written by an older aubench (checkpoint version 1), which drew batches "
                             "another way", "evaluate it as it is, or retrain it with this version")
        saved = cfgmod.from_dict(state["config"])
        if epochs is not None:  # a larger --epochs extends the schedule to that total
            if epochs < state["epoch"]:
                raise UsageError(f"--epochs {epochs} is fewer than the {state['epoch']} epochs already done",
                                 f"pass --epochs {state['epoch']} or more")
            saved.train.epochs = epochs
        saved.train.device = cfg.train.device
        saved.train.tensorboard = cfg.train.tensorboard  # how this session logs, not what the run is
        saved.train.cuda_graphs = cfg.train.cuda_graphs  # how the step runs, not what it computes
        saved.data.cache = resume_cache(run_dir, saved.data.cache, cache if cache is not None else saved.data.cache)
        cfg = saved
        if cfg.train.scale_batch and state.get("world_size", 1) != ddp.world:
            raise UsageError(f"{run_dir} trained with --scale-batch on {state.get('world_size', 1)} processes; its "
                             f"batches and learning rate depend on that number, and this launch has {ddp.world}",
                             f"resume it with {state.get('world_size', 1)} processes")
    else:
        _check_run_dir(run_dir, overwrite, ddp)
    _validate(cfg)
    # The layout is resolved once and recorded in config.yaml and the checkpoints (resume and evaluate rebuild it).
    cfg.model.layout, layout_note = choose_layout(cfg.model.arch, cfg.model.layout, pretrained=cfg.model.pretrained
                                                  and state is None, weights_file=bool(cfg.model.weights) and state is None)
    if layout_note:
        log(layout_note)
    cfg.data.cache = str(Path(cfg.data.cache).resolve())  # the run finds its cache from any directory
    if cfg.data.fold_file:  # and its fold file
        cfg.data.fold_file = str(Path(cfg.data.fold_file).expanduser().resolve())
    return cfg, run_dir, state


def set_up(cfg: cfgmod.Config, run_dir: Path, state: dict[str, Any] | None, ddp: Dist, device: torch.device,
           log: LogFn) -> Run:
    """Data, model, optimizer, samplers and frame source; restored from ``state`` when resuming."""
    if device.type == "cpu":  # the ranks of one machine share its cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", ddp.world)))))
    data = prepare_data(cfg, log)
    if state is not None:
        check_resumed_folds(run_dir, data)
    norm_stats = _norm_stats(cfg, data, state)
    model, load_report = _build_model(cfg, len(data.au_names), device, state, log)
    lr = _learning_rate(cfg, ddp)
    train_model = _parallel(model, cfg, ddp, device, log)

    sampler = make_sampler(cfg.train.balance, data.labels, data.train_index, _seed_rng(cfg.train.seed, 1),
                           cfg.train.pos_per_au, cfg.train.neg_per_au)
    val_sampler = BalancedSampler(build_pools(data.labels, data.val_index), cfg.train.pos_per_au, cfg.train.neg_per_au)
    val_rng = _seed_rng(cfg.train.seed, 2)
    val_batches = [val_sampler.draw(val_rng)[0] for _ in range(cfg.train.val_batches)]
    needed = np.unique(np.concatenate([data.train_index, *val_batches]))
    source = FrameSource(data.cache.images, needed, device)
    graph_mode = graphs.choose_mode(cfg.train.cuda_graphs, device, world=ddp.world, compiled=cfg.train.compile,
                                    frames_where=source.where, log=log)
    optimizer = _optimizer(cfg, model, lr, capturable=graph_mode != "off", device=device)
    if state is not None:
        load_optimizer_state(optimizer, state["optimizer"])
    augmentation = build_augmentation(cfg.train.aug, cfg.augment)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.train.amp  # CUDA only
                else contextlib.nullcontext())
    step = Step(train_model, optimizer, source, augmentation, cfg.train.norm, norm_stats, _use_channels_last(cfg),
                autocast)
    plan = BatchPlan(sampler, data.labels, augmentation, cfg.train.seed, ddp, device, cfg.train.balance == "cost",
                     cfg.train.scale_batch)
    steps = math.ceil(cfg.train.batches_per_epoch / ddp.world) if cfg.train.scale_batch else cfg.train.batches_per_epoch
    run = Run(cfg, run_dir, ddp, device, data, model, train_model, optimizer, step, plan,
              sampler.batch_size * (ddp.world if cfg.train.scale_batch else 1), steps,
              *val_share(val_batches, ddp), torch.from_numpy(val_sampler.targets).to(device), norm_stats,
              load_report, lr, loss_sum=torch.zeros((), device=device))
    if graph_mode != "off":
        run.graph_step = graphs.GraphStep(step, plan, graph_mode, device, cfg.train.amp, log)
        run.graph_val = graphs.GraphValidation(step, run.val_batches, run.val_targets, graph_mode, device,
                                               cfg.train.amp, log)
    _restore_position(run, state)
    run.tracker = Tracker(run_dir, enabled=cfg.train.tensorboard and ddp.main,
                          first_epoch=None if state is None else run.start_epoch, log=log)
    return run


def train_epoch(run: Run, epoch: int, interrupted: dict, progress: ProgressFn | None) -> float:
    """The epoch's training steps (from ``run.first_step`` when resuming mid-epoch); returns its mean loss.

    No host sync per step: the loss accumulates on the device, and under DDP the ranks agree on a Ctrl-C at the
    epoch's first step and every ``STOP_CHECK_EVERY`` steps. A Ctrl-C saves ``last.pt`` at the step reached and raises KeyboardInterrupt.
    """
    run.train_model.train()
    first = run.first_step if epoch == run.start_epoch else 0
    if first == 0:
        run.loss_sum.zero_()
        run.epoch_seconds = 0.0
    tick = time.perf_counter()
    graph_step = run.graph_step
    if graph_step is not None:  # the epoch's draws made ahead, for the static buffers (graphs.py)
        graph_step.begin_epoch((epoch - 1) * run.steps_per_epoch + first, run.steps_per_epoch - first,
                               run.steps_per_epoch, run.cfg.train.epochs * run.steps_per_epoch)
    for i in range(first, run.steps_per_epoch):
        global_step = (epoch - 1) * run.steps_per_epoch + i
        if (i == first or run.ddp.stop_check_due(global_step)) and run.ddp.any(interrupted["set"]):
            run.epoch_seconds += time.perf_counter() - tick
            save_checkpoints(run, *((epoch, i) if i else (epoch - 1, 0)), ["last"])  # steps 0..i-1 are done
            run.writer.wait()  # written (or its error raised) before the interrupt is
            raise KeyboardInterrupt
        if graph_step is not None:
            run.loss_sum += graph_step(global_step)
        else:
            run.loss_sum += run.step.train_step(run.plan(global_step)) / run.ddp.world
        if progress:
            progress({"event": "step", "epoch": epoch, "images": run.batch_size})
    run.epoch_seconds += time.perf_counter() - tick
    return float(run.ddp.all_sum(run.loss_sum.clone())) / run.steps_per_epoch


def val_share(batches: list[np.ndarray], ddp: Dist) -> tuple[list[np.ndarray], int]:
    """This rank's validation batches (``rank::W`` of them) and how many count. Every rank runs the same number of
    forward passes: DDP's wrapper broadcasts rank 0's BatchNorm buffers at the first forward after training, so a
    rank with fewer batches (none: ``val_batches`` < W) would leave the others waiting in that collective. A rank
    one short runs batch 0 again, uncounted, so the summed counts stay those of one process."""
    mine = batches[ddp.rank::ddp.world]
    passes = math.ceil(len(batches) / ddp.world)
    return mine + [batches[0]] * (passes - len(mine)), len(mine)


def validate(run: Run) -> np.ndarray:
    """Per-AU accuracy over the run's fixed validation batches (never augmented); ranks share the batches."""
    if run.graph_val is not None:
        return run.graph_val()
    run.train_model.eval()
    k = len(run.data.au_names)
    correct = torch.zeros(k, dtype=torch.float64, device=run.device)
    total = torch.zeros(k, dtype=torch.float64, device=run.device)
    with torch.inference_mode(), run.step.autocast:
        for i, idx in enumerate(run.val_batches):
            c, n = correct_counts(run.train_model(run.step.inputs(idx)).float(), run.val_targets)
            if i < run.val_counted:
                correct += c
                total += n
    correct, total = run.ddp.all_sum(correct.clone()), run.ddp.all_sum(total.clone())
    return (correct / total.clamp(min=1)).cpu().numpy()


def end_epoch(run: Run, epoch: int, train_loss: float, per_au: np.ndarray, progress: ProgressFn | None) -> None:
    """The epoch's row of metrics.csv, the best score, best.pt when it improved, last.pt."""
    mean = float(np.mean(per_au))
    improved = mean > run.best["mean"]
    if improved:
        run.best = {"epoch": epoch, "mean": mean, "per_au": dict(zip(run.data.au_names, map(float, per_au)))}
    images = run.steps_per_epoch * run.batch_size
    row = {"epoch": epoch, "train_loss": round(train_loss, 6),
           **{f"val_{au}": round(float(a), 6) for au, a in zip(run.data.au_names, per_au)},
           "val_mean": round(mean, 6), "lr": run.optimizer.param_groups[0]["lr"],
           "seconds": round(run.epoch_seconds, 3), "images_per_s": round(images / max(run.epoch_seconds, 1e-9), 1)}
    run.rows.append(row)
    if run.tracker is not None:  # before the checkpoint: a resume hides a point past it, never misses one
        run.tracker.epoch(row, run.data.au_names)
    save_checkpoints(run, epoch, 0, ["best", "last"] if improved else ["last"])
    if progress:
        progress({"event": "epoch", **row, "best_epoch": run.best["epoch"]})


def save_checkpoints(run: Run, epoch: int, step: int, names: list[str]) -> None:
    """``<name>.pt`` for each name, and metrics.csv; rank 0 writes, every rank takes part (the loss sum).

    The state is copied to host memory here and serialized and written by ``run.writer`` in the background (one
    serialization for all names), so the next epoch trains meanwhile; the writer keeps the order, and a write's
    error surfaces at the next save or when training ends."""
    loss_sum = float(run.ddp.all_sum(run.loss_sum.clone()))
    if not run.ddp.main:
        return
    cfg = run.cfg
    state = {
        "checkpoint_version": CHECKPOINT_VERSION, "aubench_version": __version__,
        "arch": cfg.model.arch, "au_names": run.data.au_names, "config": cfgmod.to_dict(cfg),
        "norm": cfg.train.norm, "norm_stats": {"mean": run.norm_stats.mean, "std": run.norm_stats.std},
        "model": host_copy(run.model.state_dict()), "optimizer": host_copy(run.optimizer.state_dict()),
        "epoch": epoch, "step": step, "best": dict(run.best), "loss_sum": loss_sum,
        "epoch_seconds": run.epoch_seconds, "world_size": run.ddp.world,
    }
    paths, rows, metrics = [run.run_dir / f"{name}.pt" for name in names], list(run.rows), run.run_dir / "metrics.csv"

    def job() -> None:
        save_checkpoint(paths, state)
        write_metrics(metrics, rows)

    run.writer.submit(job)


def write_run_record(run: Run) -> None:
    """config.yaml, data.json (data, subset, device, world size, how batches are split) and train_frames.npy."""
    cfg = run.cfg
    atomic_write_text(run.run_dir / "config.yaml", cfgmod.dump_yaml(cfg))
    record = dict(run.data.record, weights=run.load_report.as_dict() if run.load_report else None,
                  world_size=run.ddp.world, device=str(run.device), channels_last=run.step.channels_last,
                  frames_preloaded=run.step.source.preloaded, frames_held_in=run.step.source.where,
                  cuda_graphs="off" if run.graph_step is None else ("capture" if run.graph_step.capture else "emulate"),
                  distributed={"mode": "scale-batch" if cfg.train.scale_batch else "same-experiment",
                               "global_batch": run.batch_size, "steps_per_epoch": run.steps_per_epoch,
                               "lr": run.lr})
    atomic_write_text(run.run_dir / "data.json", json.dumps(record, indent=2))
    if run.load_report is not None:  # what loading the weights did, tensor by tensor
        run.load_report.write_json(run.run_dir / "weights.json")
    atomic_write_bytes(run.run_dir / "train_frames.npy", _npy_bytes(run.data.train_index.astype(np.int64)))


def finish(run: Run) -> dict[str, Any]:
    """The run's summary (summary.json)."""
    summary = {
        "run": str(run.run_dir), "arch": run.cfg.model.arch, "au_names": run.data.au_names,
        "epochs": run.cfg.train.epochs, "best_epoch": run.best["epoch"],
        "best_val_mean_accuracy": run.best["mean"], "best_val_per_au": run.best.get("per_au", {}),
        "last": run.rows[-1] if run.rows else None, "world_size": run.ddp.world, "device": str(run.device),
        "train_frames": int(len(run.data.train_index)), "dropped_aus": run.data.record["dropped_aus"],
        # sum of every weight: a quick check that two runs ended identical
        "weights_checksum": float(sum(p.detach().double().sum() for p in run.model.parameters())),
    }
    if run.ddp.main:
        atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2))
        # per-AU F1-maximising thresholds on the validation split, for `aubench predict --threshold val`
        store_val_thresholds(run.run_dir, run.data.cache, run.data.labels, run.data.val_index, run.device)
        if run.tracker is not None:  # the settings and best validation figures for TensorBoard's HParams view
            run.tracker.finish(hparams_of(cfgmod.to_dict(run.cfg), run.data.record), run.best,
                               int(run.rows[-1]["epoch"]) if run.rows else run.cfg.train.epochs)
    return summary


# ---- set-up helpers ----------------------------------------------------------------------------------------------


def _norm_stats(cfg: cfgmod.Config, data: RunData, state: dict[str, Any] | None) -> FeatureStats:
    """Featurewise statistics over the training frames only (saved with the run; restored when resuming)."""
    stats = FeatureStats()
    if cfg.train.norm in NEEDS_FEATURE_STATS:
        if state is not None:
            stats = FeatureStats(**state["norm_stats"])
        else:
            stats, n_stats = feature_stats(data.cache.images, data.train_index, _seed_rng(cfg.train.seed, 5))
            data.record["feature_stats_frames"] = n_stats
    data.record["norm_stats"] = {"mean": stats.mean, "std": stats.std}
    return stats


def _build_model(cfg: cfgmod.Config, k: int, device: torch.device, state: dict[str, Any] | None,
                 log: LogFn) -> tuple[nn.Module, Any]:
    """The network on the device, from the seed (the paper: every network from the same one), pretrained weights
    or the checkpoint being resumed."""
    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model.arch, k, layout=cfg.model.layout)
    load_report = None
    if state is None and (cfg.model.weights or cfg.model.pretrained):
        allow = cfg.model.allow_partial_weights
        load_report = (load_weights_file(model, cfg.model.arch, cfg.model.weights, allow) if cfg.model.weights
                       else load_pretrained(model, cfg.model.arch, allow))
        for line in load_report.log_lines():
            log(line)
    elif state is None and not get_model_info(cfg.model.arch).from_scratch:
        log(f"note: {cfg.model.arch} starts from random init; the paper fine-tuned it from pretrained weights "
            "(pass --weights FILE or --pretrained)")
    if state is not None:
        model.load_state_dict(state["model"])
    model = model.to(device)
    if _use_channels_last(cfg):
        model = model.to(memory_format=torch.channels_last)
    return model, load_report


def _parallel(model: nn.Module, cfg: cfgmod.Config, ddp: Dist, device: torch.device, log: LogFn) -> nn.Module:
    """DDP (BatchNorm synchronised across ranks where the backend can) and torch.compile, as asked."""
    if ddp.world > 1:
        model = batchnorm_across_ranks(model, device, log)
        if not cfg.train.scale_batch:
            dropout_across_ranks(model, log)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        model = torch.compile(model)
    return model


def batchnorm_across_ranks(model: nn.Module, device: torch.device, log: LogFn) -> nn.Module:
    """SyncBatchNorm on CUDA (statistics over the whole batch, as one process has them); under gloo on CPU, where
    SyncBatchNorm cannot run, plain BatchNorm with a warning that statistics are per rank."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model
    if device.type == "cuda":  # CUDA only
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    log("warning: this network has BatchNorm, which the gloo backend cannot synchronise: each process normalises "
        "with its own rows' statistics, so this run is not exactly the one-process experiment")
    return model


def dropout_layers(model: nn.Module) -> list[str]:
    """The names of the network's active dropout layers (LightCNN-9/29 and InceptionV3 have one)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0]


def dropout_across_ranks(model: nn.Module, log: LogFn) -> list[str]:
    """Each process draws the dropout masks of its own rows from its own torch stream (``BatchPlan``: keyed by
    seed, step and rank), so a network with dropout trained on W processes is the one-process experiment in
    distribution (the same batches, augmentation and gradient normalisation; masks drawn alike), not mask for mask:
    the weights differ from one process's after the first step. Says so; returns the dropout layers."""
    layers = dropout_layers(model)
    if layers:
        log(f"warning: this network has dropout ({', '.join(layers)}): each process draws the masks of its own rows, "
            "so this run matches the one-process experiment in distribution, not mask for mask")
    return layers


def _learning_rate(cfg: cfgmod.Config, ddp: Dist) -> float:
    """The configured (or the paper's) rate; times the world size with --scale-batch (W batches per step)."""
    lr = cfg.train.lr if cfg.train.lr is not None else get_model_info(cfg.model.arch).lr
    return lr * ddp.world if cfg.train.scale_batch else lr


def _optimizer(cfg: cfgmod.Config, model: nn.Module, lr: float, capturable: bool = False,
               device: torch.device | None = None) -> torch.optim.Optimizer:
    name = cfg.train.optimizer or get_model_info(cfg.model.arch).optimizer
    if name not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {name!r}", suggest(name, OPTIMIZERS))
    return make_optimizer(name, model.parameters(), lr, capturable=capturable, device=device)


def _use_channels_last(cfg: cfgmod.Config) -> bool:
    # "auto" is channels_last: on CUDA it is the layout tensor cores want, and on the project's 2-core CPU every
    # one of the 11 networks trained as fast or faster in it (1.0x VGG-16 to 2x ResNet50/InceptionV3,
    # docs/performance.md).
    return cfg.train.channels_last in ("auto", "true", "yes", "on", "1")


def _restore_position(run: Run, state: dict[str, Any] | None) -> None:
    """Where a resumed run continues: its metrics rows, best score, epoch and step, and the epoch's loss so far."""
    if state is None:
        return
    run.rows = [r for r in read_metrics(run.run_dir / "metrics.csv") if int(r["epoch"]) <= state["epoch"]]
    run.start_epoch, run.first_step, run.best = state["epoch"] + 1, state["step"], state["best"]
    if run.first_step:  # an interrupted epoch continues at its next batch
        run.start_epoch -= 1
        if run.ddp.main:  # the global sum so far, held once
            run.loss_sum += state["loss_sum"]
        run.epoch_seconds = state["epoch_seconds"]


@contextlib.contextmanager
def _cuda_oom_hint(run: Run):
    try:
        yield
    except torch.cuda.OutOfMemoryError as exc:
        raise AubenchError(
            f"CUDA out of memory training {run.cfg.model.arch} with batches of {run.batch_size}",
            "use fewer frames per AU (--set train.pos_per_au=2 --set train.neg_per_au=2), a smaller network, "
            "or a GPU with more memory",
        ) from exc


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def saved_config(run_dir: str | Path) -> cfgmod.Config:
    """The settings a run directory was trained with (its config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UsageError(f"no run at {run_dir} (no config.yaml)", "is this a run directory written by aubench train?")
    return cfgmod.from_dict(yaml.safe_load(path.read_text()) or {})


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


def _validate(cfg: cfgmod.Config) -> None:
    get_model_info(cfg.model.arch)
    check_balance(cfg.train.balance)
    check_norm(cfg.train.norm)
    cfg.train.cuda_graphs = graphs.check_setting(cfg.train.cuda_graphs)
    build_augmentation(cfg.train.aug, cfg.augment)
    for name in ("epochs", "batches_per_epoch", "val_batches", "pos_per_au", "neg_per_au"):
        if getattr(cfg.train, name) < 1:
            raise UsageError(f"train.{name} must be at least 1, got {getattr(cfg.train, name)}", "e.g. 1")
    if cfg.model.weights and cfg.model.pretrained:
        raise UsageError("--weights and --pretrained both given", "choose one source of weights")


def _check_run_dir(run_dir: Path, overwrite: bool, ddp: Dist) -> None:
    """Refuse an existing run folder unless ``overwrite`` (nothing is created or removed here: ``_make_run_dir``
    does that once every check has passed)."""
    if not ddp.main:
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file", "give a folder for the run")
    if run_dir.exists() and any(run_dir.iterdir()) and not overwrite:
        raise UsageError(f"run directory {run_dir} already exists",
                         f"continue it with --resume {run_dir}, replace it with --overwrite, or pick another --out")


def _make_run_dir(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and any(run_dir.iterdir()) and overwrite:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
