"""Input normalization (Table II, left) and augmentation severity (Table II, middle), as registries.

Images enter as uint8 on the training device; ``to_float`` scales them to [0, 1]; augmentation (training only)
works on that range; normalization comes last and is identical in training, validation, test and prediction.
Featurewise statistics are two scalars computed once over the training split (as Keras' featurewise options do
for one channel) and stored with the run. Augmentation groups are kornia modules in one ``AugmentationSequential``,
applied under ``no_grad`` to the batch already on the device; their magnitudes live in the ``augment`` section of
the config (the paper gives none: docs/training.md states ours).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from aubench_cli.errors import UsageError, suggest

EPS = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    mean: float = 0.0  # in [0, 1] pixel units
    std: float = 1.0


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """N x 96 x 96 (or N x 1 x 96 x 96) uint8 -> N x 1 x 96 x 96 float in [0, 1]."""
    x = batch_u8 if batch_u8.dim() == 4 else batch_u8.unsqueeze(1)
    return x.float().div_(255.0)


def _sample_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = x.flatten(1)
    return flat.mean(1).view(-1, 1, 1, 1), flat.std(1, unbiased=False).view(-1, 1, 1, 1)


NORMALIZATIONS: dict[str, Callable[[torch.Tensor, FeatureStats], torch.Tensor]] = {
    "raw": lambda x, s: x,
    "sample-center": lambda x, s: x - _sample_stats(x)[0],
    "sample-norm": lambda x, s: (x - _sample_stats(x)[0]) / (_sample_stats(x)[1] + EPS),
    "feature-center": lambda x, s: x - s.mean,
    "feature-norm": lambda x, s: (x - s.mean) / (s.std + EPS),
}
NEEDS_FEATURE_STATS = {"feature-center", "feature-norm"}


def check_norm(name: str) -> str:
    if name not in NORMALIZATIONS:
        raise UsageError(f"unknown normalization {name!r}", suggest(name, NORMALIZATIONS))
    return name


def normalize(x: torch.Tensor, name: str, stats: FeatureStats = FeatureStats()) -> torch.Tensor:
    return NORMALIZATIONS[check_norm(name)](x, stats)


def feature_stats(images, index: np.ndarray, rng: np.random.Generator, max_frames: int = 200_000,
                  chunk: int = 4096) -> tuple[FeatureStats, int]:
    """Mean and std of every pixel of the training frames (a seeded sample of ``max_frames`` when larger).

    Returns the statistics and the number of frames they came from. Accumulates in float64, chunk by chunk, so
    a cache larger than memory is fine.
    """
    index = np.asarray(index)
    if len(index) > max_frames:
        index = np.sort(rng.choice(index, max_frames, replace=False))
    total = total_sq = 0.0
    count = 0
    for start in range(0, len(index), chunk):
        block = np.asarray(images[index[start:start + chunk]], dtype=np.float64) / 255.0
        total += block.sum()
        total_sq += np.square(block).sum()
        count += block.size
    if count == 0:
        raise UsageError("no training frames to compute featurewise statistics from", "check the cache's train split")
    mean = total / count
    std = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))
    return FeatureStats(float(mean), std), len(index)


# Augmentation severity groups (Section IV-B). Each builds its kornia modules from the magnitudes.
def _group_b(m) -> list[nn.Module]:
    import kornia.augmentation as K

    return [
        K.RandomHorizontalFlip(p=m.flip_p),
        K.RandomBrightness(brightness=(1 - m.brightness, 1 + m.brightness), p=1.0),
        K.RandomContrast(contrast=(1 - m.contrast, 1 + m.contrast), p=1.0),
    ]


def _group_c(m) -> list[nn.Module]:
    import kornia.augmentation as K

    return _group_b(m) + [
        K.RandomGaussianBlur(kernel_size=(5, 5), sigma=(0.1, m.blur_sigma), p=m.blur_p),
        K.RandomAffine(degrees=0.0, scale=(1 - m.zoom, 1 + m.zoom), p=1.0, padding_mode="border"),
    ]


def _group_d(m) -> list[nn.Module]:
    import kornia.augmentation as K

    # C's zoom and D's shift and rotation as one affine warp: one resampling of the image instead of two.
    return _group_b(m) + [
        K.RandomGaussianBlur(kernel_size=(5, 5), sigma=(0.1, m.blur_sigma), p=m.blur_p),
        K.RandomAffine(degrees=m.rotate, translate=(m.shift, m.shift), scale=(1 - m.zoom, 1 + m.zoom), p=1.0,
                       padding_mode="border"),
    ]


AUGMENTATIONS: dict[str, Callable[..., list[nn.Module]]] = {
    "A": lambda m: [],
    "B": _group_b,
    "C": _group_c,
    "D": _group_d,
}


def build_augmentation(group: str, magnitudes) -> nn.Module | None:
    """The kornia pipeline of a group (``None`` for group A)."""
    if group not in AUGMENTATIONS:
        raise UsageError(f"unknown augmentation group {group!r}", "valid groups: A (none), B, C, D (most severe)")
    modules = AUGMENTATIONS[group](magnitudes)
    if not modules:
        return None
    import kornia.augmentation as K

    return K.AugmentationSequential(*modules, data_keys=["input"])


def augment(pipeline: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    """Apply a training augmentation to a [0, 1] batch on its device, outside autograd; values stay in [0, 1]."""
    if pipeline is None:
        return x
    with torch.no_grad():
        return pipeline(x).clamp_(0.0, 1.0)
