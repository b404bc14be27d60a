"""Batches as the paper draws them, and the per-AU loss and accuracy that go with them.

A sampler returns a batch as frame indices plus a target matrix ``(B, K)`` of int8: 1 or 0 where that frame
enters AU k's loss (or accuracy), -1 where it does not. For the balanced samplers (oversample, undersample) each
AU owns 4 positives and 4 negatives of the batch and only those count for it, which is exactly the paper's loss
"the average of the BCE losses calculated over each AU images"; for ``random`` and ``cost`` every known label
counts. One masked loss (``per_au_bce``) serves all four. Draws are vectorised (one call per batch, no loop per
image or per AU) and deterministic given the numpy Generator.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from aubench_cli.errors import UsageError, suggest


@dataclass
class Pools:
    """Per-AU positive and negative frame indices (global cache indices) of one split."""

    pos: list[np.ndarray]
    neg: list[np.ndarray]


def check_balanceable(labels: np.ndarray, index: np.ndarray, au_names: list[str], split: str) -> list[str]:
    """Names of AUs with no positive or no negative frame among ``index``."""
    sub = labels[index]
    return [au for k, au in enumerate(au_names) if not (sub[:, k] == 1).any() or not (sub[:, k] == 0).any()]


def build_pools(labels: np.ndarray, index: np.ndarray) -> Pools:
    sub = labels[index]
    return Pools(
        pos=[index[sub[:, k] == 1] for k in range(labels.shape[1])],
        neg=[index[sub[:, k] == 0] for k in range(labels.shape[1])],
    )


class _FlatPools:
    """Variable-size pools packed into one array, so a draw across all AUs is a single gather."""

    def __init__(self, pools: list[np.ndarray]):
        self.sizes = np.array([len(p) for p in pools], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.flat = np.concatenate(pools).astype(np.int64) if pools else np.zeros(0, np.int64)

    def draw(self, rng: np.random.Generator, per_pool: int) -> np.ndarray:
        u = rng.random((len(self.sizes), per_pool))
        return self.flat[self.offsets[:, None] + (u * self.sizes[:, None]).astype(np.int64)]


class BalancedSampler:
    """4 positives + 4 negatives per AU per batch (the paper's oversampling): ``8 x K`` frames."""

    def __init__(self, pools: Pools, pos_per_au: int = 4, neg_per_au: int = 4):
        self.k = len(pools.pos)
        self.pos, self.neg = _FlatPools(pools.pos), _FlatPools(pools.neg)
        self.p, self.n = pos_per_au, neg_per_au
        group = self.p + self.n
        targets = np.full((self.k, group, self.k), -1, dtype=np.int8)
        for k in range(self.k):  # once, at construction: AU k owns its group's 8 rows
            targets[k, : self.p, k] = 1
            targets[k, self.p:, k] = 0
        self._targets = targets.reshape(self.k * group, self.k)

    @property
    def batch_size(self) -> int:
        return self.k * (self.p + self.n)

    @property
    def targets(self) -> np.ndarray:
        """The same for every batch: row i counts only for the AU whose group it is in."""
        return self._targets

    def draw(self, rng: np.random.Generator, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        idx = np.concatenate([self.pos.draw(rng, self.p), self.neg.draw(rng, self.n)], axis=1).reshape(-1)
        return idx, self._targets


class RandomSampler:
    """``batch_size`` frames drawn uniformly from the split; every known label counts."""

    def __init__(self, index: np.ndarray, batch_size: int):
        self.index = np.asarray(index, dtype=np.int64)
        self.batch_size = batch_size

    def draw(self, rng: np.random.Generator, labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if labels is None:
            raise ValueError("RandomSampler needs the label matrix")
        idx = self.index[rng.integers(0, len(self.index), self.batch_size)]
        return idx, labels[idx]


def undersampled(pools: Pools, rng: np.random.Generator) -> Pools:
    """Each AU's larger pool cut, once, to the size of its smaller one (usually: negatives to #positives)."""
    pos, neg = [], []
    for p, n in zip(pools.pos, pools.neg):
        m = min(len(p), len(n))
        pos.append(p if len(p) == m else np.sort(rng.choice(p, m, replace=False)))
        neg.append(n if len(n) == m else np.sort(rng.choice(n, m, replace=False)))
    return Pools(pos, neg)


# Balancing methods (Table II, right). Each builds a sampler from the training split; `cost` also weights the loss.
BalanceBuilder = Callable[[np.ndarray, np.ndarray, np.random.Generator, int, int], object]
BALANCING: dict[str, BalanceBuilder] = {
    "oversample": lambda labels, index, rng, p, n: BalancedSampler(build_pools(labels, index), p, n),
    "undersample": lambda labels, index, rng, p, n: BalancedSampler(undersampled(build_pools(labels, index), rng), p, n),
    "random": lambda labels, index, rng, p, n: RandomSampler(index, (p + n) * labels.shape[1]),
    "cost": lambda labels, index, rng, p, n: RandomSampler(index, (p + n) * labels.shape[1]),
}


def check_balance(method: str) -> str:
    if method not in BALANCING:
        raise UsageError(f"unknown balancing method {method!r}", suggest(method, BALANCING))
    return method


def make_sampler(method: str, labels: np.ndarray, index: np.ndarray, rng: np.random.Generator,
                 pos_per_au: int = 4, neg_per_au: int = 4):
    return BALANCING[check_balance(method)](labels, index, rng, pos_per_au, neg_per_au)


def cost_weights(targets: torch.Tensor) -> torch.Tensor:
    """Bishay & Patras (2017): positives of AU k weighted by its negative/positive ratio in the batch.

    The ratio is defined only when the batch has both classes of AU k; otherwise (no positive, or positives but
    no negative) every frame of that AU keeps weight 1, so an AU is never silenced by its own batch.
    """
    pos = (targets == 1).sum(0).float()
    neg = (targets == 0).sum(0).float()
    ratio = torch.where((pos > 0) & (neg > 0), neg / pos.clamp(min=1), torch.ones_like(pos))
    return torch.where(targets == 1, ratio.expand_as(targets), torch.ones_like(targets, dtype=torch.float32))


def loss_weights(targets: torch.Tensor, weighted: bool = False) -> torch.Tensor:
    """Per (frame, AU) weights that turn a plain sum of BCE terms into the batch loss.

    The batch loss is the mean over the AUs present in the batch of each AU's (cost-weighted) BCE averaged over
    its own frames, i.e. ``sum(w * bce)`` with ``w[i, k] = mask[i, k] * cost[i, k] / (count[k] * n_present)``.
    Computed from the *whole* batch's targets, so a DDP rank holding some rows of the batch, summing ``w * bce``
    over its rows and multiplied by the world size, gets a gradient whose DDP average is the one-process gradient.
    """
    mask = (targets >= 0).float()
    counts = mask.sum(0)
    present = counts > 0
    n_present = present.sum().clamp(min=1)
    w = mask / (counts.clamp(min=1) * n_present)
    return w * cost_weights(targets) if weighted else w


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum(weights * BCE(logits, targets))`` over every (frame, AU); weights are 0 where a label does not count."""
    dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16 logits (autocast) summed in float32
    loss = F.binary_cross_entropy_with_logits(logits.to(dtype), targets.clamp(min=0).to(dtype), reduction="none")
    return (loss * weights).sum()


def per_au_bce(logits: torch.Tensor, targets: torch.Tensor, weighted: bool = False) -> torch.Tensor:
    """Mean over AUs of each AU's BCE over the frames that count for it (targets >= 0).

    With ``weighted`` (the cost method) each term is multiplied by ``cost_weights`` and the AU's loss is still
    divided by its number of frames, as Keras' class weights do.
    """
    if not (targets >= 0).any():
        warnings.warn("a batch with no known label for any AU", stacklevel=2)
    return weighted_bce(logits, targets, loss_weights(targets, weighted))


def correct_counts(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(correct, total) per AU at threshold 0.5 (logit 0) over the frames that count for each AU."""
    mask = targets >= 0
    pred = logits > 0
    correct = ((pred == (targets == 1)) & mask).sum(0)
    return correct, mask.sum(0)
