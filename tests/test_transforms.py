"""Normalizations and augmentation groups."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from aubench_cli.config import AugmentConfig
from aubench_cli.errors import UsageError
from aubench_cli.training.transforms import (
    PARAMS,
    FeatureStats,
    augment,
    brightness,
    build_augmentation,
    contrast,
    feature_stats,
    gaussian_blur,
    normalize,
    to_float,
)


def test_normalizations():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8) * 0.5 + 0.2
    assert torch.equal(normalize(x, "raw"), x)
    sc = normalize(x, "sample-center")
    assert sc.flatten(1).mean(1).abs().max() < 1e-6
    sn = normalize(x, "sample-norm")
    assert torch.allclose(sn.flatten(1).std(1, unbiased=False), torch.ones(4), atol=1e-3)
    assert sn.flatten(1).mean(1).abs().max() < 1e-5  # centred, not only scaled
    assert torch.allclose(sn, (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.flatten(1).std(1, unbiased=False).view(-1, 1, 1, 1), atol=1e-4)
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


NEUTRAL = {"flip": 0.0, "brightness": 1.0, "contrast": 1.0, "blur": 0.0, "sigma": 1.0, "angle": 0.0,
           "shift_x": 0.0, "shift_y": 0.0, "scale": 1.0}


def _params(n=1, **values):
    row = [values.get(name, NEUTRAL[name]) for name in PARAMS]
    return torch.tensor([row] * n, dtype=torch.float32)


@pytest.mark.parametrize("group", ["B", "C", "D"])
def test_augmentation_groups_change_images_and_keep_range(group):
    pipeline = build_augmentation(group, AugmentConfig())
    x = torch.rand(16, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    y = augment(pipeline, x, rng=np.random.default_rng(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert not torch.allclose(x, y)
    assert not y.requires_grad


def test_neutral_parameters_change_nothing():
    x = torch.rand(4, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    for group in "BCD":
        assert torch.allclose(build_augmentation(group, AugmentConfig())(x, _params(4)), x, atol=1e-5), group


def test_sampled_parameters_stay_in_their_documented_ranges():
    m = AugmentConfig()
    p = build_augmentation("D", m).sample(np.random.default_rng(0), 20000)
    col = {name: p[:, i] for i, name in enumerate(PARAMS)}
    for name, lo, hi in (("brightness", 1 - m.brightness, 1 + m.brightness), ("contrast", 1 - m.contrast, 1 + m.contrast),
                         ("angle", -m.rotate, m.rotate), ("shift_x", -m.shift, m.shift), ("scale", 1 - m.zoom, 1 + m.zoom),
                         ("sigma", 0.1, m.blur_sigma)):
        assert lo - 1e-6 <= col[name].min() < lo + 0.01 * (hi - lo) and hi - 0.01 * (hi - lo) < col[name].max() <= hi + 1e-6, name
    assert col["flip"].mean() == pytest.approx(m.flip_p, abs=0.02) and col["blur"].mean() == pytest.approx(m.blur_p, abs=0.02)


def test_brightness_multiplies():
    x = torch.full((1, 1, 8, 8), 0.5)
    x[..., 0, 0] = 0.1
    y = brightness(x, torch.tensor([1.2]))
    assert y[0, 0, 1, 1].item() == pytest.approx(0.6) and y[0, 0, 0, 0].item() == pytest.approx(0.12)
    assert build_augmentation("B", AugmentConfig())(x, _params(brightness=0.8))[0, 0, 1, 1].item() == pytest.approx(0.4)


def test_contrast_stretches_around_each_images_mean():
    x = torch.stack([torch.linspace(0.3, 0.5, 64).view(1, 8, 8), torch.linspace(0.6, 0.8, 64).view(1, 8, 8)])
    y = contrast(x, torch.tensor([1.5, 0.5]))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(y.mean(dim=(1, 2, 3), keepdim=True), mean, atol=1e-6)  # each image keeps its mean
    assert torch.allclose(y - mean, (x - mean) * torch.tensor([1.5, 0.5]).view(2, 1, 1, 1), atol=1e-6)


def _bar() -> torch.Tensor:
    x = torch.zeros(1, 1, 96, 96)
    x[..., 44:52, 8:88] = 1.0  # a horizontal bar through the centre
    return x


def test_rotation_turns_the_image_and_only_group_d_rotates():
    x = _bar()
    turned = build_augmentation("D", AugmentConfig())(x, _params(angle=90.0))
    assert torch.allclose(turned, x.transpose(-1, -2), atol=1e-4)  # the bar is now vertical
    assert torch.allclose(build_augmentation("C", AugmentConfig())(x, _params(angle=90.0)), x, atol=1e-4)


def test_shift_moves_by_the_fraction_of_the_side():
    x = torch.zeros(1, 1, 96, 96)
    x[..., 40:50, 30:40] = 1.0
    moved = build_augmentation("D", AugmentConfig())(x, _params(shift_x=12 / 96, shift_y=-6 / 96))
    assert torch.allclose(moved, torch.roll(x, (-6, 12), (-2, -1)), atol=1e-4)  # right 12 px, up 6 px


def test_zoom_scales_around_the_centre():
    x = torch.zeros(1, 1, 96, 96)
    x[..., 38:58, 38:58] = 1.0  # a 20 px square at the centre
    zoomed = build_augmentation("C", AugmentConfig())(x, _params(scale=1.5))
    assert zoomed.sum().item() == pytest.approx(x.sum().item() * 1.5**2, rel=0.03)


def test_blur_only_where_drawn_and_flip_mirrors():
    x = torch.rand(2, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    p = _params(2, sigma=1.2)
    p[0, PARAMS.index("blur")] = 1.0
    y = build_augmentation("C", AugmentConfig())(x, p)
    assert y[0].std() < 0.7 * x[0].std() and torch.allclose(y[1], x[1], atol=1e-5)
    assert torch.allclose(gaussian_blur(torch.full((1, 1, 9, 9), 0.3), torch.tensor([1.0]), torch.tensor([True])),
                          torch.full((1, 1, 9, 9), 0.3), atol=1e-6)  # a flat image stays flat (kernel sums to 1)
    flipped = build_augmentation("B", AugmentConfig())(x, _params(2, flip=1.0))
    assert torch.equal(flipped, x.flip(-1))


def test_rows_augment_independently_so_ranks_can_split_a_batch():
    pipeline = build_augmentation("D", AugmentConfig(blur_p=0.5))
    x = torch.rand(12, 1, 96, 96, generator=torch.Generator().manual_seed(0))
    params = torch.from_numpy(pipeline.sample(np.random.default_rng(3), 12))
    whole = pipeline(x, params)
    for rank in range(3):
        assert torch.allclose(pipeline(x[rank::3], params[rank::3]), whole[rank::3], atol=1e-6)


def test_group_a_is_identity_and_groups_grow():
    assert build_augmentation("A", AugmentConfig()) is None
    ops = [set(build_augmentation(g, AugmentConfig()).ops) for g in "BCD"]
    assert ops[0] < ops[1] < ops[2]
    with pytest.raises(UsageError):
        build_augmentation("E", AugmentConfig())


# -- Table II's groups, pinned against docs/training.md (issue 22, item 11) --------------------------------------
# What each group does and how strongly, as the table in docs/training.md states it: a group that gains or loses
# an operation, or two magnitudes swapped, is a different experiment that would otherwise pass unnoticed.
GROUP_OPS = {
    "A": set(),
    "B": {"flip", "brightness", "contrast"},
    "C": {"flip", "brightness", "contrast", "blur", "zoom"},
    "D": {"flip", "brightness", "contrast", "blur", "zoom", "shift", "rotate"},
}
MAGNITUDES = {"flip_p": 0.5, "brightness": 0.2, "contrast": 0.2, "blur_p": 0.3, "blur_sigma": 1.2, "zoom": 0.1,
              "shift": 0.08, "rotate": 10.0}
# each operation alone, at a value its documented range allows
ONE_OP = {"flip": {"flip": 1.0}, "brightness": {"brightness": 0.8}, "contrast": {"contrast": 1.2},
          "blur": {"blur": 1.0, "sigma": 1.2}, "zoom": {"scale": 1.1}, "shift": {"shift_x": 0.08},
          "rotate": {"angle": 10.0}}
DOC_ROWS = {  # the words of each group's row in the docs table that carry its operations and magnitudes
    "B": ["horizontal flip (p 0.5)", "brightness", "[0.8, 1.2]", "contrast", "c in [0.8, 1.2]"],
    "C": ["B, then", "Gaussian blur (p 0.3, sigma in [0.1, 1.2] px", "zoom around the centre (scale in [0.9, 1.1])"],
    "D": ["C, with the zoom", "a shift (up to 8 % of the side", "a rotation (up to 10 degrees"],
}


def _doc_aug_rows() -> dict[str, str]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = cells[1].split("`")[1] if len(cells) == 3 and cells[1].startswith("`") else None
        if cells[0] == "`--aug`" or (cells[0] == "" and rows and name in GROUP_OPS):
            rows[name] = cells[2]
    return rows


def test_the_docs_table_states_each_groups_operations_and_magnitudes():
    rows = _doc_aug_rows()
    assert set(rows) == set(GROUP_OPS) and rows["A"] == "none"
    for group, words in DOC_ROWS.items():
        for w in words:
            assert w in rows[group], (group, w)
    assert {f.name: getattr(AugmentConfig(), f.name) for f in fields(AugmentConfig)} == MAGNITUDES


def test_presets_use_the_documented_magnitudes():
    from pathlib import Path

    import yaml

    presets = sorted((Path(__file__).resolve().parents[1] / "presets").glob("*.yaml"))
    checked = 0
    for path in presets:
        section = (yaml.safe_load(path.read_text()) or {}).get("augment")
        if section:
            assert section == MAGNITUDES, path.name
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("group", list(GROUP_OPS))
def test_each_group_applies_exactly_its_documented_operations(group):
    x = torch.rand(1, 1, 96, 96, generator=torch.Generator().manual_seed(5)) * 0.6 + 0.2
    x[..., :30, :20] = 0.95  # an asymmetric patch, so that a flip, a shift and a turn all show
    pipeline = build_augmentation(group, AugmentConfig())
    if group == "A":
        assert pipeline is None
        return
    for op, values in ONE_OP.items():
        changed = not torch.allclose(pipeline(x, _params(**values)), x, atol=1e-4)
        assert changed == (op in GROUP_OPS[group]), (group, op)
