"""Normalizations and augmentation groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aubench_cli.config import AugmentConfig
from aubench_cli.errors import UsageError
from aubench_cli.training.transforms import FeatureStats, augment, build_augmentation, feature_stats, normalize, to_float


def test_normalizations():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8) * 0.5 + 0.2
    assert torch.equal(normalize(x, "raw"), x)
    sc = normalize(x, "sample-center")
    assert sc.flatten(1).mean(1).abs().max() < 1e-6
    sn = normalize(x, "sample-norm")
    assert torch.allclose(sn.flatten(1).std(1, unbiased=False), torch.ones(4), atol=1e-3)
    stats = FeatureStats(0.3, 0.1)
    assert torch.allclose(normalize(x, "feature-center", stats), x - 0.3)
    assert torch.allclose(normalize(x, "feature-norm", stats), (x - 0.3) / (0.1 + 1e-6))
    with pytest.raises(UsageError):
        normalize(x, "zscore")


def test_feature_stats_are_exact_and_chunked():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (50, 96, 96), dtype=np.uint8)
    stats, n = feature_stats(images, np.arange(10, 50), rng, chunk=7)
    ref = images[10:50].astype(np.float64) / 255
    assert n == 40
    assert stats.mean == pytest.approx(ref.mean()) and stats.std == pytest.approx(ref.std())
    sampled, n2 = feature_stats(images, np.arange(50), np.random.default_rng(1), max_frames=20)
    assert n2 == 20 and abs(sampled.mean - images.mean() / 255) < 0.01


def test_to_float_scales_uint8():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    assert to_float(x).tolist() == [[[[0.0, 1.0]]]]


@pytest.mark.parametrize("group", ["B", "C", "D"])
def test_augmentation_groups_change_images_and_keep_range(group):
    torch.manual_seed(0)
    pipeline = build_augmentation(group, AugmentConfig())
    x = torch.rand(16, 1, 96, 96)
    y = augment(pipeline, x)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)
    assert not y.requires_grad


def test_group_a_is_identity_and_groups_grow():
    assert build_augmentation("A", AugmentConfig()) is None
    sizes = [len(list(build_augmentation(g, AugmentConfig()).children())) for g in "BCD"]
    assert sizes[0] < sizes[1] <= sizes[2]
    with pytest.raises(UsageError):
        build_augmentation("E", AugmentConfig())


def test_rotation_magnitude_is_settable():
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 96, 96)
    x[..., 40:56, :] = 1.0  # a horizontal bar
    m = AugmentConfig(flip_p=0.0, brightness=0.0, contrast=0.0, blur_p=0.0, zoom=0.0, shift=0.0, rotate=0.0)
    still = augment(build_augmentation("D", m), x)
    assert torch.allclose(still, x, atol=1e-4)
