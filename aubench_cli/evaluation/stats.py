"""Uncertainty that respects what was sampled: intervals over clusters (subjects), paired permutation tests, Holm.

Everything works on per-unit counts: an array ``(C, K, 4)`` holding, for each unit (a subject, a video or a
frame) and each AU, the true positives, positives, true negatives and negatives at the threshold. The balanced
accuracy of AU k over a set of units is ``(sum tp / sum pos + sum tn / sum neg) / 2``, and a resample of units
only reweights those rows, so thousands of resamples are one matrix product.

- Intervals (``interval``): with at least ``SMALL_SAMPLE`` units, a percentile bootstrap resampling whole units
  with replacement; above ``LARGE_SAMPLE`` units (in practice the frame unit, 100k frames), the bootstrap's
  large-sample limit instead: the normal interval from the (cluster-robust) linearisation of the balanced
  accuracy, ``SE^2 = C / (C - 1) * sum_c psi_c^2`` with ``psi_c`` unit c's influence, which costs one pass
  instead of thousands; with fewer than ``SMALL_SAMPLE`` (a BP4D or DISFA test split has a handful of subjects), where the percentile
  bootstrap under-covers, a leave-one-unit-out jackknife with Student t quantiles on ``n - 1`` degrees of
  freedom. With one unit there is no interval. **Degenerate resamples**: a bootstrap resample in which an AU has
  no positive or no negative frame has no balanced accuracy for that AU; it is left out of that AU's interval
  and of the mean's, and counted (``degenerate``). **One unit holding all of an AU's positives (or negatives)**
  gives that AU, and the mean (which needs every AU), no interval under any method, and says why
  (``unavailable``): the jackknife's replicate without that unit has no balanced accuracy, and dropping it would
  drop the most influential unit; every bootstrap resample that has the AU at all has that unit, so its rate is
  the same in all of them (and in the linearisation its term is zero): no resample sees how that class varies
  between units, and the interval would be too narrow. With two or more units holding them the bootstrap stands,
  its degenerate resamples counted.
- Paired comparisons (``paired``): the difference of two runs' balanced accuracies on the same frames, its
  interval by the same rule, and a permutation test that swaps the two runs' predictions within each unit. Since
  a swap leaves the labels (so each AU's positives and negatives) unchanged, the difference is a sum of
  per-unit terms and a permutation only flips their signs: exact over all ``2^C`` sign patterns for up to
  ``EXACT_MAX_UNITS`` units, Monte Carlo (``(1 + hits) / (R + 1)``) beyond, and above ``LARGE_SAMPLE`` units the
  normal limit of the sign-flip distribution (mean 0, variance ``sum_c delta_c^2``). A unit whose difference is
  0 adds 0 under either sign, so the smallest p-value the test can give is ``2 / 2^n`` with n the units that
  differ, not all units (``min_p_value``: the smallest over the AUs and the mean; per item too).
- Pooled figures over folds (``f1``, ``pooled``): a k-fold protocol tests every subject once; the per-subject
  counts of all folds, concatenated, give the pooled balanced accuracy and the pooled F1 at 0.5
  (``2 TP / (2 TP + FP + FN)`` from the summed counts, the same as F1 over the concatenated predictions), with
  intervals over subjects by the rule of ``interval``; with several training seeds, the mean over seeds of each
  seed's pooled figure, the subjects resampled once for every seed.
- ``holm``: Holm's step-down adjustment of a family of p-values.
- ``ranks``: best and second best on the values as printed (ties share a mark), for every table.

Units with identical rows are merged before resampling (a multinomial over distinct rows, with their counts, is
the same bootstrap), which keeps the frame unit cheap: 100k frames have only a few thousand distinct rows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054
Z80 = 0.8416212335729143  # one-sided quantile for 80 % power
SMALL_SAMPLE = 20  # fewer units than this: jackknife with t quantiles instead of the percentile bootstrap
LARGE_SAMPLE = 2000  # more units than this: the normal (linearised) limits of the bootstrap and permutation test
RESAMPLES = 2000
PERMUTATIONS = 10000
EXACT_MAX_UNITS = 16  # 2^16 sign patterns enumerated exactly
TP, POS, TN, NEG = range(4)
SINGLE_HOLDER_UNAVAILABLE = ("no interval: one unit holds all of its positive (or negative) frames, so their spread "
                             "between units cannot be estimated (the replicates without that unit have none, the "
                             "others all hold its one rate)")


def unit_counts(pred: np.ndarray, labels: np.ndarray, units: np.ndarray, n_units: int) -> np.ndarray:
    """Per-unit counts ``(n_units, K, 4)``: tp, pos, tn, neg of decisions ``pred`` (n, K) against ``labels``
    (n, K; 1, 0, -1 unknown) for frames belonging to unit ``units`` (n,) in 0..n_units-1."""
    pred = np.asarray(pred, dtype=bool)
    labels = np.asarray(labels)
    pos, neg = labels == 1, labels == 0
    per_frame = np.stack([pred & pos, pos, ~pred & neg, neg], axis=-1).reshape(len(labels), -1)  # (n, 4K)
    width = per_frame.shape[1]
    cell = np.asarray(units, dtype=np.int64)[:, None] * width + np.arange(width)[None, :]
    sums = np.bincount(cell[per_frame], minlength=n_units * width)  # one pass over the set flags
    return sums.reshape(n_units, -1, 4).astype(np.int64)


def balanced_accuracy(counts: np.ndarray) -> np.ndarray:
    """Balanced accuracy per AU from summed counts ``(..., K, 4)``; NaN where an AU has no positive or negative."""
    counts = np.asarray(counts, dtype=np.float64)
    pos, neg = counts[..., POS], counts[..., NEG]
    with np.errstate(invalid="ignore", divide="ignore"):
        ba = 0.5 * (counts[..., TP] / pos + counts[..., TN] / neg)
    return np.where((pos > 0) & (neg > 0), ba, np.nan)


def f1(counts: np.ndarray) -> np.ndarray:
    """F1 at the threshold per AU from summed counts ``(..., K, 4)``: ``2 TP / (2 TP + FP + FN)`` with
    ``FP = neg - tn`` and ``FN = pos - tp``; NaN where an AU has no positive (F1 says nothing there)."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, pos, tn, neg = counts[..., TP], counts[..., POS], counts[..., TN], counts[..., NEG]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 2 * tp / (2 * tp + (neg - tn) + (pos - tp))
    return np.where(pos > 0, value, np.nan)


METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"balanced_accuracy": balanced_accuracy, "f1": f1}


def _with_mean(per_au: np.ndarray) -> np.ndarray:
    """Append the mean over AUs as a last column; NaN when any AU is NaN (a degenerate resample for the mean)."""
    return np.concatenate([per_au, per_au.mean(axis=-1, keepdims=True)], axis=-1)


def _merge_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows of a (C, D) array and how often each occurs."""
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique, counts


def _t(q: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, df))


def _method_for(n_units: int) -> str:
    if n_units < 2:
        return "none"
    if n_units > LARGE_SAMPLE:
        return "normal-linearised"
    return "jackknife-t" if n_units < SMALL_SAMPLE else "bootstrap-percentile"


def method_reason(method: str, n_units: int, unit: str) -> str:
    if method == "none":
        return (f"{n_units} {unit}: no interval over {unit}s can be computed (it would need at least 2); "
                "the interval is left empty")
    if method == "jackknife-t":
        return (f"{n_units} {unit}s (< {SMALL_SAMPLE}): a percentile bootstrap under-covers with so few clusters, so "
                f"a leave-one-{unit}-out jackknife with t quantiles ({n_units - 1} d.f.) is used")
    if method == "normal-linearised":
        return (f"{n_units} {unit}s (> {LARGE_SAMPLE}): the bootstrap's normal limit (linearised standard error over "
                f"{unit}s)")
    return f"{n_units} {unit}s: percentile bootstrap over {unit}s"


def replicate_values(stats: np.ndarray, theta: Callable[[np.ndarray], np.ndarray], method: str,
                     rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """Replicates ``(R, Q)`` of ``theta`` (summed stats ``(R, D)`` -> values ``(R, Q)``, NaN when undefined):
    bootstrap resamples of the units, or the leave-one-out sums for the jackknife."""
    total = stats.sum(axis=0)
    if method == "jackknife-t":
        return theta(total[None, :] - stats)
    unique, counts = _merge_rows(stats)
    n = int(counts.sum())
    weights = rng.multinomial(n, counts / n, size=resamples).astype(np.float64)  # (R, M)
    return theta(weights @ unique.astype(np.float64))


def influence(stats_: np.ndarray, k: int, paired: bool) -> np.ndarray:
    """Each unit's linearised contribution ``(C, K + 1)`` to the balanced accuracy (or to A - B when ``paired``)
    per AU and for the mean: for ``BA = (T/P + U/N) / 2``, ``psi_c = ((t_c - TPR p_c) / P + (u_c - TNR n_c) / N) / 2``."""
    s = stats_.reshape(len(stats_), k, 2 if paired else 1, 4).astype(np.float64)
    total = s.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr, tnr = total[..., TP] / total[..., POS], total[..., TN] / total[..., NEG]
        psi = 0.5 * ((s[..., TP] - tpr * s[..., POS]) / total[..., POS]
                     + (s[..., TN] - tnr * s[..., NEG]) / total[..., NEG])
    psi = psi[..., 0] - psi[..., 1] if paired else psi[..., 0]
    return np.concatenate([psi, psi.mean(axis=1, keepdims=True)], axis=1)


def _normal_items(point: np.ndarray, psi: np.ndarray, single: np.ndarray) -> list[dict[str, Any]]:
    c = len(psi)
    se = np.sqrt(c / (c - 1) * (psi ** 2).sum(axis=0))
    out = []
    for q in range(len(point)):
        if single[q]:
            out.append({"ci95": None, "se": None, "half_width": None, "min_detectable_diff": None, "degenerate": 0,
                        "replicates": 0, "unavailable": SINGLE_HOLDER_UNAVAILABLE})
            continue
        ok = bool(np.isfinite(point[q]) and np.isfinite(se[q]))
        out.append({"ci95": [float(point[q] - Z95 * se[q]), float(point[q] + Z95 * se[q])] if ok else None,
                    "se": float(se[q]) if ok else None, "half_width": float(Z95 * se[q]) if ok else None,
                    "min_detectable_diff": float((Z95 + Z80) * se[q]) if ok else None, "degenerate": 0,
                    "replicates": 0})
    return out


def single_holders(counts: np.ndarray) -> np.ndarray:
    """Per AU and for the mean ``(K + 1,)``: whether one unit of ``counts`` ``(C, K, 4)`` holds all of the AU's
    positive frames, or all of its negatives (the mean: whether any AU is so)."""
    held = np.stack([(counts[..., POS] > 0).sum(axis=0), (counts[..., NEG] > 0).sum(axis=0)])
    single = ((held == 1).any(axis=0))
    return np.append(single, single.any())


def summarize(point: np.ndarray, reps: np.ndarray, method: str,
              single: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Per quantity: 95 % interval, standard error, half-width, the smallest difference detectable with 80 %
    power at 5 % (two-sided), and the number of degenerate replicates left out. ``single`` (``single_holders``):
    the quantities given no interval, with the reason, whatever the method (module docstring)."""
    out = []
    for q in range(len(point)):
        col = reps[:, q] if reps.size else np.zeros(0)
        valid = col[np.isfinite(col)]
        degenerate = int(col.size - valid.size)
        item: dict[str, Any] = {"ci95": None, "se": None, "half_width": None, "min_detectable_diff": None,
                                "degenerate": degenerate, "replicates": int(col.size)}
        if method == "none" or not np.isfinite(point[q]) or valid.size < 2:
            out.append(item)
            continue
        if (single is not None and single[q]) or (method == "jackknife-t" and degenerate):
            # One unit holds all of an AU's positives (or negatives): no replicate sees how that class varies
            # between units (module docstring). Under the jackknife that is exactly a degenerate replicate.
            item["unavailable"] = SINGLE_HOLDER_UNAVAILABLE
            out.append(item)
            continue
        if method == "jackknife-t":
            n = valid.size
            se = math.sqrt((n - 1) / n * float(np.sum((valid - valid.mean()) ** 2)))
            tq = _t(0.975, n - 1)
            lo, hi = float(point[q]) - tq * se, float(point[q]) + tq * se
            mdd = (tq + _t(0.80, n - 1)) * se
        else:
            se = float(valid.std(ddof=1))
            lo, hi = (float(v) for v in np.percentile(valid, [2.5, 97.5]))
            mdd = (Z95 + Z80) * se
        item.update(ci95=[lo, hi], se=se, half_width=(hi - lo) / 2, min_detectable_diff=mdd)
        out.append(item)
    return out


def _within_unit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Intervals of a proportion (accuracy, F1) kept inside [0, 1]: a jackknife-t over a few subjects can reach
    past 1 (2 subjects: t = 12.7). ``half_width`` and ``se`` stay the unclipped ones, the interval's precision."""
    for item in items:
        if item.get("ci95"):
            item["ci95"] = [min(max(v, 0.0), 1.0) for v in item["ci95"]]
    return items


def interval(counts: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES) -> dict[str, Any]:
    """Balanced accuracy per AU and of the mean over AUs, with 95 % intervals over the units of ``counts``
    ``(C, K, 4)``. Returns ``{"method", "units", "per_au": [item per AU], "mean": item}``; each item holds
    ``value`` and the fields of ``summarize``."""
    c, k, _ = counts.shape
    method = _method_for(c)
    flat = counts.reshape(c, k * 4)

    def theta(summed: np.ndarray) -> np.ndarray:
        return _with_mean(balanced_accuracy(summed.reshape(-1, k, 4)))

    point = theta(flat.sum(axis=0)[None])[0]
    items = _within_unit(_items(flat, theta, point, method, rng, resamples, k, single_holders(counts)))
    for item, value in zip(items, point):
        item["value"] = None if not np.isfinite(value) else float(value)
    return {"method": method, "units": c, "per_au": items[:k], "mean": items[k]}


def pooled(counts: np.ndarray, rng: np.random.Generator, metric: str = "f1",
           resamples: int = RESAMPLES) -> dict[str, Any]:
    """A metric (``METRICS``) per AU and its mean over AUs on the pooled units of ``counts``, ``(C, K, 4)`` or,
    with training seeds, ``(S, C, K, 4)`` (every seed tested on the same C units): the value is the mean over
    seeds of each seed's pooled figure, and the 95 % interval resamples the units (the same resample for every
    seed; the seeds themselves are not resampled) by the rule of ``interval`` (a jackknife with t quantiles
    under ``SMALL_SAMPLE`` units, else the percentile bootstrap; above ``LARGE_SAMPLE`` units the bootstrap
    too, since the linearisation is that of one balanced accuracy). Returns what ``interval`` does."""
    counts = np.asarray(counts)
    if counts.ndim == 3:
        counts = counts[None]
    s, c, k, _ = counts.shape
    measure = METRICS[metric]
    method = _method_for(c)
    if method == "normal-linearised":
        method = "bootstrap-percentile"
    flat = counts.transpose(1, 0, 2, 3).reshape(c, s * k * 4)

    def theta(summed: np.ndarray) -> np.ndarray:
        return _with_mean(measure(summed.reshape(-1, s, k, 4))).mean(axis=1)

    point = theta(flat.sum(axis=0)[None])[0]
    reps = replicate_values(flat, theta, method, rng, resamples) if method != "none" else np.zeros((0, k + 1))
    items = _within_unit(summarize(point, reps, method, single_holders(counts[0])))  # the labels: every seed's
    for item, value in zip(items, point):
        item["value"] = None if not np.isfinite(value) else float(value)
    return {"method": method, "units": c, "seeds": s, "metric": metric, "per_au": items[:k], "mean": items[k]}


def _items(flat: np.ndarray, theta: Callable[[np.ndarray], np.ndarray], point: np.ndarray, method: str,
           rng: np.random.Generator, resamples: int, k: int, single: np.ndarray,
           paired: bool = False) -> list[dict[str, Any]]:
    if method == "normal-linearised":
        return _normal_items(point, influence(flat, k, paired), single)
    reps = replicate_values(flat, theta, method, rng, resamples) if method != "none" else np.zeros((0, k + 1))
    return summarize(point, reps, method, single)


def _paired_theta(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def theta(summed: np.ndarray) -> np.ndarray:
        s = summed.reshape(-1, k, 2, 4)
        return _with_mean(balanced_accuracy(s[:, :, 0]) - balanced_accuracy(s[:, :, 1]))
    return theta


def permutation_test(delta: np.ndarray, rng: np.random.Generator, permutations: int = PERMUTATIONS,
                     exact_max: int | None = None, large: int | None = None) -> dict[str, Any]:
    """Two-sided sign-flip test of ``sum_c delta[c]`` (per column), ``delta`` ``(C, Q)`` the per-unit terms of a
    paired difference. Exact (every sign pattern) for up to ``exact_max`` units, Monte Carlo up to ``large``,
    the normal limit of the sign-flip distribution beyond."""
    exact_max = EXACT_MAX_UNITS if exact_max is None else exact_max
    large = LARGE_SAMPLE if large is None else large
    c, q = delta.shape
    observed = np.abs(delta.sum(axis=0))
    tol = 1e-12 * np.maximum(1.0, observed)
    # A unit whose paired difference is 0 adds 0 under either sign: with n non-zero terms in a column the
    # smallest p-value its test can give is 2 / 2^n, whatever the number of units (min_p_values).
    nonzero = (delta != 0).sum(axis=0)
    min_ps = np.minimum(1.0, 2.0 / 2.0 ** np.minimum(nonzero, 1000).astype(np.float64))
    if c <= exact_max:
        return _exact(delta, observed, tol, min_ps)
    # Units whose two runs agree everywhere add 0 under any sign: the test is the same without them.
    active = delta[np.any(delta != 0, axis=1)]
    if len(active) <= exact_max:
        return _exact(active, observed, tol, min_ps)
    if int((active != 0).sum(axis=0).min()) > large:  # enough non-zero terms in every column for the normal limit
        from scipy.special import erfc

        sd = np.sqrt((active ** 2).sum(axis=0))
        p = np.where(sd > 0, erfc(observed / np.where(sd > 0, sd, 1) / math.sqrt(2)), 1.0)
        return {"kind": "normal", "permutations": 0, "p_values": np.minimum(1.0, p), "min_p_values": min_ps,
                "min_p_value": float(min_ps.min())}
    unique, counts = _merge_rows(active)
    heads = rng.binomial(counts[None, :], 0.5, size=(permutations, len(counts)))
    sums = (2 * heads - counts[None, :]).astype(np.float64)  # sum of +-1 over each group of identical rows
    stats_ = np.abs(sums @ unique)
    hits = (stats_ >= observed - tol).sum(axis=0)
    p_values = (1 + hits) / (permutations + 1)
    min_ps = np.maximum(1.0 / (permutations + 1), min_ps)
    for col in np.flatnonzero(nonzero <= exact_max):  # few units differ in this column: its exact test is cheap
        rows = delta[delta[:, col] != 0][:, [col]]
        p_values[col] = _exact(rows, observed[[col]], tol[[col]], min_ps[[col]])["p_values"][0]
        min_ps[col] = min(1.0, 2.0 / 2.0 ** int(nonzero[col]))
    return {"kind": "monte-carlo", "permutations": int(permutations), "p_values": p_values,
            "min_p_values": min_ps, "min_p_value": float(min_ps.min())}


def _exact(delta: np.ndarray, observed: np.ndarray, tol: np.ndarray, min_ps: np.ndarray) -> dict[str, Any]:
    """Every sign pattern of the rows of ``delta``."""
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(delta)))) if len(delta) else np.ones((1, 0))
    hits = (np.abs(signs @ delta) >= observed - tol).sum(axis=0)
    return {"kind": "exact", "permutations": int(len(signs)), "p_values": hits / len(signs),
            "min_p_values": min_ps, "min_p_value": float(min_ps.min())}


def paired(counts_a: np.ndarray, counts_b: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES,
           permutations: int = PERMUTATIONS) -> dict[str, Any]:
    """Run A minus run B on the same units and frames: per AU and for the mean over AUs, the difference of
    balanced accuracies, its 95 % interval (the rule of ``interval``), and the p-value of the permutation test
    swapping the runs' predictions within each unit."""
    if counts_a.shape != counts_b.shape or not np.array_equal(counts_a[..., [POS, NEG]], counts_b[..., [POS, NEG]]):
        raise ValueError("paired counts must come from the same units and labels")
    c, k, _ = counts_a.shape
    method = _method_for(c)
    flat = np.stack([counts_a, counts_b], axis=2).reshape(c, k * 8)
    theta = _paired_theta(k)
    point = theta(flat.sum(axis=0)[None])[0]
    items = _items(flat, theta, point, method, rng, resamples, k, single_holders(counts_a), paired=True)
    # The permutation test: P and N of each AU do not change under swaps, so the difference is linear in units.
    pos = counts_a[..., POS].sum(axis=0).astype(np.float64)
    neg = counts_a[..., NEG].sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = 0.5 * ((counts_a[..., TP] - counts_b[..., TP]) / pos + (counts_a[..., TN] - counts_b[..., TN]) / neg)
    delta = np.nan_to_num(delta)
    delta = np.concatenate([delta, delta.mean(axis=1, keepdims=True)], axis=1)  # (C, K + 1)
    test = permutation_test(delta, rng, permutations)
    for item, value, p, min_p in zip(items, point, test["p_values"], test["min_p_values"]):
        item["value"] = None if not np.isfinite(value) else float(value)
        item["p_value"] = float(p)
        item["min_p_value"] = float(min_p)  # the smallest p its test can give (2 / 2^n, n: units that differ)
    return {"method": method, "units": c, "per_au": items[:k], "mean": items[k], "permutation": test["kind"],
            "permutations": test["permutations"], "min_p_value": test["min_p_value"],
            "units_differing": int(np.any(delta != 0, axis=1).sum())}


def paired_seeds(counts_a: np.ndarray, counts_b: np.ndarray, rng: np.random.Generator,
                 resamples: int = RESAMPLES) -> dict[str, Any]:
    """Setting A minus setting B, each trained at several seeds and tested on the same units: per AU and for the
    mean over AUs, the difference of seed-averaged balanced accuracies, with a two-level bootstrap that resamples
    the units (shared by both settings: the pairing) and, independently within each setting, its seeds.

    ``counts_a`` ``(Sa, C, K, 4)``, ``counts_b`` ``(Sb, C, K, 4)``: per seed, the per-unit counts of
    ``unit_counts``. Averaging each unit over the seeds first would treat the seeds as fixed, and a difference
    one lucky seed made would look significant; resampling them adds their spread to the interval. The p-value is
    the two-sided bootstrap one (twice the smaller share of replicates on either side of 0); with one seed each
    this is the subject bootstrap of ``paired`` (percentile, which under-covers below ~20 units)."""
    counts_a, counts_b = np.asarray(counts_a, np.float64), np.asarray(counts_b, np.float64)
    if counts_a.shape[1:] != counts_b.shape[1:]:
        raise ValueError("both settings must be tested on the same units and AUs")
    sa, c, k, _ = counts_a.shape
    sb = counts_b.shape[0]
    weights = rng.multinomial(c, np.full(c, 1.0 / c), size=resamples).astype(np.float64)  # (R, C) units
    pick_a = rng.integers(0, sa, size=(resamples, sa))  # seeds, within each setting
    pick_b = rng.integers(0, sb, size=(resamples, sb))

    def seed_means(counts: np.ndarray, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_seed = _with_mean(balanced_accuracy(counts.sum(axis=1)))  # (S, K + 1) on every unit
        summed = np.einsum("rc,scd->rsd", weights, counts.reshape(counts.shape[0], c, k * 4))
        reps = _with_mean(balanced_accuracy(summed.reshape(resamples, -1, k, 4)))  # (R, S, K + 1)
        chosen = np.take_along_axis(reps, pick[:, :, None], axis=1)
        return per_seed.mean(axis=0), chosen.mean(axis=1)

    point_a, reps_a = seed_means(counts_a, pick_a)
    point_b, reps_b = seed_means(counts_b, pick_b)
    point, reps = point_a - point_b, reps_a - reps_b
    single = single_holders(counts_a[0])  # the labels: the same for every seed of either setting
    items = []
    for q in range(k + 1):
        col = reps[:, q][np.isfinite(reps[:, q])]
        if not np.isfinite(point[q]) or len(col) < 2 or single[q]:
            items.append({"value": None if not np.isfinite(point[q]) else float(point[q]), "ci95": None, "se": None,
                          "half_width": None, "min_detectable_diff": None, "p_value": None,
                          **({"unavailable": SINGLE_HOLDER_UNAVAILABLE} if single[q] else {})})
            continue
        lo, hi = np.percentile(col, [2.5, 97.5])
        se = float(col.std(ddof=1))
        p = min(1.0, 2 * min(float((col <= 0).mean()), float((col >= 0).mean())))
        items.append({"value": float(point[q]), "ci95": [float(lo), float(hi)], "se": se,
                      "half_width": float(hi - lo) / 2, "min_detectable_diff": (Z95 + Z80) * se, "p_value": p})
    return {"method": "two-level bootstrap (units and seeds)", "units": c, "seeds": [sa, sb], "resamples": resamples,
            "per_au": items[:k], "mean": items[k]}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, capped at 1), in the order given."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def ranks(values: Sequence[float | None], decimals: int = 1, scale: float = 100.0) -> list[int | None]:
    """1 for the best, 2 for the second best, None otherwise, decided on ``scale * value`` as printed with
    ``decimals`` decimals, so equal printed values always get the same mark. The one ranking of every table."""
    printed = [None if v is None else float(f"{scale * v:.{decimals}f}") for v in values]
    distinct = sorted({v for v in printed if v is not None}, reverse=True)
    return [None if v is None else 1 if v == distinct[0] else 2 if len(distinct) > 1 and v == distinct[1] else None
            for v in printed]
