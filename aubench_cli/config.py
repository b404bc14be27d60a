"""One source of truth for a run's settings: dataclasses, filled in a fixed order.

Order of precedence (later wins): the defaults below, then a preset YAML (``--preset``), then ``--set
key=value`` overrides, then explicit command-line options. Keys are dotted (``train.lr``); an unknown key is an
error that names the closest valid keys. The resolved config is dumped to YAML next to a run's outputs and inside
its checkpoints, so a run can always be reproduced from what it wrote.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from aubench_cli.errors import UsageError, suggest

# The paper's 12 AUs (Table I). A dataset brings its own list; this is the default for synthetic data and docs.
PAPER_AUS = ["AU01", "AU02", "AU04", "AU06", "AU07", "AU09", "AU12", "AU15", "AU17", "AU24", "AU25", "AU28"]

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
# Top-level preset keys that are not settings: a study preset (docs/studies.md) lists its runs and the paper's
# numbers beside its shared settings, so `aubench train --preset table2-normalization` uses the shared settings.
PRESET_META_KEYS = ("name", "description", "study", "runs", "paper")


@dataclass
class ModelConfig:
    arch: str = "baseline"
    # A local state dict or aubench checkpoint to start from; its classifier is replaced.
    weights: str | None = None
    # Use the library's weight registry (torchvision / timm); needs network access the first time.
    pretrained: bool = False
    # Accept weights that leave tensors outside the classifier at init (refused by default; see `aubench models`).
    allow_partial_weights: bool = False
    # Build layout of networks that have several (resnet50: v1, the paper's Keras layout, or v1.5, torchvision's).
    # None: the network's default, or for --pretrained the layout the registry's weights were trained in. A run
    # records the layout it was built in.
    layout: str | None = None


@dataclass
class DataConfig:
    cache: str = "aubench-cache"
    # Section V subsets: fraction of each training subject's frames, and fraction of training subjects.
    # frames_frac 1: all frames of the chosen subjects; F < 1: exactly round(F x training frames) in all.
    frames_frac: float = 1.0
    subjects_frac: float = 1.0
    # An AU with no positives or negatives in a split stops the run unless this drops it (with a warning).
    drop_unbalanceable: bool = False
    # Subject-exclusive K-fold cross-validation (docs/training.md#folds): with folds K and fold I the run tests on
    # fold I's subjects, validates on a share val_subjects_frac of the others and trains on the rest; the cache's
    # own split is not used. Subjects are dealt into folds by a hash of (fold_seed, name), or as fold_file says
    # (CSV subject,fold). fold_seed is not train.seed, so that --seeds repeats a run on the same folds.
    folds: int | None = None
    fold: int | None = None
    fold_file: str | None = None
    fold_seed: int = 0
    val_subjects_frac: float = 0.15


@dataclass
class TrainConfig:
    balance: str = "oversample"  # the paper's baseline (Section II-C)
    norm: str = "raw"  # Table II's first column is the baseline
    aug: str = "D"  # "random flipping, shifting, zooming, etc." (Section II-C) is group D
    pos_per_au: int = 4  # 4 positives + 4 negatives per AU per batch (Section II-C)
    neg_per_au: int = 4
    epochs: int = 600
    batches_per_epoch: int = 300
    val_batches: int = 300
    # None means the paper's choice for the architecture: Adagrad 0.005 from scratch, Adam 1e-4 fine-tuned.
    optimizer: str | None = None
    lr: float | None = None
    seed: int = 0
    device: str = "auto"
    # "auto": channels_last (measured as fast or faster for every network, CPU and CUDA); "false" to turn it off
    channels_last: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the model (slow start, faster steps)
    # The training step and validation replayed as CUDA graphs (training/graphs.py): "auto" is on for CUDA and off
    # elsewhere; a setting that cannot be captured (DDP, --compile, frames not in GPU memory) falls back to eager.
    # (YAML reads on/off as booleans: either form is accepted and recorded as on/off.)
    cuda_graphs: str | bool = "auto"
    # Several processes (torchrun): false runs the one-process experiment (each rank trains on 1/W of every batch);
    # true gives each rank a full batch, the learning rate times W and 1/W of the steps (throughput, another run).
    scale_batch: bool = False
    # TensorBoard event files in the run directory, per epoch (training/tracking.py): on, as in timm and Lightning;
    # a resumed run takes this from the command that resumes it (it changes no result).
    tensorboard: bool = True


@dataclass
class AugmentConfig:
    """Magnitudes of the augmentation groups (the paper gives none; these are ours, see docs/training.md)."""

    flip_p: float = 0.5  # horizontal flip probability (B)
    brightness: float = 0.2  # multiplicative factor in [1 - b, 1 + b] (B)
    contrast: float = 0.2  # factor in [1 - c, 1 + c] (B)
    blur_p: float = 0.3  # Gaussian blur probability (C)
    blur_sigma: float = 1.2  # largest blur sigma in pixels (C)
    zoom: float = 0.1  # scale in [1 - z, 1 + z] (C)
    shift: float = 0.08  # translation up to this fraction of the side, each axis (D): ~8 px at 96
    rotate: float = 10.0  # rotation up to +-degrees (D)


@dataclass
class EvalConfig:
    split: str = "test"
    batches: int = 3000  # the paper's 3000 balanced test batches
    seed: int = 0
    checkpoint: str = "best"


@dataclass
class ProfileConfig:
    input_size: int = 96
    outputs: int | None = None  # None: 12 (the paper's AUs), or 14 with --paper (see docs/architectures.md)
    batch: int = 16
    device: str = "auto"


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)


def _fields(obj: Any) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(type(obj))
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(obj)}


def all_keys(cfg: Any | None = None, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config."""
    cfg = Config() if cfg is None else cfg
    keys = []
    for name, _ in _fields(cfg).items():
        value = getattr(cfg, name)
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotated type ``tp``, converting where the meaning is unambiguous."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{key} must be a list, got {value!r}", "give a YAML list or comma-separated values")
        return [_coerce(v, item, key) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{key} must be a mapping, got {value!r}", "give a YAML mapping")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{key} must be true or false, got {value!r}", f"use {key}=true or {key}=false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise UsageError(f"{key} must be an integer, got {value!r}", f"e.g. {key}=10")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise UsageError(f"{key} must be a number, got {value!r}", f"e.g. {key}=0.5")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise UsageError(f"{key} must be a string, got {value!r}", f"e.g. {key}=name")
    return value


def set_value(cfg: Config, key: str, value: Any, source: str = "--set") -> None:
    """Set one dotted key, type-checked; unknown keys are errors naming close matches."""
    target: Any = cfg
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields_ = _fields(target)
        if part not in fields_:
            where = ".".join(parts[:depth]) or "the config"
            raise UsageError(
                f"unknown setting {key!r} in {source} (no {part!r} in {where})",
                suggest(key, all_keys()),
            )
        f, tp = fields_[part]
        current = getattr(target, part)
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise UsageError(f"{key} is a section, not a value ({source})", f"set e.g. {key}.<name>=...")
                apply_mapping(cfg, value, source, prefix=key + ".")
            else:
                setattr(target, part, _coerce(value, tp, key))
            return
        if not dataclasses.is_dataclass(current):
            raise UsageError(f"{'.'.join(parts[: depth + 1])} is a value, not a section ({source})", suggest(key, all_keys()))
        target = current


def apply_mapping(cfg: Config, mapping: dict[str, Any], source: str, prefix: str = "") -> None:
    """Apply a nested mapping (as read from a preset) onto ``cfg``."""
    for name, value in mapping.items():
        set_value(cfg, prefix + str(name), value, source)


def parse_set(item: str) -> tuple[str, Any]:
    """Parse one ``key=value`` override; the value is read as YAML (``0.5`` is a number, ``null`` is None)."""
    if "=" not in item:
        raise UsageError(f"--set expects key=value, got {item!r}", "e.g. --set train.lr=0.001")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def find_preset(name: str | Path) -> Path:
    """A preset by path, or by name in ``presets/`` (``paper-baseline`` -> ``presets/paper-baseline.yaml``)."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in (Path.cwd() / "presets", PRESET_DIR):
        for candidate in (folder / f"{name}.yaml", folder / str(name)):
            if candidate.is_file():
                return candidate
    known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml")) if PRESET_DIR.is_dir() else []
    raise UsageError(f"preset {str(name)!r} not found", suggest(str(name), known) if known else "give a YAML file path")


def load_preset(name: str | Path) -> dict[str, Any]:
    path = find_preset(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"preset {path} is not valid YAML: {exc}", "fix the file's syntax") from exc
    if not isinstance(data, dict):
        raise UsageError(f"preset {path} must be a mapping of sections", "e.g. 'train: {lr: 0.001}'")
    return data


def resolve(
    preset: str | Path | None = None,
    sets: list[str] | None = None,
    options: dict[str, Any] | None = None,
    base: Config | None = None,
) -> Config:
    """Defaults (or a copy of ``base``), then preset, then ``--set`` overrides, then explicit options (``None``
    values are skipped)."""
    cfg = from_dict(to_dict(base)) if base is not None else Config()
    if preset is not None:
        data = load_preset(preset)
        data = {k: v for k, v in data.items() if k not in PRESET_META_KEYS}
        apply_mapping(cfg, data, source=f"preset {preset}")
    for item in sets or []:
        key, value = parse_set(item)
        set_value(cfg, key, value, source=f"--set {item}")
    for key, value in (options or {}).items():
        if value is not None:
            set_value(cfg, key, value, source="the command line")
    check_values(cfg)
    return cfg


# The valid range of each numeric setting: (lowest, highest, lowest included, highest included, an example). None
# as a bound: open on that side. A value outside is refused where the config is resolved (``check_values``), as
# one line naming the setting, its value and the range, before anything runs (torch would stop on a negative
# learning rate with a traceback, and a learning rate of 0 would train nothing, silently).
RANGES: dict[str, tuple[float | None, float | None, bool, bool, str]] = {
    "train.lr": (0, None, False, False, "0.005"),
    "train.epochs": (1, None, True, False, "10"),
    "train.batches_per_epoch": (1, None, True, False, "300"),
    "train.val_batches": (1, None, True, False, "300"),
    "train.pos_per_au": (1, None, True, False, "4"),
    "train.neg_per_au": (1, None, True, False, "4"),
    "train.seed": (0, None, True, False, "0"),
    "data.frames_frac": (0, 1, False, True, "0.2"),
    "data.subjects_frac": (0, 1, False, True, "0.6"),
    "data.folds": (2, None, True, False, "5"),
    "data.fold": (0, None, True, False, "0"),
    "data.fold_seed": (0, None, True, False, "0"),
    "data.val_subjects_frac": (0, 1, False, False, "0.15"),
    "augment.flip_p": (0, 1, True, True, "0.5"),
    "augment.brightness": (0, 1, True, False, "0.2"),
    "augment.contrast": (0, 1, True, False, "0.2"),
    "augment.blur_p": (0, 1, True, True, "0.3"),
    "augment.blur_sigma": (0, None, True, False, "1.2"),
    "augment.zoom": (0, 1, True, False, "0.1"),
    "augment.shift": (0, 1, True, False, "0.08"),
    "augment.rotate": (0, 180, True, True, "10"),
    "eval.batches": (1, None, True, False, "3000"),
    "eval.seed": (0, None, True, False, "0"),
    "profile.input_size": (1, None, True, False, "96"),
    "profile.outputs": (1, None, True, False, "12"),
    "profile.batch": (1, None, True, False, "16"),
}
# The command-line option of a setting, where it has one, for the hint (otherwise --set KEY=VALUE).
OPTION_OF = {
    "train.lr": "--lr", "train.epochs": "--epochs", "train.batches_per_epoch": "--batches-per-epoch",
    "train.val_batches": "--val-batches", "train.seed": "--seed", "data.frames_frac": "--frames-frac",
    "data.subjects_frac": "--subjects-frac", "data.folds": "--folds", "data.fold": "--fold",
    "data.fold_seed": "--fold-seed", "data.val_subjects_frac": "--val-subjects-frac",
    "profile.input_size": "--input", "profile.outputs": "--outputs", "profile.batch": "--batch",
}


def _range_text(low: float | None, high: float | None, low_in: bool, high_in: bool) -> str:
    if high is None:
        return f"at least {low:g}" if low_in else f"greater than {low:g}"
    if low_in and high_in:
        return f"between {low:g} and {high:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def check_values(cfg: Config) -> None:
    """Refuse a numeric setting outside its range (``RANGES``), and a fold outside ``data.folds``."""
    import math

    flat = {f"{section}.{key}": value for section, values in to_dict(cfg).items() for key, value in values.items()}
    for key, (low, high, low_in, high_in, example) in RANGES.items():
        value = flat[key]
        if value is None:
            continue
        ok = math.isfinite(value) and (low is None or (value >= low if low_in else value > low)) \
            and (high is None or (value <= high if high_in else value < high))
        if not ok:
            option = OPTION_OF.get(key)
            hint = f"e.g. {option} {example}" if option else f"e.g. --set {key}={example}"
            raise UsageError(f"{key} must be {_range_text(low, high, low_in, high_in)}, got {value:g}", hint)
    folds, fold = cfg.data.folds, cfg.data.fold
    if folds is not None and fold is not None and fold >= folds:
        raise UsageError(f"data.fold must be below data.folds ({folds}), got {fold}", f"e.g. --fold {folds - 1}")


def to_dict(cfg: Config) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    apply_mapping(cfg, data, source="saved config")
    return cfg


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
