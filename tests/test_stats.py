"""The statistics of evaluation against hand computations and simulation: cluster intervals, the degenerate-resample
rule, paired permutation tests (exact and Monte Carlo, calibrated under the null), Holm, and the one ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from aubench_cli.evaluation import stats


def _counts(correct_pos, pos, correct_neg, neg):
    """(C, 1, 4) counts of one AU from per-unit tallies."""
    return np.stack([correct_pos, pos, correct_neg, neg], axis=-1)[:, None, :].astype(np.int64)


def test_unit_counts_and_balanced_accuracy_by_hand():
    pred = np.array([[1], [0], [1], [0], [0], [1]], bool)
    labels = np.array([[1], [1], [0], [0], [-1], [1]])
    units = np.array([0, 0, 0, 1, 1, 1])
    counts = stats.unit_counts(pred, labels, units, 2)
    assert counts[:, 0].tolist() == [[1, 2, 0, 1], [1, 1, 1, 1]]  # tp, pos, tn, neg per unit
    # over both units: TPR 2/3, TNR 1/2
    assert stats.balanced_accuracy(counts.sum(0))[0] == pytest.approx(0.5 * (2 / 3 + 1 / 2))
    assert np.isnan(stats.balanced_accuracy(np.array([[3, 3, 0, 0]]))[0])  # no negative: undefined


def test_jackknife_interval_by_hand():
    # 4 subjects: tallies of one AU
    tp, pos, tn, neg = np.array([8, 5, 9, 2]), np.array([10, 10, 10, 5]), np.array([7, 9, 6, 8]), np.array([10, 10, 8, 10])
    ci = stats.interval(_counts(tp, pos, tn, neg), np.random.default_rng(0))
    assert ci["method"] == "jackknife-t" and ci["units"] == 4
    point = 0.5 * (tp.sum() / pos.sum() + tn.sum() / neg.sum())
    loo = np.array([0.5 * ((tp.sum() - tp[i]) / (pos.sum() - pos[i]) + (tn.sum() - tn[i]) / (neg.sum() - neg[i]))
                    for i in range(4)])
    se = math.sqrt(3 / 4 * ((loo - loo.mean()) ** 2).sum())
    tq = student_t.ppf(0.975, 3)
    item = ci["per_au"][0]
    assert item["value"] == pytest.approx(point)
    assert item["ci95"] == pytest.approx([point - tq * se, point + tq * se])
    assert item["se"] == pytest.approx(se)
    assert item["min_detectable_diff"] == pytest.approx((tq + student_t.ppf(0.8, 3)) * se)
    assert ci["mean"]["ci95"] == pytest.approx(item["ci95"])  # one AU: the mean is that AU


def test_bootstrap_interval_against_a_plain_loop():
    rng = np.random.default_rng(1)
    c = 30
    pos, neg = rng.integers(5, 40, c), rng.integers(5, 40, c)
    tp, tn = rng.binomial(pos, rng.uniform(0.4, 0.95, c)), rng.binomial(neg, rng.uniform(0.4, 0.95, c))
    ci = stats.interval(_counts(tp, pos, tn, neg), np.random.default_rng(2), resamples=4000)
    assert ci["method"] == "bootstrap-percentile" and ci["per_au"][0]["degenerate"] == 0
    loop = np.random.default_rng(3)
    values = []
    for _ in range(4000):  # resample subjects with replacement, the textbook way
        i = loop.integers(0, c, c)
        values.append(0.5 * (tp[i].sum() / pos[i].sum() + tn[i].sum() / neg[i].sum()))
    lo, hi = np.percentile(values, [2.5, 97.5])
    assert ci["per_au"][0]["ci95"] == pytest.approx([lo, hi], abs=0.006)
    assert ci["per_au"][0]["se"] == pytest.approx(np.std(values, ddof=1), rel=0.08)


def test_subject_interval_is_wider_than_frame_interval_when_frames_of_a_subject_agree():
    rng = np.random.default_rng(4)
    subjects, frames = 30, 40
    labels = rng.integers(0, 2, (subjects * frames, 1))
    units = np.repeat(np.arange(subjects), frames)
    good = rng.random(subjects) < 0.7  # the network is right on every frame of 70 % of the subjects, wrong on the rest
    pred = np.where(good[units][:, None], labels == 1, labels == 0)
    by_subject = stats.interval(stats.unit_counts(pred, labels, units, subjects), np.random.default_rng(0))
    by_frame = stats.interval(stats.unit_counts(pred, labels, np.arange(len(units)), len(units)),
                              np.random.default_rng(0))
    assert by_subject["per_au"][0]["value"] == by_frame["per_au"][0]["value"]
    width = lambda ci: ci["per_au"][0]["ci95"][1] - ci["per_au"][0]["ci95"][0]  # noqa: E731
    assert width(by_subject) > 3 * width(by_frame)


def test_degenerate_resamples_are_left_out_and_counted():
    """Two subjects hold all of AU 0's positives: the bootstrap resamples with neither are degenerate, left out of
    AU 0's interval and of the mean's, and counted; the interval stands on the others."""
    c = 25
    pos = np.zeros(c, int)
    pos[:2] = 10  # every positive of the AU in two subjects
    tp = np.where(pos > 0, [7, 4] + [0] * (c - 2), 0)
    neg, tn = np.full(c, 10), np.full(c, 8)
    second = _counts(np.full(c, 4), np.full(c, 5), np.full(c, 4), np.full(c, 5))
    counts = np.concatenate([_counts(tp, pos, tn, neg), second], axis=1)
    ci = stats.interval(counts, np.random.default_rng(0), resamples=3000)
    assert ci["method"] == "bootstrap-percentile"
    rate = ci["per_au"][0]["degenerate"] / 3000
    assert rate == pytest.approx((1 - 2 / c) ** c, abs=0.02)  # subjects 0 and 1 both missing from the resample
    assert ci["per_au"][1]["degenerate"] == 0
    assert ci["mean"]["degenerate"] == ci["per_au"][0]["degenerate"]  # the mean needs every AU
    assert ci["per_au"][0]["ci95"] is not None and "unavailable" not in ci["per_au"][0]  # from the other resamples
    # one subject: no interval over subjects at all
    one = stats.interval(counts[:1], np.random.default_rng(0))
    assert one["method"] == "none" and one["mean"]["ci95"] is None and one["mean"]["value"] is not None


@pytest.mark.parametrize("c", [25, 2500])  # the percentile bootstrap; its normal limit (frames as units)
def test_no_method_gives_an_interval_where_one_unit_holds_an_aus_positives(c):
    """One subject holds all of AU 0's positives: every bootstrap resample with any positive has that subject, so
    AU 0's TPR is the same in all of them (its linearised term is zero): the interval would only show the
    negatives' spread. AU 0 and the mean get no interval, and say why; AU 1 keeps its interval. The same in a
    paired comparison, pooled folds and the two-level seed bootstrap. (Before, the bootstrap dropped the ~37 %
    degenerate resamples and gave an interval.)"""
    rng = np.random.default_rng(1)
    pos = np.zeros(c, int)
    pos[0] = 10
    tp = np.where(pos > 0, 7, 0)
    neg = np.full(c, 10)
    tn = rng.integers(5, 10, c)
    second = _counts(rng.integers(1, 5, c), np.full(c, 5), rng.integers(1, 5, c), np.full(c, 5))
    counts = np.concatenate([_counts(tp, pos, tn, neg), second], axis=1)
    ci = stats.interval(counts, np.random.default_rng(0), resamples=500)
    assert ci["method"] == ("bootstrap-percentile" if c < stats.LARGE_SAMPLE else "normal-linearised")
    first, other, mean = ci["per_au"][0], ci["per_au"][1], ci["mean"]
    assert first["ci95"] is None and first["value"] is not None and "one unit holds all" in first["unavailable"]
    assert mean["ci95"] is None and mean["unavailable"] and mean["value"] is not None
    assert other["ci95"] is not None and "unavailable" not in other
    # all negatives in one unit: the same
    flipped = counts[:, :, [2, 3, 0, 1]]
    assert stats.interval(flipped, np.random.default_rng(0), resamples=500)["per_au"][0]["unavailable"]
    better = counts.copy()
    better[:, 0, 2] = np.minimum(better[:, 0, 3], better[:, 0, 2] + 1)
    pair = stats.paired(better, counts, np.random.default_rng(0), resamples=500)
    assert pair["per_au"][0]["ci95"] is None and pair["per_au"][0]["unavailable"]
    assert pair["per_au"][0]["p_value"] is not None  # the permutation test still holds: it needs no spread
    assert pair["per_au"][1]["ci95"] is not None and pair["mean"]["ci95"] is None
    if c < stats.LARGE_SAMPLE:
        pooled = stats.pooled(np.stack([counts, better]), np.random.default_rng(0), "balanced_accuracy", 500)
        assert pooled["per_au"][0]["ci95"] is None and pooled["per_au"][1]["ci95"] is not None
        seeds = stats.paired_seeds(np.stack([better, better]), np.stack([counts, counts]),
                                   np.random.default_rng(0), 500)
        assert seeds["per_au"][0]["ci95"] is None and seeds["per_au"][0]["p_value"] is None
        assert seeds["per_au"][0]["unavailable"] and seeds["per_au"][0]["value"] is not None
        assert seeds["per_au"][1]["ci95"] is not None


def test_the_jackknife_gives_no_interval_where_one_subject_holds_an_aus_positives():
    """Issue 22, item 10: leaving out the subject that holds all of AU 0's positives has no balanced accuracy;
    dropping that replicate would leave the most influential subject out, so AU 0 and the mean get no interval
    (and say why) while AU 1 keeps its jackknife interval; the same in a paired comparison."""
    c = 8
    pos = np.zeros(c, int)
    pos[0] = 10
    tp = np.where(pos > 0, 7, 0)
    neg, tn = np.full(c, 10), np.array([8, 9, 7, 8, 6, 9, 8, 7])
    second = _counts(np.array([4, 3, 5, 4, 2, 5, 4, 3]), np.full(c, 5), np.full(c, 4), np.full(c, 5))
    counts = np.concatenate([_counts(tp, pos, tn, neg), second], axis=1)
    ci = stats.interval(counts, np.random.default_rng(0))
    assert ci["method"] == "jackknife-t"
    first, other, mean = ci["per_au"][0], ci["per_au"][1], ci["mean"]
    assert first["ci95"] is None and first["value"] is not None and first["degenerate"] == 1
    assert "one unit holds all" in first["unavailable"]
    assert mean["ci95"] is None and mean["unavailable"]
    assert other["ci95"] is not None and "unavailable" not in other and other["degenerate"] == 0
    better = counts.copy()
    better[:, 0, 0] = np.minimum(better[:, 0, 1], better[:, 0, 0] + 2)
    pair = stats.paired(better, counts, np.random.default_rng(0))
    assert pair["per_au"][0]["ci95"] is None and pair["per_au"][0]["unavailable"]
    assert pair["per_au"][1]["ci95"] is not None
    # what eval prints and writes says so
    from aubench_cli.evaluation.evaluate import _unavailable_note

    note = _unavailable_note(["AU01", "AU02"], ci, "subject")
    assert "no interval for AU01 and for the mean" in note and "AU02" not in note


def _runs(rng, subjects, frames=30, k=2, skill=None):
    """Labels and two runs' decisions that are exchangeable within each subject (the null)."""
    units = np.repeat(np.arange(subjects), frames)
    labels = rng.integers(0, 2, (subjects * frames, k))
    p = rng.uniform(0.55, 0.95, subjects)[units][:, None]  # how easy each subject is, shared by both runs
    right = lambda: rng.random(labels.shape) < p  # noqa: E731
    a = np.where(right(), labels == 1, labels == 0)
    b = np.where(right(), labels == 1, labels == 0)
    return labels, units, a, b


def test_paired_with_itself_and_against_unpaired():
    rng = np.random.default_rng(5)
    labels, units, a, _ = _runs(rng, 25)
    counts = stats.unit_counts(a, labels, units, 25)
    same = stats.paired(counts, counts, np.random.default_rng(0))
    assert same["mean"]["value"] == 0 and same["mean"]["p_value"] == 1.0 and same["mean"]["ci95"] == [0, 0]
    # B: A's decisions with 4 % of them flipped: strongly paired with A, and slightly worse
    flip = rng.random(a.shape) < 0.04
    b = np.where(flip & (a == (labels == 1)), ~a, a)
    cb = stats.unit_counts(b, labels, units, 25)
    paired = stats.paired(counts, cb, np.random.default_rng(0))
    # the same decisions of B, shuffled across frames of the same label (pairing with A broken)
    shuffled = b.copy()
    for k in range(labels.shape[1]):
        for value in (0, 1):
            rows = np.flatnonzero(labels[:, k] == value)
            shuffled[rows, k] = b[rng.permutation(rows), k]
    unpaired = stats.paired(counts, stats.unit_counts(shuffled, labels, units, 25), np.random.default_rng(0))
    assert paired["mean"]["value"] == pytest.approx(unpaired["mean"]["value"])  # same marginal accuracies
    assert paired["mean"]["p_value"] < 0.01 < unpaired["mean"]["p_value"]
    width = lambda r: r["mean"]["ci95"][1] - r["mean"]["ci95"][0]  # noqa: E731
    assert width(paired) < 0.5 * width(unpaired)


def test_exact_permutation_test_by_hand():
    delta = np.array([[0.3], [0.1], [-0.05]])
    test = stats.permutation_test(delta, np.random.default_rng(0))
    sums = [abs(s1 * 0.3 + s2 * 0.1 + s3 * -0.05) for s1 in (1, -1) for s2 in (1, -1) for s3 in (1, -1)]
    assert test["kind"] == "exact" and test["permutations"] == 8
    assert test["p_values"][0] == pytest.approx(sum(s >= 0.35 - 1e-12 for s in sums) / 8)
    assert test["p_values"][0] == 0.5  # 0.35 and 0.45, each with its mirror
    assert test["min_p_value"] == 0.25


def test_monte_carlo_permutation_test_matches_exact():
    rng = np.random.default_rng(6)
    delta = rng.normal(0.01, 0.05, (14, 3))
    exact = stats.permutation_test(delta, rng)
    mc = stats.permutation_test(delta, np.random.default_rng(7), permutations=20000, exact_max=10)
    assert exact["kind"] == "exact" and mc["kind"] == "monte-carlo"
    assert mc["p_values"] == pytest.approx(exact["p_values"], abs=0.015)


@pytest.mark.parametrize("subjects", [12, 40])  # exact and Monte Carlo
def test_calibration_under_the_null(subjects):
    rng = np.random.default_rng(100 + subjects)
    rejected = 0
    for _ in range(500):
        labels, units, a, b = _runs(rng, subjects, frames=20)
        r = stats.paired(stats.unit_counts(a, labels, units, subjects), stats.unit_counts(b, labels, units, subjects),
                         rng, resamples=10, permutations=999)
        rejected += r["mean"]["p_value"] < 0.05
    assert 0.02 <= rejected / 500 <= 0.08


def test_three_subjects_can_never_be_significant():
    rng = np.random.default_rng(8)
    labels, units, a, _ = _runs(rng, 3)
    b = labels == 0  # every decision wrong: as different as two runs can be
    r = stats.paired(stats.unit_counts(a, labels, units, 3), stats.unit_counts(b, labels, units, 3), rng)
    assert r["min_p_value"] == 0.25 and r["mean"]["p_value"] == 0.25 and r["mean"]["value"] > 0.5


def test_subjects_with_zero_difference_do_not_count_towards_the_smallest_p():
    """Issue 22, item 9: 10 subjects of which 7 have a zero paired difference reach p = 2 / 2^3 = 0.25 at best."""
    from aubench_cli.evaluation.evaluate import compare_counts

    rng = np.random.default_rng(3)
    c, f = 10, 40
    labels, units, a, _ = _runs(rng, c, frames=f)
    b = a.copy()
    differ = units < 3  # the runs decide differently only on subjects 0..2, and there as differently as possible
    b[differ] = labels[differ] == 0
    ca, cb = stats.unit_counts(a, labels, units, c), stats.unit_counts(b, labels, units, c)
    r = stats.paired(ca, cb, rng)
    assert r["min_p_value"] == 0.25 and r["mean"]["min_p_value"] == 0.25 and r["units_differing"] == 3
    assert r["mean"]["p_value"] >= r["min_p_value"]
    aus = ["AU1", "AU2"]
    run = {"per_au": {au: {"accuracy": 0.5} for au in aus}}
    pair = compare_counts({**run, "run": "a"}, {**run, "run": "b"}, ca, cb, aus, {}, "subject", 0)
    assert pair["min_p_value"] == 0.25 and not pair["can_be_significant"]
    assert "no difference can be significant" in pair["note"] and "with 10 subjects, 3 of which" in pair["note"]
    one = compare_counts({**run, "run": "a"}, {**run, "run": "b"}, ca[:1], cb[:1], aus, {}, "subject", 0)
    assert "with 1 subject, 1 of which" in one["note"]  # not '1 subjects'
    # the same through the Monte Carlo and the exact paths: per column, n is that column's non-zero terms
    delta = np.zeros((30, 2))
    delta[:3, 0] = [0.2, 0.1, 0.3]
    delta[:, 1] = 0.01
    mc = stats.permutation_test(delta, np.random.default_rng(0), permutations=999, exact_max=4)
    assert mc["kind"] == "monte-carlo" and mc["min_p_values"][0] == 0.25 and mc["min_p_values"][1] == 1 / 1000
    assert mc["min_p_value"] == 1 / 1000 and mc["p_values"][0] == 0.25  # its 3 terms, tested exactly
    assert stats.permutation_test(np.zeros((5, 1)), np.random.default_rng(0))["min_p_value"] == 1.0


def test_monte_carlo_p_value_counts_the_observed_arrangement():
    """(1 + hits) / (R + 1): where no random sign pattern reaches the observed sum, p is exactly 1 / (R + 1)
    (30 equal terms: only the all-plus and all-minus patterns reach it, odds 2^-29 per draw)."""
    delta = np.ones((30, 1))
    for permutations in (99, 999):
        mc = stats.permutation_test(delta, np.random.default_rng(1), permutations=permutations, exact_max=4)
        assert mc["kind"] == "monte-carlo" and mc["p_values"][0] == 1 / (permutations + 1)
        assert mc["min_p_value"] == 1 / (permutations + 1)


def test_holm_by_hand():
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_ranks_on_printed_values():
    # 0.7649 and 0.7651 both print as 76.5: they share the best mark; 0.7640 is second
    assert stats.ranks([0.7649, 0.7651, 0.7640, None]) == [1, 1, 2, None]
    assert stats.ranks([0.8, 0.8, 0.8]) == [1, 1, 1]
    assert stats.ranks([0.5, 0.7, 0.6, 0.6]) == [None, 1, 2, 2]


def test_large_samples_use_the_normal_limits(monkeypatch):
    """Above LARGE_SAMPLE units the linearised standard error and the normal limit of the sign-flip test stand in
    for thousands of resamples: they agree with the bootstrap and the Monte Carlo test they replace."""
    rng = np.random.default_rng(9)
    labels, units, a, b = _runs(rng, 300, frames=10, k=3)
    b = np.where(rng.random(a.shape) < 0.02, labels == 0, b)  # B: exchangeable with A, then slightly worse
    ca, cb = stats.unit_counts(a, labels, units, 300), stats.unit_counts(b, labels, units, 300)
    boot_one = stats.interval(ca, np.random.default_rng(0), resamples=4000)
    boot = stats.paired(ca, cb, np.random.default_rng(0), resamples=4000, permutations=20000)
    monkeypatch.setattr(stats, "LARGE_SAMPLE", 100)
    normal_one = stats.interval(ca, np.random.default_rng(0))
    normal = stats.paired(ca, cb, np.random.default_rng(0))
    assert normal_one["method"] == normal["method"] == "normal-linearised" and normal["permutation"] == "normal"
    assert boot_one["method"] == "bootstrap-percentile" and boot["permutation"] == "monte-carlo"
    for fast, slow in ((normal_one, boot_one), (normal, boot)):
        for q in range(4):
            f, s = (fast["per_au"] + [fast["mean"]])[q], (slow["per_au"] + [slow["mean"]])[q]
            assert f["value"] == s["value"]
            assert f["se"] == pytest.approx(s["se"], rel=0.1)
            assert f["ci95"] == pytest.approx(s["ci95"], abs=0.01)
    p_mc = [t["p_value"] for t in boot["per_au"] + [boot["mean"]]]
    p_normal = [t["p_value"] for t in normal["per_au"] + [normal["mean"]]]
    assert max(p_mc) > 0.01  # not all trivially 0
    assert p_normal == pytest.approx(p_mc, abs=0.02)


def test_permutation_test_ignores_units_where_the_runs_agree():
    """Units with delta 0 change nothing: few discordant units are tested exactly even among many units (the normal
    limit would be wrong there, as McNemar's normal approximation is with few discordant pairs)."""
    delta = np.zeros((5000, 1))
    delta[:5, 0] = [0.01, 0.02, 0.01, 0.03, 0.01]
    test = stats.permutation_test(delta, np.random.default_rng(0))
    assert test["kind"] == "exact" and test["permutations"] == 32
    assert test["p_values"][0] == pytest.approx(2 / 32)


def test_per_au_significance_is_decided_after_holm():
    """Two AUs with raw p < 0.05 (0.029, 0.021 of 4 AUs) are not significant once Holm-corrected; both p reported."""
    from aubench_cli.evaluation.evaluate import compare_counts

    rng = np.random.default_rng(1)
    c, k, f = 12, 4, 40
    units = np.repeat(np.arange(c), f)
    labels = rng.integers(0, 2, (c * f, k))
    p = rng.uniform(0.6, 0.9, c)[units][:, None]
    a = np.where(rng.random(labels.shape) < p, labels == 1, labels == 0)
    b = np.where(rng.random(labels.shape) < p - 0.04, labels == 1, labels == 0)
    aus = [f"AU{i}" for i in range(k)]
    run = {"per_au": {au: {"accuracy": 0.5} for au in aus}}
    pair = compare_counts({**run, "run": "a"}, {**run, "run": "b"}, stats.unit_counts(a, labels, units, c),
                          stats.unit_counts(b, labels, units, c), aus, {}, "subject", 0)
    raw = [pair["per_au"][au]["p_value"] for au in aus]
    assert sum(x < 0.05 for x in raw) == 2 and pair["permutation"] == "exact"
    assert [pair["per_au"][au]["p_holm"] for au in aus] == pytest.approx(stats.holm(raw))
    assert not any(t["significant"] for t in pair["per_au"].values())
    assert pair["can_be_significant"] and "no difference can be significant" not in pair["note"]


def test_seeds_are_resampled_as_well_as_subjects():
    # Two settings tested on the same 12 subjects, 3 seeds each. Setting A's mean lead comes from one lucky seed:
    # resampling the seeds (the two-level bootstrap) must widen the interval over what the subjects alone give
    # and keep that lead from being called significant.
    rng = np.random.default_rng(0)
    subjects, k = 12, 2
    labels = np.tile(np.r_[np.ones(10), np.zeros(10)], (subjects, 1))  # 20 frames a subject, half positive

    def counts(acc: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        out = np.zeros((subjects, k, 4), dtype=np.int64)
        for s in range(subjects):
            for j in range(k):
                correct = r.random(20) < acc
                pos = labels[s] == 1
                out[s, j] = [np.sum(correct & pos), pos.sum(), np.sum(correct & ~pos), (~pos).sum()]
        return out

    a = np.stack([counts(0.70, 1), counts(0.70, 2), counts(0.95, 3)])  # one lucky seed
    b = np.stack([counts(0.75, 4), counts(0.75, 5), counts(0.75, 6)])
    two = stats.paired_seeds(a, b, rng)
    fixed = stats.paired_seeds(a.sum(axis=0, keepdims=True), b.sum(axis=0, keepdims=True), rng)  # seeds pooled
    assert two["mean"]["value"] == pytest.approx(np.mean([stats.balanced_accuracy(x.sum(0)).mean() for x in a])
                                                 - np.mean([stats.balanced_accuracy(x.sum(0)).mean() for x in b]))
    assert two["mean"]["half_width"] > 1.5 * fixed["mean"]["half_width"]
    assert fixed["mean"]["p_value"] < 0.05 <= two["mean"]["p_value"]  # seed luck is not significant
    same = stats.paired_seeds(a, a, rng)
    assert same["mean"]["value"] == 0.0


def test_intervals_of_a_proportion_stay_inside_0_1():
    # two subjects, one nearly perfect and one far worse: the jackknife-t (1 d.f., t = 12.7) reaches past 1
    from aubench_cli.evaluation.stats import interval, pooled

    counts = np.array([[[99, 100, 99, 100]], [[70, 100, 80, 100]]], dtype=np.int64)  # (C=2, K=1, tp pos tn neg)
    for result in (interval(counts, np.random.default_rng(0)), pooled(counts, np.random.default_rng(0))):
        lo, hi = result["mean"]["ci95"]
        assert 0.0 <= lo <= result["mean"]["value"] <= hi <= 1.0
        assert hi == 1.0 and result["mean"]["half_width"] > 1.0 - result["mean"]["value"]  # clipped, not shrunk
