"""Studies: one preset per experiment of the paper, its runs trained and evaluated into one directory.

A study preset (``presets/table1-architectures.yaml`` ...) holds the settings its runs share (top-level sections,
as in any preset), a ``study:`` block (title, kind, figure), and ``runs:``, each with a ``name``, a ``title``,
its overrides under ``set:`` (dotted keys, as ``--set`` takes them) and, where the paper printed them, the
paper's numbers under ``paper:``. A run's settings are: defaults < shared sections < the run's ``set`` <
``--set`` given to ``aubench study`` < ``--cache``. ``run_study`` trains then evaluates each run into
``DIR/<run name>/``; finished runs are skipped, interrupted ones resumed, and a failed run is recorded in
``DIR/status/<run name>.json`` while the others go on. ``DIR/study.json`` records the preset (and a copy of it),
so ``aubench report DIR`` needs nothing else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aubench_cli import config as cfgmod
from aubench_cli.fileio import atomic_write_text
from aubench_cli.errors import AubenchError, UsageError, suggest
from aubench_cli.studies import catalog

STUDY_FILE = "study.json"
STATUS_DIR = "status"
FOLD_SEED_DIR = "foldseed"  # DIR/<run>/foldseed<r>/fold<i>/: the folds dealt with fold seed + r (--fold-seeds)
# Training costs about 3 forward passes per image (forward, then backward for activations and for weights), the
# usual rule of thumb (Kaplan et al. 2020); validation and test cost one forward pass per image.
TRAIN_FLOPS_FACTOR = 3
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
RUN_KEYS = {"name", "title", "set", "paper", "x", "note"}
# Settings that may differ between a run directory and the study without making it another run: the schedule
# length (a longer one extends the run), the device, and evaluation (redone, not retrained).
# The cache is left out too: the same study may see its cache under another path on another machine.
_NOT_IDENTITY = {"train.epochs", "train.device", "train.compile", "train.amp", "train.channels_last", "train.cuda_graphs",
                 "data.cache"}

LogFn = Callable[[str], None]


@dataclass
class StudyRun:
    name: str
    title: str
    overrides: dict[str, Any]
    paper: dict[str, Any] = field(default_factory=dict)
    x: float | None = None
    index: int = 0


@dataclass
class Study:
    name: str
    path: Path
    data: dict[str, Any]  # the preset as read
    runs: list[StudyRun]

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.data.get("study") or {})

    @property
    def shared(self) -> dict[str, Any]:
        return {k: v for k, v in self.data.items() if k not in cfgmod.PRESET_META_KEYS}

    def run(self, name: str) -> StudyRun:
        for run in self.runs:
            if run.name == name:
                return run
        raise UsageError(f"no run {name!r} in study {self.name}", suggest(name, [r.name for r in self.runs]))


@dataclass(frozen=True)
class Unit:
    """One thing to train and evaluate: a run of the preset, on one fold when ``--folds`` asks for it, at one
    training seed when ``--seeds`` does.

    Each level of the directory exists only when asked for: ``DIR/<run>/`` without either,
    ``DIR/<run>/fold<i>/`` with folds, ``DIR/<run>/[fold<i>/]seed<k>/`` with seeds. ``assignment`` r > 0
    (``--fold-seeds``: the folds dealt with fold seed + r) adds ``foldseed<r>/`` above the folds; assignment 0 is
    the study's usual folds, where they always lay, so a K-fold study grows fold seeds without moving anything.
    """

    run: StudyRun
    seed: int | None = None
    fold: int | None = None
    assignment: int | None = None

    @property
    def key(self) -> str:
        """The unit's name in status/ and leases/ files and in logs: ``run``, ``run.seed1``, ``run.fold2.seed1``,
        ``run.foldseed1.fold2.seed1``."""
        return self.run.name + (f".{FOLD_SEED_DIR}{self.assignment}" if self.assignment else "") + (
            "" if self.fold is None else f".fold{self.fold}") + ("" if self.seed is None else f".seed{self.seed}")

    def dir(self, out: Path) -> Path:
        path = out / self.run.name
        if self.assignment:
            path = path / f"{FOLD_SEED_DIR}{self.assignment}"
        path = path if self.fold is None else path / f"fold{self.fold}"
        return path if self.seed is None else path / f"seed{self.seed}"

    @property
    def unseeded(self) -> Unit:
        """The same run (and fold) without a seed level: where a run trained before ``--seeds`` lies."""
        return Unit(self.run, None, self.fold, self.assignment)


def expand_units(runs: list[StudyRun], seeds: int | None = None, folds: int | None = None,
                 fold_seeds: int | None = None) -> list[Unit]:
    """Every run on folds 0..folds-1 at training seeds 0..seeds-1 (run-major, then fold assignment, then fold,
    then seed), over ``fold_seeds`` assignments of subjects to folds; a level not asked for (None) is left out."""
    if seeds is not None and seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}", "e.g. --seeds 3 repeats every run with seeds 0, 1, 2")
    if folds is not None and folds < 2:
        raise UsageError(f"--folds must be at least 2, got {folds}", "e.g. --folds 3, the protocol of most AU papers")
    fold_list = [None] if folds is None else list(range(folds))
    seed_list = [None] if seeds is None else list(range(seeds))
    check_fold_seeds(fold_seeds, folds)
    assignments = [None] if not fold_seeds else list(range(fold_seeds))
    return [Unit(run, k, i, r) for run in runs for r in assignments for i in fold_list for k in seed_list]


def check_fold_seeds(fold_seeds: int | None, folds: int | None, fold_file: str | None = None) -> None:
    """``--fold-seeds R`` repeats a K-fold protocol: it needs ``--folds`` and a hash to re-deal (no fold file)."""
    if fold_seeds is None:
        return
    if fold_seeds < 1:
        raise UsageError(f"--fold-seeds must be at least 1, got {fold_seeds}", "e.g. --folds 3 --fold-seeds 5")
    if folds is None:
        raise UsageError("--fold-seeds repeats a K-fold protocol over other assignments of subjects to folds, and "
                         "no folds were given", "add --folds K, e.g. --folds 3 --fold-seeds 5")
    if fold_file:
        raise UsageError("--fold-seeds re-deals the folds by their hash, but --fold-file fixes them",
                         "drop --fold-file, or --fold-seeds")


def unit_run_dir(out: Path, unit: Unit) -> Path:
    """Where a unit's run lies: its own directory, or for seed 0 the run trained there before ``--seeds`` was used
    (moved into ``seed0/`` when the study runs)."""
    run_dir = unit.dir(out)
    if unit.seed == 0 and not run_dir.exists() and (unit.unseeded.dir(out) / "last.pt").is_file():
        return unit.unseeded.dir(out)
    return run_dir


def adopt_unseeded(out: Path, unit: Unit, log: LogFn = lambda msg: None) -> None:
    """A run finished (or started) before ``--seeds`` was used is seed 0 of it: its files move into ``seed0/``
    (one rename each, nothing retrained). Only the main process moves anything."""
    if unit.seed != 0 or not _main_process():
        return
    legacy, target = unit.unseeded.dir(out), unit.dir(out)
    if target.exists() or not (legacy / "last.pt").is_file():
        return
    target.mkdir()
    for entry in sorted(legacy.iterdir()):
        if entry != target and not (entry.is_dir() and re.fullmatch(r"seed\d+", entry.name)):
            os.replace(entry, target / entry.name)
    status = out / STATUS_DIR / f"{unit.unseeded.key}.json"
    if status.is_file():
        os.replace(status, out / STATUS_DIR / f"{unit.key}.json")
    log(f"{unit.unseeded.key}: the run trained before --seeds was used is kept as seed 0 ({target})")


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + str(key)] = value
    return flat


def parse_study(data: dict[str, Any], name: str, path: Path) -> Study:
    """Check a study preset's structure (settings are checked when each run's config is resolved)."""
    raw_runs = data.get("runs")
    if not isinstance(raw_runs, list) or not raw_runs:
        raise UsageError(f"preset {path} lists no runs, so it is not a study",
                         "add a 'runs:' list of {name, set} entries (docs/studies.md), or use it with aubench train")
    runs: list[StudyRun] = []
    for i, entry in enumerate(raw_runs):
        where = f"preset {path}, run {i + 1}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise UsageError(f"{where} has no name", "each run is a mapping with at least 'name:'")
        run_name = str(entry["name"])
        if not _RUN_NAME.match(run_name) or run_name in (STATUS_DIR, "figures"):
            raise UsageError(f"{where}: bad run name {run_name!r}",
                             f"use letters, digits, '.', '_' or '-' (not {STATUS_DIR!r} or 'figures'): it names a directory")
        unknown = set(entry) - RUN_KEYS
        if unknown:
            key = sorted(unknown)[0]
            raise UsageError(f"{where} ({run_name}): unknown key {key!r}", suggest(key, RUN_KEYS))
        overrides = entry.get("set") or {}
        if not isinstance(overrides, dict):
            raise UsageError(f"{where} ({run_name}): 'set' must be a mapping", "e.g. set: {train.norm: sample-norm}")
        paper = entry.get("paper") or {}
        if not isinstance(paper, dict):
            raise UsageError(f"{where} ({run_name}): 'paper' must be a mapping", "e.g. paper: {accuracy: {AU01: 75.5}}")
        runs.append(StudyRun(run_name, str(entry.get("title", run_name)), _flatten(overrides), paper,
                             float(entry["x"]) if entry.get("x") is not None else None, i))
    names = [r.name for r in runs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UsageError(f"preset {path} has two runs named {dupes[0]!r}", "give every run its own name")
    return Study(str(data.get("name") or path.stem), path, data, runs)


def load_study(preset: str | Path) -> Study:
    path = cfgmod.find_preset(preset)
    data = cfgmod.load_preset(path)
    return parse_study(data, str(preset), path.resolve())


def run_config(study: Study, run: StudyRun, sets: list[str] | None = None, cache: str | None = None,
               weights: str | None = None, seed: int | None = None, fold: int | None = None,
               folds: int | None = None, fold_file: str | None = None,
               assignment: int | None = None) -> cfgmod.Config:
    """A run's settings: defaults < the study's shared sections < the run's ``set`` < ``sets`` < ``cache``; with
    ``seed`` (``--seeds``) the training seed alone is replaced: the test batches stay the same for every seed;
    with ``fold`` (``--folds``) the run trains on fold ``fold`` of ``folds`` (or of ``fold_file``); with
    ``assignment`` r (``--fold-seeds``) the folds are dealt with ``data.fold_seed`` + r."""
    cfg = cfgmod.Config()
    cfgmod.apply_mapping(cfg, study.shared, source=f"preset {study.path}")
    for key, value in run.overrides.items():
        cfgmod.set_value(cfg, key, value, source=f"preset {study.path}, run {run.name}")
    for item in sets or []:
        key, value = cfgmod.parse_set(item)
        cfgmod.set_value(cfg, key, value, source=f"--set {item}")
    if cache is not None:
        cfg.data.cache = cache
    if weights is not None:
        cfg.model.weights = weights
        cfg.model.pretrained = False
    if seed is not None:
        cfg.train.seed = seed
    if fold is not None:
        cfg.data.folds, cfg.data.fold, cfg.data.fold_file = folds, fold, fold_file
    if assignment:
        cfg.data.fold_seed += assignment
    if cfg.train.aug:
        cfg.train.aug = cfg.train.aug.upper()
    cfgmod.check_values(cfg)  # a --set out of range stops the study before any run starts
    return cfg


def weights_problem(cfg: cfgmod.Config) -> str | None:
    """Why a run cannot start as the paper did, or None: a network the paper fine-tuned, with no weights source.

    A study never trains such a network from random init behind the user's back (``aubench train`` does, with a
    note, for whoever asks for it explicitly).
    """
    if cfg.model.weights or cfg.model.pretrained:
        return None
    scratch, note = catalog.from_scratch(cfg.model.arch), catalog.local_weights_note(cfg.model.arch)
    if scratch is None:  # not in the catalog: ask the registry (imports torch)
        from aubench_cli.models import get_model_info

        info = get_model_info(cfg.model.arch)
        scratch, note = info.from_scratch, info.local_weights_note
    if scratch:
        return None
    return (f"{cfg.model.arch} was fine-tuned from pretrained weights in the paper and this run has none"
            + (f" ({note})" if note else ""))


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise UsageError(f"--shard must be I/N with 0 <= I < N, got {text!r}",
                         "e.g. --shard 0/4 for the first of 4 shards (SLURM: --shard $SLURM_ARRAY_TASK_ID/4)")
    return int(m.group(1)), int(m.group(2))


def parse_weights(items: list[str] | None, study: Study) -> dict[str, str]:
    """``--weights NAME=FILE`` items: a local weights file for one run of the study."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--weights expects RUN=FILE, got {item!r}", "e.g. --weights lightcnn9=LightCNN_9Layers.pth")
        name, path = item.split("=", 1)
        study.run(name.strip())  # unknown run names fail with close matches
        if not Path(path).expanduser().is_file():
            raise UsageError(f"weights file {path!r} for run {name} not found", "pass the path of a .pt/.pth file")
        out[name.strip()] = str(Path(path).expanduser().resolve())
    return out


def select_runs(study: Study, only: list[str] | None = None, shard: tuple[int, int] | None = None) -> list[StudyRun]:
    """The runs this invocation does: every N-th of the preset's list from I (``--shard I/N``), then ``--only``.

    Sharding is over the preset's full list, so the shards of a study are disjoint and cover it whatever
    ``--only`` says.
    """
    runs = study.runs
    if shard is not None:
        i, n = shard
        runs = runs[i::n]
    if only:
        wanted = []
        for name in only:
            for part in name.split(","):
                if part.strip():
                    wanted.append(study.run(part.strip()).name)
        runs = [r for r in runs if r.name in wanted]
    return runs


# ----------------------------------------------------------------------------------------------------------------
# the state of a run directory


def _checkpoint_position(run_dir: Path) -> tuple[int, int] | None:
    """(epoch, step) of ``last.pt``, or None when there is none."""
    if not (run_dir / "last.pt").is_file():
        return None
    from aubench_cli.training.trainer import load_checkpoint

    state = load_checkpoint(run_dir / "last.pt")
    return int(state["epoch"]), int(state["step"])


def _identity(cfg: cfgmod.Config) -> dict[str, Any]:
    flat = _flatten({k: v for k, v in cfgmod.to_dict(cfg).items() if k in ("model", "data", "train", "augment")})
    return {k: v for k, v in flat.items() if k not in _NOT_IDENTITY}


def config_differences(saved: cfgmod.Config, wanted: cfgmod.Config) -> list[str]:
    a, b = _identity(saved), _identity(wanted)
    return [f"{k}: {a.get(k)!r} in the run, {b.get(k)!r} in the study" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def _eval_matches(run_dir: Path, cfg: cfgmod.Config) -> bool:
    path = run_dir / "eval.json"
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return False
    return (saved.get("split"), saved.get("batches"), saved.get("seed"), saved.get("checkpoint")) == (
        cfg.eval.split, cfg.eval.batches, cfg.eval.seed, cfg.eval.checkpoint) and _same_cache(saved, cfg)


def _same_cache(saved_eval: dict[str, Any], cfg: cfgmod.Config) -> bool:
    """Whether an evaluation was on the content of the study's cache (by identity, wherever it lies). A cache
    that cannot be read (a dry run elsewhere) does not make a run look unevaluated."""
    from aubench_cli.data.cache import cache_identity

    try:
        wanted = cache_identity(cfg.data.cache)
    except AubenchError:
        return True
    return (saved_eval.get("digest") or {}).get("cache") == wanted


def run_state(run_dir: Path, cfg: cfgmod.Config) -> str:
    """``new`` (nothing to keep), ``partial`` (resume), ``trained`` (evaluate), ``done``."""
    position = _checkpoint_position(run_dir)
    if position is None:
        return "new"
    epoch, step = position
    if epoch < cfg.train.epochs or step != 0 or not (run_dir / "best.pt").is_file():
        return "partial"
    return "done" if _eval_matches(run_dir, cfg) else "trained"


# ----------------------------------------------------------------------------------------------------------------
# cost estimate


COSTS_FILE = "costs.json"


def arch_costs(arch: str, outputs: int, folder: Path | None = None) -> dict[str, Any]:
    """Per-image FLOPs, parameters and memory of ``arch`` with ``outputs`` logits (``profiling.count_costs``, the
    paper's conventions), remembered in ``folder/costs.json`` when a folder is given (tracing a large network
    takes seconds)."""

    key = f"{arch}/{outputs}"
    path = folder / COSTS_FILE if folder is not None else None
    known: dict[str, Any] = {}
    if path is not None and path.is_file():
        try:
            known = json.loads(path.read_text())
        except json.JSONDecodeError:
            known = {}
    if key not in known and catalog.known(arch):
        return catalog.costs(arch, outputs)  # no torch, no tracing (the catalog is tested against live counts)
    if key not in known:
        from aubench_cli.models import create_model
        from aubench_cli.profiling import count_costs

        costs = count_costs(create_model(arch, outputs))
        known[key] = {"flops": costs.flops, "params": costs.params, "memory_mb": round(costs.memory_mb, 4)}
        if path is not None:
            atomic_write_text(path, json.dumps(known, indent=2))
    return known[key]


def _au_count(cache: str) -> tuple[int, str]:
    from aubench_cli.data.cache import read_header

    try:
        return len(read_header(Path(cache))["au_names"]), "cache"
    except AubenchError:
        return len(cfgmod.PAPER_AUS), "paper (no cache read)"


def unit_configs(study: Study, units: list[Unit], sets: list[str] | None = None, cache: str | None = None,
                 weights: dict[str, str] | None = None, folds: int | None = None,
                 fold_file: str | None = None) -> dict[str, cfgmod.Config]:
    """Each unit's settings, keyed by ``unit.key`` (bad settings fail here, before anything is trained)."""
    weights = weights or {}
    cfgs = {u.key: run_config(study, u.run, sets, cache, weights.get(u.run.name), u.seed, u.fold, folds, fold_file,
                              u.assignment) for u in units}
    for u in units:
        d = cfgs[u.key].data
        if u.fold is None and (d.folds is not None or d.fold is not None or d.fold_file):
            raise UsageError(f"{u.key}: the settings name folds (data.folds / data.fold / data.fold_file), which a "
                             "study deals itself", "pass --folds K (or --fold-file FILE) to aubench study instead")
    return cfgs


def estimate(study: Study, units: list[Unit], cfgs: dict[str, cfgmod.Config], out: Path,
             flops_of: Callable[[str, int], int] | None = None) -> list[dict[str, Any]]:
    """One row per run (and seed): its settings, state and the compute it will cost (see TRAIN_FLOPS_FACTOR)."""
    units = [u if isinstance(u, Unit) else Unit(u) for u in units]
    if flops_of is None:
        def flops_of(arch: str, k: int) -> int:
            return arch_costs(arch, k, out if out.is_dir() else None)["flops"]

    counts: dict[str, tuple[int, str]] = {}
    rows = []
    for unit in units:
        run, cfg = unit.run, cfgs[unit.key]
        if cfg.data.cache not in counts:
            counts[cfg.data.cache] = _au_count(cfg.data.cache)
        k, k_source = counts[cfg.data.cache]
        batch = (cfg.train.pos_per_au + cfg.train.neg_per_au) * k
        forward = flops_of(cfg.model.arch, k)
        train_images = cfg.train.epochs * cfg.train.batches_per_epoch * batch
        val_images = cfg.train.epochs * cfg.train.val_batches * batch
        test_images = cfg.eval.batches * batch  # an upper bound: evaluation scores each test frame once
        run_dir = unit_run_dir(out, unit)  # trained before --seeds: taken as seed 0 (moved when the study runs)
        try:
            state = run_state(run_dir, cfg) if run_dir.is_dir() else "new"
        except AubenchError as exc:
            state = f"unreadable ({exc.message})"
        problem = weights_problem(cfg)
        rows.append({
            "name": run.name, "seed": unit.seed, "fold": unit.fold, "assignment": unit.assignment, "key": unit.key,
            "title": run.title,
            "index": run.index,
            "arch": cfg.model.arch, "train_seed": cfg.train.seed,
            "overrides": run.overrides, "x": run.x,
            "pretrained": cfg.model.pretrained, "weights": cfg.model.weights,
            "balance": cfg.train.balance, "norm": cfg.train.norm, "aug": cfg.train.aug,
            "frames_frac": cfg.data.frames_frac, "subjects_frac": cfg.data.subjects_frac,
            "epochs": cfg.train.epochs, "batches_per_epoch": cfg.train.batches_per_epoch,
            "val_batches": cfg.train.val_batches, "batch_size": batch, "aus": k, "aus_from": k_source,
            "forward_flops_per_image": forward, "train_images": train_images,
            "train_flops": TRAIN_FLOPS_FACTOR * forward * train_images,
            "val_flops": forward * val_images, "test_flops": forward * test_images,
            "total_flops": TRAIN_FLOPS_FACTOR * forward * train_images + forward * (val_images + test_images),
            "state": state, "problem": problem, "run_dir": str(run_dir),
            **({"folds": cfg.data.folds} if unit.fold is not None else {}),
        })
    return rows


def fold_summary(cfg: cfgmod.Config) -> list[dict[str, Any]] | None:
    """Subjects and frames of each fold the settings ``cfg`` deal (``--folds`` / ``--fold-file``) on its cache, or
    None when the cache cannot be read (a dry run elsewhere). Fold assignment errors are raised."""
    from aubench_cli.data.cache import open_cache
    from aubench_cli.data.splits import fold_assignment, subject_frames

    try:
        cache = open_cache(cfg.data.cache)
    except AubenchError:
        return None
    assignment, source = fold_assignment(list(cache.subjects), cfg.data.folds, cfg.data.fold_seed, cfg.data.fold_file)
    out = []
    for i in range(max(assignment.values()) + 1):
        names = sorted(s for s, f in assignment.items() if f == i)
        out.append({"fold": i, "source": source, "subjects": names, "frames": int(len(subject_frames(cache, names)))})
    return out


def check_folds(cfgs: dict[str, cfgmod.Config]) -> None:
    """A fold file or fold count that does not fit the cache is one error before anything starts: every fold's
    parts are dealt once per cache (cheap: subject names only)."""
    from aubench_cli.data.cache import open_cache
    from aubench_cli.data.splits import fold_plan

    seen = set()
    for cfg in cfgs.values():
        d = cfg.data
        key = (d.cache, d.folds, d.fold_file, d.fold_seed, d.val_subjects_frac)
        if d.fold is None or key in seen:
            continue
        seen.add(key)
        cache = open_cache(d.cache)
        for i in range(d.folds):
            fold_plan(cache, dataclasses.replace(d, fold=i))


# ----------------------------------------------------------------------------------------------------------------
# running


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_study_file(study: Study, out: Path, sets: list[str], cache: str | None, seeds: int | None = None,
                     folds: int | None = None, fold_file: str | None = None, fold_seeds: int | None = None) -> None:
    """``DIR/study.json``: what ``aubench report`` needs (each shard writes the same content)."""

    if not _main_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    seeds = recorded_seeds(out, seeds)
    folds, fold_file = recorded_folds(out, folds, fold_file)
    fold_seeds = recorded_fold_seeds(out, fold_seeds)
    record = {
        "preset": study.name, "preset_path": str(study.path), "description": study.data.get("description"),
        "study": study.meta, "sets": list(sets), "cache": cache, "shared": study.shared, "seeds": seeds,
        "folds": folds, "fold_file": fold_file, **({"fold_seeds": fold_seeds} if fold_seeds else {}),
        "runs": [{"name": r.name, "title": r.title, "x": r.x, "set": r.overrides, "paper": r.paper} for r in study.runs],
    }
    atomic_write_text(out / STUDY_FILE, json.dumps(record, indent=2))


def _main_process() -> bool:
    """False in the processes of rank > 0 when torchrun launched the study (they train, rank 0 writes)."""
    return int(os.environ.get("RANK", "0")) == 0


def _write_status(out: Path, name: str, status: dict[str, Any]) -> None:

    if not _main_process():
        return

    folder = out / STATUS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / f"{name}.json", json.dumps(status, indent=2))


def _do_run(run: StudyRun, cfg: cfgmod.Config, run_dir: Path, log: LogFn,
            progress: Callable[[str, dict], None] | None, label: str | None = None) -> dict[str, Any]:
    from aubench_cli.evaluation.evaluate import evaluate_run
    from aubench_cli.training.trainer import load_checkpoint, train

    label = label or run.name
    problem = weights_problem(cfg)
    if problem:
        raise UsageError(problem, f"give it with --weights {run.name}=FILE, or leave it out with --only")
    state = run_state(run_dir, cfg) if run_dir.is_dir() else "new"
    trained = False
    if state == "partial":
        saved = cfgmod.from_dict(load_checkpoint(run_dir / "last.pt")["config"])
        diffs = config_differences(saved, cfg)
        if diffs:
            raise UsageError(f"{run_dir} holds a run with other settings ({'; '.join(diffs[:3])})",
                             "remove that directory, or pass --out to start the study elsewhere")
        log(f"{label}: resuming")
        train(cfg, run_dir, resume=True, epochs=cfg.train.epochs, cache=cfg.data.cache, log=log,
              progress=(lambda e: progress(label, e)) if progress else None)
        trained = True
    elif state == "new":
        log(f"{label}: training")
        train(cfg, run_dir, overwrite=True, log=log,  # nothing in it to keep: no checkpoint was written
              progress=(lambda e: progress(label, e)) if progress else None)
        trained = True
    else:
        saved = cfgmod.from_dict(load_checkpoint(run_dir / "last.pt")["config"])
        diffs = config_differences(saved, cfg)
        if diffs:
            raise UsageError(f"{run_dir} holds a finished run with other settings ({'; '.join(diffs[:3])})",
                             "remove that directory, or pass --out to start the study elsewhere")
    evaluated = False
    if not _main_process():  # under torchrun, rank 0 alone evaluates and writes; the others go to the next run
        return {"trained": trained, "evaluated": False, "mean_accuracy": None, "mean_ci95": None}
    if trained or state == "trained":
        log(f"{label}: evaluating ({cfg.eval.batches} balanced {cfg.eval.split} batches)")
        if progress:
            progress(label, {"event": "eval"})
        evaluate_run(run_dir, cache=cfg.data.cache, split=cfg.eval.split, batches=cfg.eval.batches,
                     seed=cfg.eval.seed, checkpoint=cfg.eval.checkpoint, device=cfg.train.device)
        evaluated = True
    result = json.loads((run_dir / "eval.json").read_text())
    return {"trained": trained, "evaluated": evaluated, "mean_accuracy": result["mean_accuracy"],
            "mean_ci95": result["mean_ci95"]}


def recorded_seeds(out: Path, seeds: int | None) -> int | None:
    """``--seeds`` as given, else what the study directory was run with (a study run once with seeds keeps its
    ``seed<k>/`` layout: a later command without ``--seeds`` must not train into the run folder above them)."""
    return _recorded(out, "seeds", seeds)


def recorded_fold_seeds(out: Path, fold_seeds: int | None) -> int | None:
    """``--fold-seeds`` as given, else what the study directory was run with (as ``recorded_seeds``)."""
    return _recorded(out, "fold_seeds", fold_seeds)


def _recorded(out: Path, key: str, given: int | None) -> int | None:
    if given is not None:
        return given
    try:
        return json.loads((out / STUDY_FILE).read_text()).get(key)
    except (OSError, json.JSONDecodeError):
        return None


def resolve_folds(folds: int | None, fold_file: str | Path | None) -> tuple[int | None, str | None]:
    """``--folds`` and ``--fold-file`` as a study uses them: the file's absolute path, and K (from the file when
    ``--folds`` is not given; a file with another number of folds than ``--folds`` is an error)."""
    if not fold_file:
        return folds, None
    from aubench_cli.data.splits import read_fold_file

    path = str(Path(fold_file).expanduser().resolve())
    assignment = read_fold_file(path, None, folds)
    return max(assignment.values()) + 1, path


def _trained_without_folds(out: Path) -> list[str]:
    return sorted(str(p.parent.relative_to(out)) for pattern in ("*/last.pt", "*/seed*/last.pt")
                  for p in out.glob(pattern))


def recorded_folds(out: Path, folds: int | None, fold_file: str | None) -> tuple[int | None, str | None]:
    """The folds a study directory runs on: as given (``resolve_folds``), else as ``study.json`` recorded them (a
    study run once with folds keeps them, as with ``--seeds``). Refused: folds other than the recorded ones, and
    folds on a directory whose runs were trained without them (both: start the study in another --out)."""
    try:
        record = json.loads((out / STUDY_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        record = {}
    was = (record.get("folds"), record.get("fold_file"))
    if folds is None and fold_file is None:
        return was
    if was[0] is None:
        trained = _trained_without_folds(out) if out.is_dir() else []
        if trained:
            raise UsageError(f"{out} holds runs trained without folds ({', '.join(trained[:3])}); --folds "
                             f"{folds} would mix two protocols in one study",
                             "start the fold study in another directory: --out DIR")
        return folds, fold_file
    if (folds, fold_file) != was:
        def said(k: Any, f: Any) -> str:
            return f"--folds {k}" + (f" --fold-file {f}" if f else "")

        raise UsageError(f"{out} was run with {said(*was)}; {said(folds, fold_file)} deals other folds",
                         f"pass {said(*was)} (or neither), or start the study in another directory: --out DIR")
    return was


def check_caches(cfgs: dict[str, cfgmod.Config]) -> None:
    """A missing cache is one error before anything starts, not one failure per run."""
    from aubench_cli.data.cache import read_header

    for path in sorted({cfg.data.cache for cfg in cfgs.values()}):
        read_header(Path(path))


def study_hint(hint: str, run: str) -> str:
    """A hint written for ``aubench train`` said for run ``run`` of a study, which takes weights per run:
    ``--weights FILE`` becomes ``--weights RUN=FILE``, except inside a quoted command (`aubench models ...
    --weights FILE`), which is another command's syntax and stays as it is."""
    spans = hint.split("`")  # odd positions are inside backticks
    return "`".join(part if i % 2 else part.replace("--weights FILE", f"--weights {run}=FILE")
                    for i, part in enumerate(spans))


def run_unit(unit: Unit, cfg: cfgmod.Config, out: Path, log: LogFn = lambda msg: None,
             progress: Callable[[str, dict], None] | None = None, debug: bool = False) -> dict[str, Any]:
    """Train then evaluate one unit, recording its state in ``status/<key>.json``; a failure is returned, not
    raised (unless ``debug``), so one failed run does not stop the others. Used in process and by the launchers'
    jobs alike."""
    run = unit.run
    adopt_unseeded(out, unit, log)
    started = _now()
    base = {"name": run.name, "seed": unit.seed, "fold": unit.fold, "assignment": unit.assignment, "key": unit.key,
            "title": run.title, "arch": cfg.model.arch}
    try:
        outcome = _do_run(run, cfg, unit.dir(out), log, progress, label=unit.key)
    except KeyboardInterrupt:
        _write_status(out, unit.key, {"run": run.name, "seed": unit.seed, "fold": unit.fold,
                                      "assignment": unit.assignment, "state": "interrupted",
                                      "at": _now()})
        raise
    except Exception as exc:  # noqa: BLE001  one failed run must not stop the study
        if debug:
            raise
        message = exc.message if isinstance(exc, AubenchError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, AubenchError) and exc.hint:
            message += " - " + study_hint(exc.hint, run.name)
        _write_status(out, unit.key, {"run": run.name, "seed": unit.seed, "fold": unit.fold,
                                      "assignment": unit.assignment, "state": "failed",
                                      "error": message, "started": started, "at": _now()})
        log(f"{unit.key}: FAILED: {message}")
        return {**base, "state": "failed", "error": message, "trained": False, "evaluated": False,
                "mean_accuracy": None}
    state = "done" if (outcome["trained"] or outcome["evaluated"]) else "skipped"
    _write_status(out, unit.key, {"run": run.name, "seed": unit.seed, "fold": unit.fold,
                                  "assignment": unit.assignment, "state": "done",
                                  "started": started, "at": _now(), **outcome})
    return {**base, "state": state, "error": None, **outcome}


def run_study(
    study: Study,
    out: Path,
    *,
    runs: list[StudyRun] | None = None,
    units: list[Unit] | None = None,
    sets: list[str] | None = None,
    cache: str | None = None,
    weights: dict[str, str] | None = None,
    seeds: int | None = None,
    folds: int | None = None,
    fold_file: str | None = None,
    log: LogFn = lambda msg: None,
    progress: Callable[[str, dict], None] | None = None,
    debug: bool = False,
    fold_seeds: int | None = None,
) -> list[dict[str, Any]]:
    """Train then evaluate ``units`` (or ``runs`` on ``folds`` at ``seeds``) into
    ``out/<name>[/fold<i>][/seed<k>]/``; one result per unit, a failure not stopping the others.

    Ctrl-C (KeyboardInterrupt) stops the study after the current run saved its checkpoint; the same command
    resumes it.
    """
    sets = list(sets or [])
    folds, fold_file = recorded_folds(out, *resolve_folds(folds, fold_file))
    fold_seeds = recorded_fold_seeds(out, fold_seeds)
    check_fold_seeds(fold_seeds, folds, fold_file)
    if units is None:
        units = expand_units(runs if runs is not None else study.runs, seeds, folds, fold_seeds)
    cfgs = unit_configs(study, units, sets, cache, weights, folds, fold_file)  # bad settings fail first
    check_caches(cfgs)
    check_folds(cfgs)
    write_study_file(study, out, sets, cache, seeds, folds, fold_file, fold_seeds)
    return [run_unit(unit, cfgs[unit.key], out, log, progress, debug) for unit in units]


def human_flops(n: float) -> str:
    if n <= 0 or not math.isfinite(n):
        return "0"
    for div, suffix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.1f} {suffix}FLOP"
    return f"{n:.0f} FLOP"
