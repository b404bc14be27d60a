"""Samplers and the per-AU loss: batch composition, statistics, hand-computed losses, cost weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aubench_cli.training.sampling import (
    BalancedSampler,
    build_pools,
    check_balanceable,
    correct_counts,
    cost_weights,
    loss_weights,
    make_sampler,
    per_au_bce,
    undersampled,
    weighted_bce,
)


def _labels(n=500, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < np.array([0.05, 0.2, 0.4, 0.6])[:k]).astype(np.int8)
    labels[rng.random((n, k)) < 0.05] = -1
    return labels


def test_oversample_has_exactly_4_pos_and_4_neg_per_au_in_every_batch():
    labels = _labels()
    index = np.arange(len(labels))
    sampler = make_sampler("oversample", labels, index, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    for _ in range(50):
        idx, targets = sampler.draw(rng, labels)
        assert len(idx) == 8 * 4 and targets.shape == (32, 4)
        for k in range(4):
            rows = targets[:, k] >= 0
            assert rows.sum() == 8
            assert (labels[idx[rows], k] == targets[rows, k]).all()  # targets are the frames' true labels
            assert (targets[rows, k] == 1).sum() == 4
            assert (labels[idx[targets[:, k] == 1], k] == 1).all()
            assert (labels[idx[targets[:, k] == 0], k] == 0).all()


def test_oversampling_repeats_rare_positives_and_covers_the_pool():
    labels = _labels()
    pools = build_pools(labels, np.arange(len(labels)))
    sampler = BalancedSampler(pools)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        idx, targets = sampler.draw(rng)
        seen |= set(idx[targets[:, 0] == 1].tolist())
    assert seen == set(pools.pos[0].tolist())  # every rare positive drawn, many times over


def test_draws_are_deterministic_by_seed():
    labels = _labels()
    sampler = make_sampler("oversample", labels, np.arange(len(labels)), np.random.default_rng(0))
    a = sampler.draw(np.random.default_rng(5))[0]
    b = sampler.draw(np.random.default_rng(5))[0]
    c = sampler.draw(np.random.default_rng(6))[0]
    assert (a == b).all() and not (a == c).all()


def test_undersample_pools_fixed_and_equal():
    labels = _labels()
    pools = build_pools(labels, np.arange(len(labels)))
    small = undersampled(pools, np.random.default_rng(0))
    for k in range(4):
        assert len(small.pos[k]) == len(small.neg[k]) == min(len(pools.pos[k]), len(pools.neg[k]))
        assert set(small.neg[k]) <= set(pools.neg[k]) and set(small.pos[k]) <= set(pools.pos[k])
    again = undersampled(pools, np.random.default_rng(0))
    assert all((a == b).all() for a, b in zip(small.neg, again.neg))
    sampler = make_sampler("undersample", labels, np.arange(len(labels)), np.random.default_rng(0))
    idx, targets = sampler.draw(np.random.default_rng(3))
    assert set(idx[targets[:, 2] == 0]) <= set(small.neg[2])


def test_random_sampler_rates_match_the_data():
    labels = _labels(n=2000)
    sampler = make_sampler("random", labels, np.arange(len(labels)), np.random.default_rng(0))
    rng = np.random.default_rng(0)
    drawn = np.concatenate([sampler.draw(rng, labels)[1] for _ in range(300)])
    for k in range(4):
        known, known_drawn = labels[:, k] >= 0, drawn[:, k] >= 0
        assert drawn[known_drawn, k].mean() == pytest.approx(labels[known, k].mean(), abs=0.02)


def test_loss_matches_a_hand_computation():
    # 2 AUs, groups of 1 positive + 1 negative: rows 0-1 belong to AU0, rows 2-3 to AU1.
    targets = torch.tensor([[1, -1], [0, -1], [-1, 1], [-1, 0]], dtype=torch.int8)
    logits = torch.tensor([[2.0, 9.0], [-1.0, 9.0], [9.0, 0.5], [9.0, 3.0]])

    def bce(z, y):
        p = 1 / (1 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    au0 = (bce(2.0, 1) + bce(-1.0, 0)) / 2
    au1 = (bce(0.5, 1) + bce(3.0, 0)) / 2
    assert per_au_bce(logits, targets).item() == pytest.approx((au0 + au1) / 2, rel=1e-6)


def test_loss_on_a_balanced_batch_is_the_mean_of_each_aus_own_bce():
    labels = _labels()
    sampler = make_sampler("oversample", labels, np.arange(len(labels)), np.random.default_rng(0))
    idx, targets = sampler.draw(np.random.default_rng(0))
    logits = torch.randn(len(idx), 4)
    expected = np.mean([
        torch.nn.functional.binary_cross_entropy_with_logits(logits[8 * k:8 * k + 8, k],
                                                             torch.tensor([1.0] * 4 + [0.0] * 4)).item()
        for k in range(4)
    ])
    assert per_au_bce(logits, torch.from_numpy(targets)).item() == pytest.approx(expected, rel=1e-6)


def test_cost_weights():
    targets = torch.tensor([[1, 0], [0, 0], [0, -1], [0, 0]], dtype=torch.int8)
    w = cost_weights(targets)
    assert w[0, 0] == 3.0  # AU0: 3 negatives / 1 positive
    assert (w[1:, 0] == 1).all()
    assert (w[:, 1] == 1).all()  # AU1 has no positive in the batch: weight 1
    logits = torch.zeros(4, 2)
    weighted = per_au_bce(logits, targets, weighted=True).item()
    plain = per_au_bce(logits, targets).item()
    assert weighted == pytest.approx(plain * ((3 + 3) / 4 + 1) / 2)  # AU0's mean weight is 6/4, AU1's is 1


def test_cost_weights_when_a_batch_lacks_negatives_of_an_au():
    targets = torch.tensor([[1, 1], [1, 0], [1, 0]], dtype=torch.int8)  # AU0: positives only
    w = cost_weights(targets)
    assert (w[:, 0] == 1).all()  # not 0: the ratio is undefined, the AU keeps its plain loss
    assert w[0, 1] == 2.0
    logits = torch.zeros(3, 2)
    assert per_au_bce(logits, targets, weighted=True).item() == pytest.approx(
        (math.log(2) + math.log(2) * (2 + 2) / 3) / 2)


@pytest.mark.parametrize("weighted", [False, True])
def test_rows_split_between_ranks_give_the_one_process_gradient(weighted):
    # What DDP does: rank r sums W x w * bce over its rows (weights from the whole batch), gradients are averaged.
    labels = _labels()
    sampler = make_sampler("random", labels, np.arange(len(labels)), np.random.default_rng(0))
    idx, targets = sampler.draw(np.random.default_rng(2), labels)
    targets = torch.from_numpy(targets)
    torch.manual_seed(0)
    logits = torch.randn(len(idx), 4, requires_grad=True)
    per_au_bce(logits, targets, weighted).backward()
    whole = logits.grad.clone()
    world = 3
    weights = loss_weights(targets, weighted)
    averaged = torch.zeros_like(whole)
    for rank in range(world):
        logits.grad = None
        rows = slice(rank, None, world)
        (world * weighted_bce(logits[rows], targets[rows], weights[rows])).backward()
        averaged += logits.grad / world
    assert torch.allclose(averaged, whole, rtol=1e-6, atol=1e-9)


def test_unknown_labels_never_count():
    targets = torch.tensor([[-1, 1], [-1, 0]], dtype=torch.int8)
    logits = torch.tensor([[100.0, 0.0], [-100.0, 0.0]])
    assert per_au_bce(logits, targets).item() == pytest.approx(math.log(2))
    correct, total = correct_counts(logits, targets)
    assert total.tolist() == [0, 2]


def test_check_balanceable_names_the_au():
    labels = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.int8)
    assert check_balanceable(labels, np.arange(3), ["AU01", "AU02"], "train") == ["AU02"]
