"""Input normalization (Table II, left) and augmentation severity (Table II, middle), as registries.

Images enter as uint8 on the training device; ``to_float`` scales them to [0, 1]; augmentation (training only)
works on that range; normalization comes last and is identical in training, validation, test and prediction.
Featurewise statistics are two scalars computed once over the training split (as Keras' featurewise options do
for one channel) and stored with the run. Augmentation groups are small torch modules (kornia's brightness is
additive and its contrast a gain around 0; ours multiply, and stretch around each image's mean, as documented),
applied under ``no_grad`` to the batch already on the device, with parameters drawn per image up front; their
magnitudes live in the ``augment`` section of the config (the paper gives none: docs/training.md states ours).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aubench_cli.errors import UsageError, suggest

EPS = 1e-6


@dataclass(frozen=True)
class FeatureStats:
    mean: float = 0.0  # in [0, 1] pixel units
    std: float = 1.0


def to_float(batch_u8: torch.Tensor) -> torch.Tensor:
    """N x 96 x 96 (or N x 1 x 96 x 96) uint8 -> N x 1 x 96 x 96 float (torch's default dtype) in [0, 1]."""
    x = batch_u8 if batch_u8.dim() == 4 else batch_u8.unsqueeze(1)
    return x.to(torch.get_default_dtype()).div_(255.0)


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


# ---- augmentation (Section IV-B) ------------------------------------------------------------------------------
# Every random choice of a training batch is drawn up front, as one row of numbers per image (``PARAMS``), from a
# numpy stream keyed by (seed, step): under DDP each rank draws the whole batch's parameters, keeps its own rows and
# augments only those, so W ranks augment exactly as one process does. The ops themselves are plain tensor code on
# the training device (no host sync): flip, then brightness and contrast, then blur, then one affine warp.
PARAMS = ("flip", "brightness", "contrast", "blur", "sigma", "angle", "shift_x", "shift_y", "scale")
_P = {name: i for i, name in enumerate(PARAMS)}
_OPS = {"A": (), "B": ("flip", "photometric"), "C": ("flip", "photometric", "blur", "zoom"),
        "D": ("flip", "photometric", "blur", "zoom", "shift", "rotate")}
AUGMENTATIONS = tuple(_OPS)  # the groups of Table II, by name (the CLI's choices mirror it)
BLUR_KERNEL = 5  # pixels; sigma drawn in [0.1, augment.blur_sigma]


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel by the image's factor (drawn in [1 - b, 1 + b]), clipped to [0, 1]."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0.0, 1.0)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Stretch each image around its own mean by its factor (drawn in [1 - c, 1 + c]), clipped to [0, 1]."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor.view(-1, 1, 1, 1) + mean).clamp_(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, on: torch.Tensor, size: int = BLUR_KERNEL) -> torch.Tensor:
    """Separable Gaussian blur with a sigma per image, reflect-padded; images with ``on`` false are unchanged
    (their kernel is a delta, so the whole batch is one grouped convolution, with no data-dependent branch)."""
    n, c, h, w = x.shape
    r = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
    g = torch.exp(-(r**2) / (2 * sigma.view(-1, 1) ** 2))
    g = g / g.sum(1, keepdim=True)
    delta = (r == 0).to(x.dtype).expand_as(g)
    k = torch.where(on.view(-1, 1), g, delta).repeat_interleave(c, 0)  # (n * c, size)
    y = F.pad(x.reshape(1, n * c, h, w), (size // 2,) * 4, mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, size), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, size, 1), groups=n * c)
    return y.view(n, c, h, w)


def affine(x: torch.Tensor, angle_deg: torch.Tensor, shift_x: torch.Tensor, shift_y: torch.Tensor,
           scale: torch.Tensor) -> torch.Tensor:
    """Zoom by ``scale``, rotate by ``angle_deg`` (counter-clockwise) around the centre, then shift by a fraction
    of the side (positive: right, down): one bilinear resampling, border pixels repeated outside the image."""
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    # Output -> input map in normalized coordinates ([-1, 1], y down): p_in = R(-a) (p_out - t) / s.
    tx, ty = 2 * shift_x, 2 * shift_y
    m00, m01 = cos / scale, -sin / scale
    m10, m11 = sin / scale, cos / scale
    theta = torch.stack([torch.stack([m00, m01, -(m00 * tx + m01 * ty)], 1),
                         torch.stack([m10, m11, -(m10 * tx + m11 * ty)], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Augmentation(nn.Module):
    """One severity group: ``sample(rng, n)`` draws the parameters of n images, ``forward(x, params)`` applies them.

    ``params`` is an ``(n, len(PARAMS))`` float tensor on the batch's device. Every parameter is drawn whatever
    the group (the group decides which are used), so the stream is the same for all groups and a row's numbers do
    not depend on the batch size.
    """

    def __init__(self, group: str, magnitudes):
        super().__init__()
        self.group, self.m = group, magnitudes
        self.ops = _OPS[group]

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        m = self.m
        u = rng.random((n, len(PARAMS)))
        p = np.empty_like(u)
        p[:, _P["flip"]] = u[:, 0] < m.flip_p
        p[:, _P["brightness"]] = 1 - m.brightness + 2 * m.brightness * u[:, 1]
        p[:, _P["contrast"]] = 1 - m.contrast + 2 * m.contrast * u[:, 2]
        p[:, _P["blur"]] = u[:, 3] < m.blur_p
        p[:, _P["sigma"]] = 0.1 + (m.blur_sigma - 0.1) * u[:, 4]
        p[:, _P["angle"]] = m.rotate * (2 * u[:, 5] - 1)
        p[:, _P["shift_x"]] = m.shift * (2 * u[:, 6] - 1)
        p[:, _P["shift_y"]] = m.shift * (2 * u[:, 7] - 1)
        p[:, _P["scale"]] = 1 - m.zoom + 2 * m.zoom * u[:, 8]
        return p.astype(np.float32)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        col = {name: params[:, i] for name, i in _P.items()}
        if "flip" in self.ops:
            x = torch.where(col["flip"].view(-1, 1, 1, 1) > 0, x.flip(-1), x)
        if "photometric" in self.ops:
            x = contrast(brightness(x, col["brightness"]), col["contrast"])
        if "blur" in self.ops:
            x = gaussian_blur(x, col["sigma"].clamp(min=1e-3), col["blur"] > 0)
        if "zoom" in self.ops:
            zero = torch.zeros_like(col["angle"])
            rotating = "rotate" in self.ops
            x = affine(x, col["angle"] if rotating else zero, col["shift_x"] if "shift" in self.ops else zero,
                       col["shift_y"] if "shift" in self.ops else zero, col["scale"])
        return x.clamp_(0.0, 1.0)


def check_augmentation(group: str) -> str:
    if group not in _OPS:
        raise UsageError(f"unknown augmentation group {group!r}", "valid groups: A (none), B, C, D (most severe)")
    return group


def build_augmentation(group: str, magnitudes) -> Augmentation | None:
    """The module of a group (``None`` for group A)."""
    check_augmentation(group)
    return Augmentation(group, magnitudes) if _OPS[group] else None


def augment(pipeline: Augmentation | None, x: torch.Tensor, params: torch.Tensor | None = None,
            rng: np.random.Generator | None = None) -> torch.Tensor:
    """Augment a [0, 1] batch on its device, outside autograd; values stay in [0, 1]. Without ``params`` they are
    drawn here from ``rng`` (a fresh default stream when none is given)."""
    if pipeline is None:
        return x
    if params is None:
        params = torch.from_numpy(pipeline.sample(rng or np.random.default_rng(), len(x))).to(x.device)
    return pipeline(x, params)
