"""Which run to choose: rankings with their uncertainty, a critical-difference test, practical equivalence.

All of it works on per-subject counts at 0.5 (``stats.unit_counts``: tp, pos, tn, neg per subject and AU) of runs
tested on the same subjects, one array per run shaped ``(A, S, C, K, 4)``: A fold assignments (``aubench study
--fold-seeds``; 1 without), S training seeds (1 without), C subjects, K AUs. The measure is the mean balanced
accuracy over AUs (pooled over the subjects), the quantity the rest of aubench reports with intervals.

- ``rank_uncertainty``: paired resampling. Each replicate draws the test subjects with replacement **once for
  all runs** (so a subject that is hard for every run stays hard for every run: the pairing), the fold
  assignments with replacement (shared by all runs: they are trained on the same folds), and, independently for
  each run, its training seeds; each run's figure is its mean over the drawn assignments and seeds. From the
  replicates: each run's mean rank, its 95 % rank interval (2.5 and 97.5 percentiles of its rank), P(best), and
  the matrix P(row better than column). Replicates in which an AU has no positive or no negative frame are left
  out and counted.
- ``critical_difference``: the Friedman test with the test subjects as blocks (each subject's own balanced
  accuracy, averaged over its AUs that have both classes, and over seeds and assignments), then, if it rejects,
  the Nemenyi post-hoc test (``scikit_posthocs.posthoc_nemenyi_friedman``) and the groups of runs that cannot be
  told apart: maximal runs of neighbours in the order of mean ranks with no significant pair inside (the bars of
  a critical-difference diagram, Demsar 2006). The critical difference of mean ranks is
  ``q_alpha * sqrt(k (k + 1) / (6 N))``.
- ``rope_compare``: the Bayesian signed-rank test over subjects (``baycomp.SignedRankTest``, Benavoli et al.
  2017) on the same per-subject scores: P(A better), P(practically equivalent: within the ROPE), P(B better).
- ``rankings``: all of the above, plus the lead of the best run over the second (and a baseline) with a 95 %
  interval, and ``summary``: one paragraph a person can read, with the caveats that apply.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from aubench_cli.errors import UsageError, plural, suggest
from aubench_cli.evaluation import stats

DEFAULT_ROPE = 0.01  # one point of balanced accuracy: below what a test split of a few dozen subjects resolves
ALPHA = 0.05
ROPE_SAMPLES = 20000  # posterior samples of the signed-rank test (baycomp's default is 50000; 3 digits need fewer)
RANK_STREAM = 11  # np.random.default_rng([seed, 11]): the rank resamples
FEW_SUBJECTS = 20  # the percentile bootstrap under-covers below this (stats.SMALL_SAMPLE)
FEW_SEEDS = 3
LIBRARY = "scikit-posthocs (Friedman via scipy.stats.friedmanchisquare, Nemenyi post-hoc, the diagram) and baycomp"


def as_levels(counts: np.ndarray) -> np.ndarray:
    """Counts ``(C, K, 4)``, ``(S, C, K, 4)`` or ``(A, S, C, K, 4)`` as ``(A, S, C, K, 4)`` float64."""
    counts = np.asarray(counts, dtype=np.float64)
    while counts.ndim < 5:
        counts = counts[None]
    return counts


def _mean_ba(summed: np.ndarray) -> np.ndarray:
    """Mean balanced accuracy over AUs of summed counts ``(..., K, 4)``; NaN when an AU has no pos or neg."""
    return stats.balanced_accuracy(summed).mean(axis=-1)


def point_values(counts: Sequence[np.ndarray]) -> np.ndarray:
    """Each run's figure on all its data: the pooled mean balanced accuracy, averaged over assignments and seeds."""
    return np.array([_mean_ba(as_levels(c).sum(axis=2)).mean() for c in counts])


def replicates(counts: Sequence[np.ndarray], rng: np.random.Generator,
               resamples: int = stats.RESAMPLES) -> tuple[np.ndarray, int]:
    """``(R, runs)`` replicate figures under paired resampling (module docstring) and the number of replicates
    left out because an AU had no positive or no negative frame in them."""
    levels = [as_levels(c) for c in counts]
    a, _, c, k, _ = levels[0].shape
    if any(x.shape[0] != a or x.shape[2:] != (c, k, 4) for x in levels):
        raise ValueError("every run must be tested on the same subjects and AUs, over the same fold assignments")
    weights = rng.multinomial(c, np.full(c, 1.0 / c), size=resamples).astype(np.float64)  # (R, C), shared
    pick_a = rng.integers(0, a, size=(resamples, a))  # assignments, shared by every run
    out = np.empty((resamples, len(levels)))
    for i, x in enumerate(levels):
        s = x.shape[1]
        summed = np.einsum("rc,ascd->rasd", weights, x.reshape(a, s, c, k * 4))
        values = _mean_ba(summed.reshape(resamples, a, s, k, 4))  # (R, A, S)
        pick_s = rng.integers(0, s, size=(resamples, s))  # this run's own seeds
        chosen = np.take_along_axis(values, pick_a[:, :, None], axis=1)  # (R, A, S)
        chosen = np.take_along_axis(chosen, pick_s[:, None, :], axis=2)
        out[:, i] = chosen.mean(axis=(1, 2))
    ok = np.all(np.isfinite(out), axis=1)
    return out[ok], int((~ok).sum())


def rank_rows(values: np.ndarray) -> np.ndarray:
    """Ranks (1 = best, ties share the mean rank) of each row of ``values`` ``(R, runs)``, higher is better."""
    from scipy.stats import rankdata

    return rankdata(-values, axis=1, method="average")


def resamplable(counts: Sequence[np.ndarray]) -> bool:
    """Whether paired resampling has anything to draw: 2 or more test subjects, fold assignments, or training seeds
    of some run. With one of each, every resample is the data itself: P(best) would be 1 and every interval a
    point by construction, which measures nothing (as ``stats`` gives no interval over fewer than 2 units)."""
    return any(x.shape[0] > 1 or x.shape[1] > 1 or x.shape[2] > 1 for x in map(as_levels, counts))


def rank_uncertainty(counts: Sequence[np.ndarray], names: Sequence[str], rng: np.random.Generator,
                     resamples: int = stats.RESAMPLES) -> dict[str, Any]:
    """Mean rank, 95 % rank interval, P(best) and P(row better than column) of each run under paired resampling.
    Where nothing can be resampled (``resamplable``): each run's rank on the data, and no interval, P(best) or
    P(better)."""
    point = point_values(counts)
    n = len(names)
    if not resamplable(counts):
        ranks = rank_rows(np.nan_to_num(point, nan=-np.inf)[None, :])[0]
        runs = [{"run": name, "value": _num(point[i]), "mean_rank": _num(ranks[i]), "rank_ci95": None, "p_best": None}
                for i, name in enumerate(names)]
        return {"metric": "balanced_accuracy", "resamples": 0, "resampled": False, "degenerate": 0, "runs": runs,
                "p_better": [[None] * n for _ in range(n)], "_replicates": np.zeros((0, n))}
    reps, dropped = replicates(counts, rng, resamples)
    ranks = rank_rows(reps) if len(reps) else np.zeros((0, len(names)))
    better = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(n):
            if i != j and len(reps):
                better[i, j] = float(np.mean(reps[:, i] > reps[:, j]) + 0.5 * np.mean(reps[:, i] == reps[:, j]))
    best = reps.max(axis=1, keepdims=True) if len(reps) else np.zeros((0, 1))
    ties = (reps == best).sum(axis=1, keepdims=True) if len(reps) else np.ones((0, 1))
    p_best = ((reps == best) / ties).mean(axis=0) if len(reps) else np.full(n, np.nan)  # a tie shares the win
    runs = []
    for i, name in enumerate(names):
        col = ranks[:, i]
        runs.append({"run": name, "value": _num(point[i]),
                     "mean_rank": _num(col.mean()) if len(col) else None,
                     "rank_ci95": [float(np.percentile(col, 2.5)), float(np.percentile(col, 97.5))] if len(col) else None,
                     "p_best": _num(p_best[i])})
    return {"metric": "balanced_accuracy", "resamples": len(reps), "resampled": True, "degenerate": dropped,
            "runs": runs, "p_better": [[_num(v) for v in row] for row in better], "_replicates": reps}


def _num(v: Any) -> float | None:
    return None if v is None or not np.isfinite(v) else float(v)


def subject_scores(counts: np.ndarray) -> np.ndarray:
    """Each subject's own balanced accuracy ``(C,)``: the mean over the AUs in which it has both a positive and a
    negative frame, averaged over seeds and assignments; NaN for a subject with no such AU."""
    x = as_levels(counts)
    per_au = stats.balanced_accuracy(x)  # (A, S, C, K)
    with warnings.catch_warnings():  # a subject with no AU of both classes: NaN, said by the caller
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(per_au, axis=3).mean(axis=(0, 1))


def score_matrix(counts: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """``(subjects, runs)`` per-subject scores, the subjects without a score for every run left out, and how many."""
    scores = np.stack([subject_scores(c) for c in counts], axis=1)
    ok = np.all(np.isfinite(scores), axis=1)
    return scores[ok], int((~ok).sum())


def cd_groups(order: list[int], significant: np.ndarray) -> list[list[int]]:
    """Maximal runs of neighbours in ``order`` (best first) with no significant pair inside: the bars of a CD
    diagram. A run different from every other one is a group of its own."""
    spans = []
    for start in range(len(order)):
        end = start
        while end + 1 < len(order) and not any(significant[order[i], order[end + 1]] for i in range(start, end + 1)):
            end += 1
        spans.append((start, end))
    kept = [s for s in spans if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)]
    return [[order[i] for i in range(a, b + 1)] for a, b in sorted(set(kept))]


def critical_difference(scores: np.ndarray, names: Sequence[str], alpha: float = ALPHA) -> dict[str, Any]:
    """Friedman over the subjects (rows of ``scores``, ``(N, k)``), Nemenyi post-hoc, CD and groups."""
    n, k = scores.shape
    ranks = rank_rows(scores).mean(axis=0) if n else np.full(k, np.nan)
    order = [int(i) for i in np.argsort(ranks, kind="stable")]
    out: dict[str, Any] = {"test": "friedman", "post_hoc": "nemenyi", "alpha": alpha, "subjects": n,
                           "mean_ranks": {names[i]: _num(ranks[i]) for i in range(k)}, "order": [names[i] for i in order],
                           "library": LIBRARY}
    if k < 3 or n < 2:
        out.update(statistic=None, p_value=None, cd=None, p_matrix=None,
                   groups=[[names[i] for i in order]],
                   note=f"the Friedman test needs at least 3 runs and 2 subjects ({k} runs, {plural(n, 'subject')}): "
                        "no groups")
        return out
    from scipy.stats import friedmanchisquare, studentized_range

    if np.all(scores == scores[:, :1]):  # every run equal on every subject: nothing to tell apart
        stat, p = 0.0, 1.0
    else:
        stat, p = friedmanchisquare(*scores.T)
    cd = float(studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    out.update(statistic=_num(stat), p_value=_num(p), cd=cd)
    if not (p < alpha):
        out.update(p_matrix=None, groups=[[names[i] for i in order]],
                   note=f"Friedman p = {p:.3g} >= {alpha:g}: the runs cannot be told apart (one group)")
        return out
    import scikit_posthocs as sp

    pm = np.asarray(sp.posthoc_nemenyi_friedman(scores), dtype=np.float64)
    significant = pm < alpha
    np.fill_diagonal(significant, False)
    out.update(p_matrix=[[_num(v) for v in row] for row in pm],
               groups=[[names[i] for i in g] for g in cd_groups(order, significant)],
               note=f"Friedman p = {p:.3g}; Nemenyi post-hoc at {alpha:g}")
    return out


def rope_compare(a: np.ndarray, b: np.ndarray, rope: float = DEFAULT_ROPE, seed: int = 0,
                 samples: int = ROPE_SAMPLES) -> dict[str, Any]:
    """Bayesian signed-rank test over subjects of per-subject scores ``a`` and ``b`` (same subjects): P(A better
    by more than ``rope``), P(within ``rope``), P(B better by more than ``rope``), and the verdict (the one with
    probability >= 0.95, else undecided)."""
    from baycomp import SignedRankTest

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if rope <= 0:
        raise ValueError("the ROPE must be positive")
    if len(a) < 2:
        return {"p_a": None, "p_equivalent": None, "p_b": None, "verdict": "too few subjects", "rope": rope,
                "subjects": len(a)}
    # baycomp's difference is y - x: its first probability is that of x better (to the left of the ROPE)
    p_a, p_eq, p_b = SignedRankTest.probs(a, b, rope=rope, nsamples=samples, random_state=seed)
    verdict = ("A better" if p_a >= 0.95 else "B better" if p_b >= 0.95 else "equivalent" if p_eq >= 0.95
               else "undecided")
    return {"p_a": float(p_a), "p_equivalent": float(p_eq), "p_b": float(p_b), "verdict": verdict, "rope": rope,
            "subjects": len(a), "test": "Bayesian signed-rank over subjects (baycomp)"}


def _lead(reps: np.ndarray, point: np.ndarray, i: int, j: int) -> dict[str, Any]:
    diff = reps[:, i] - reps[:, j]
    ci = [float(v) for v in np.percentile(diff, [2.5, 97.5])] if len(diff) > 1 else None
    return {"value": _num(point[i] - point[j]), "ci95": ci}


def rankings(counts: Sequence[np.ndarray], names: Sequence[str], *, rope: float = DEFAULT_ROPE,
             pairs: Sequence[tuple[str, str]] = (), seed: int = 0, alpha: float = ALPHA,
             resamples: int = stats.RESAMPLES, baseline: str | None = None) -> dict[str, Any]:
    """Rank uncertainty, the CD test and ROPE comparisons of runs tested on the same subjects (module docstring);
    ``pairs``: the comparisons asked for by name, the top two always. ``baseline``: a run to state the lead over."""
    names = list(names)
    if len(names) < 2:
        raise ValueError("rankings need at least two runs")
    unknown = [p for pair in pairs for p in pair if p not in names]
    if unknown:
        raise UsageError(f"--pair names a run that is not ranked: {unknown[0]!r}", suggest(unknown[0], names))
    rng = np.random.default_rng([seed, RANK_STREAM])
    ranked = rank_uncertainty(counts, names, rng, resamples)
    reps = ranked.pop("_replicates")
    point = point_values(counts)
    order = [int(i) for i in np.argsort(-np.nan_to_num(point, nan=-np.inf), kind="stable")]
    scores, dropped = score_matrix(counts)
    cd = critical_difference(scores, names, alpha)
    cd["subjects_without_score"] = dropped
    wanted = [(names[order[0]], names[order[1]])] + [tuple(p) for p in pairs]
    comparisons = []
    for a, b in dict.fromkeys(wanted):
        if a == b:
            continue
        i, j = names.index(a), names.index(b)
        comparisons.append({"a": a, "b": b, "diff": _num(point[i] - point[j]),
                            **rope_compare(scores[:, i], scores[:, j], rope, seed)})
    levels = [as_levels(c).shape for c in counts]
    # AUs whose positives (or negatives) all lie in one subject: no resample sees that class vary between subjects
    one_holder = stats.single_holders(as_levels(counts[0])[0, 0])[:-1]
    out = {**ranked, "alpha": alpha, "rope": rope, "best": names[order[0]], "second": names[order[1]],
           "aus_in_one_subject": [int(i) for i in np.flatnonzero(one_holder)],
           "lead": _lead(reps, point, order[0], order[1]) if len(reps) or not ranked["resampled"] else None,
           "subjects": levels[0][2], "assignments": levels[0][0], "seeds": [s[1] for s in levels],
           "critical_difference": cd, "rope_comparisons": comparisons}
    if baseline in names and baseline != names[order[0]] and (len(reps) or not ranked["resampled"]):
        out["baseline"] = {"run": baseline, **_lead(reps, point, order[0], names.index(baseline))}
    out["caveats"] = caveats(out)
    out["summary"] = summary(out)
    return out


def caveats(r: dict[str, Any]) -> list[str]:
    """What limits the answer: few subjects, few or no seeds, one fold assignment, a test that did not reject."""
    out = []
    if r["subjects"] < FEW_SUBJECTS and r["resampled"]:  # not resampled: the summary says what that means
        out.append(f"only {plural(r['subjects'], 'test subject')}: resampling so few under-covers, so the rank "
                   "intervals and P(best) are optimistic")
    seeds = min(r["seeds"])
    if seeds == 1:
        out.append("one training seed per run: the ranking leaves out the spread due to training")
    elif seeds < FEW_SEEDS:
        out.append(f"only {seeds} training seeds per run: their spread is poorly known")
    if r["assignments"] == 1:
        out.append("one subject-to-fold assignment (or one test split): the spread due to which subjects are "
                   "tested is left out (aubench study --fold-seeds)")
    cd = r["critical_difference"]
    if cd.get("p_value") is not None and not cd["p_value"] < r["alpha"]:
        out.append(f"the Friedman test does not reject (p = {cd['p_value']:.2g}): no run is shown to differ")
    if r["degenerate"]:
        out.append(f"{r['degenerate']} resamples left out (an AU without positive or negative frames in them)")
    held = r.get("aus_in_one_subject") or []
    if held and r["subjects"] > 1:  # with one subject, the caveat on few subjects says it all
        out.append(f"{len(held)} AU{'s' if len(held) > 1 else ''} with every positive (or negative) frame in one "
                   "subject: how that class varies between subjects is in no resample, so the rank intervals and "
                   "P(best) are optimistic")
    return out


def summary(r: dict[str, Any]) -> str:
    """One paragraph: the best run, how often it is best, the runs it cannot be told from, its lead, caveats."""
    best = r["best"]
    if not r["resampled"]:
        return _unresampled_summary(r)
    row = next(x for x in r["runs"] if x["run"] == best)
    text = f"Best: {best}"
    if row["p_best"] is not None:
        text += f" (best in {100 * row['p_best']:.0f} % of {r['resamples']} resamples"
        text += f", rank {row['rank_ci95'][0]:g}-{row['rank_ci95'][1]:g} at 95 %)" if row["rank_ci95"] else ")"
    group = next((g for g in r["critical_difference"]["groups"] if best in g), [best])
    others = [n for n in group if n != best]
    if r["critical_difference"].get("p_value") is None:
        text += "; no critical-difference test (it needs 3 runs)" if len(r["runs"]) < 3 else \
            f"; no critical-difference test (it needs 2 test subjects; {r['critical_difference']['subjects']} here)"
    elif others:
        text += f"; not distinguishable from {_names(others)} (CD group)"
    else:
        text += "; better than every other run (its own CD group)"
    lead = r.get("lead")
    if lead and lead["value"] is not None:
        text += f"; {100 * lead['value']:.1f} points ahead of {r['second']}" + _ci(lead["ci95"])
    base = r.get("baseline")
    if base and base["value"] is not None and base["run"] != r["second"]:
        text += f", {100 * base['value']:.1f} points ahead of {base['run']}" + _ci(base["ci95"])
    first = r["rope_comparisons"][0] if r["rope_comparisons"] else None
    if first and first["p_equivalent"] is not None:
        text += (f". Against {first['b']}: P(better) {first['p_a']:.2f}, P(equivalent within "
                 f"{rope_points(r['rope'])}) {first['p_equivalent']:.2f}, P(worse) {first['p_b']:.2f}")
    text += ". Measure: mean balanced accuracy over AUs."
    if r["caveats"]:
        text += " Caveats: " + "; ".join(r["caveats"]) + "."
    return text


def _unresampled_summary(r: dict[str, Any]) -> str:
    """One test subject, one training seed, one test split: the order on the data, and plainly that it shows no
    run better than another."""
    text = f"Highest: {r['best']}"
    lead = r.get("lead")
    if lead and lead["value"] is not None:
        text += f", {100 * lead['value']:.1f} points ahead of {r['second']}"
    text += (f". With {plural(r['subjects'], 'test subject')}, one training seed per run and one test split, "
             "nothing here measures chance (no rank interval, P(best) or test can be computed), so no run is shown "
             "better than another: test every subject once with k-fold cross-validation (--folds K) and repeat "
             "training (aubench study --seeds N). Measure: mean balanced accuracy over AUs.")
    return text  # the caveats (one seed, one split) are what the paragraph already says


def rope_points(rope: float) -> str:
    """The ROPE (a fraction of balanced accuracy) in points: '1 point', '0.5 points', '2 points'."""
    value = 100 * rope
    return f"{value:g} point" + ("" if value == 1 else "s")


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f" (95 % interval {100 * ci[0]:.1f} to {100 * ci[1]:.1f})"


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def public(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def eval_rankings(results: Sequence[dict[str, Any]], *, rope: float = DEFAULT_ROPE,
                  pairs: Sequence[tuple[str, str]] = (), seed: int = 0) -> dict[str, Any]:
    """``rankings`` of runs evaluated together (``aubench eval RUN...``; their pairing is checked by
    ``evaluate.compare`` first) on their shared AUs and test subjects; runs named by their directory."""
    names = [str(r["run"]).rstrip("/").split("/")[-1] for r in results]
    if len(set(names)) < len(names):
        names = [str(r["run"]) for r in results]
    sc = [r["subject_counts"] for r in results]
    aus = [au for au in sc[0]["au_names"] if all(au in x["au_names"] for x in sc)]
    if any(x["subjects"] != sc[0]["subjects"] for x in sc):
        raise UsageError("the runs were tested on different subjects", "evaluate them on the same cache and split")
    counts = [np.asarray(x["counts"])[:, [x["au_names"].index(au) for au in aus]] for x in sc]
    out = rankings(counts, names, rope=rope, pairs=pairs, seed=seed)
    out["aus"] = aus
    return public(out)


def parse_pairs(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--pair A,B`` items as name pairs; a UsageError for anything else."""
    out = []
    for item in items or []:
        parts = [p.strip() for p in str(item).split(",")]
        if len(parts) != 2 or not all(parts):
            raise UsageError(f"--pair {item!r} is not two run names", "e.g. --pair vgg16,resnet50")
        out.append((parts[0], parts[1]))
    return out


def rope_from_points(points: float) -> float:
    """``--rope`` in points (1 = one point of balanced accuracy) as a fraction; a UsageError unless positive."""
    if not (points > 0) or not math.isfinite(points):
        raise UsageError(f"--rope must be a positive number of points, got {points}", "e.g. --rope 1 (the default)")
    return points / 100.0
