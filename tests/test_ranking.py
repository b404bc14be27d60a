"""Rankings with their uncertainty on synthetic per-subject counts of known structure: a run better on every
subject is best in almost every resample and alone in its CD group; identical runs share one group and have
overlapping rank intervals; a run better by less than the ROPE is called equivalent, by more, better; seeds and
fold assignments widen the rank distributions; the CD groups and the summary by hand."""

from __future__ import annotations

import numpy as np
import pytest

from aubench_cli.errors import UsageError
from aubench_cli.evaluation import ranking

SUBJECTS, FRAMES, AUS = 30, 300, 4


def labels_of(rng, subjects=SUBJECTS):
    return rng.random((subjects, FRAMES, AUS)) < 0.3


def counts_of(labels, accuracy, rng):
    """Per-subject counts (C, K, 4) of decisions right with probability ``accuracy`` (one per subject)."""
    right = rng.random(labels.shape) < np.asarray(accuracy)[:, None, None]
    pred = np.where(right, labels, ~labels)
    return np.stack([(pred & labels).sum(1), labels.sum(1), (~pred & ~labels).sum(1), (~labels).sum(1)], -1)


@pytest.fixture(scope="module")
def clear():
    """``good`` is 10 points better than three similar runs on every subject."""
    rng = np.random.default_rng(1)
    labels = labels_of(rng)
    skill = rng.uniform(0.65, 0.8, SUBJECTS)
    names = ["good", "a", "b", "c"]
    counts = [counts_of(labels, skill + (0.1 if n == "good" else 0.0), rng) for n in names]
    return ranking.rankings(counts, names, resamples=1000), counts, names


def test_a_run_better_on_every_subject_is_best_and_alone(clear):
    r, _, _ = clear
    good = next(x for x in r["runs"] if x["run"] == "good")
    assert good["p_best"] > 0.95 and good["rank_ci95"] == [1.0, 1.0] and good["mean_rank"] < 1.05
    assert r["best"] == "good"
    assert ["good"] in r["critical_difference"]["groups"]
    assert r["critical_difference"]["p_value"] < 0.001
    assert sorted(sum(r["critical_difference"]["groups"], [])) == sorted(["good", "a", "b", "c"])
    i = ["good", "a", "b", "c"].index("good")
    assert all(r["p_better"][i][j] > 0.95 for j in range(4) if j != i)
    p = np.array([[0.5 if v is None else v for v in row] for row in r["p_better"]])
    assert np.allclose(p + p.T, 1.0)  # P(i better than j) + P(j better than i) = 1 (ties split)
    assert sum(x["p_best"] for x in r["runs"]) == pytest.approx(1.0)
    assert r["lead"]["ci95"][0] > 0.05 and r["lead"]["value"] == pytest.approx(r["runs"][0]["value"] - max(
        x["value"] for x in r["runs"][1:]))
    (top,) = r["rope_comparisons"]
    assert (top["a"], top["verdict"]) == ("good", "A better") and top["p_a"] > 0.95
    assert r["summary"].startswith("Best: good (best in 100 %") and "its own CD group" in r["summary"]


def test_identical_runs_overlap_and_share_one_group():
    rng = np.random.default_rng(2)
    labels = labels_of(rng)
    skill = rng.uniform(0.65, 0.8, SUBJECTS)
    names = ["x", "y", "z"]
    counts = [counts_of(labels, skill, np.random.default_rng(7))] * 3  # the very same predictions
    r = ranking.rankings(counts, names, resamples=500)
    assert r["critical_difference"]["groups"] == [names]
    for x in r["runs"]:
        assert x["mean_rank"] == pytest.approx(2.0) and x["p_best"] == pytest.approx(1 / 3)
    assert all(v == pytest.approx(0.5) for row in r["p_better"] for v in row if v is not None)
    # similar (not identical) runs: rank intervals overlap, one group, nobody is surely best (the Friedman test
    # is calibrated, so 1 in 20 such draws rejects at 5 %: this draw is one of the others, p = 0.59)
    rng = np.random.default_rng(0)
    labels = labels_of(rng)
    skill = rng.uniform(0.65, 0.8, SUBJECTS)
    counts = [counts_of(labels, skill, rng) for _ in names]
    r = ranking.rankings(counts, names, resamples=500)
    assert r["critical_difference"]["groups"] == [r["critical_difference"]["order"]]
    assert max(x["p_best"] for x in r["runs"]) < 0.95
    lows, highs = zip(*(x["rank_ci95"] for x in r["runs"]))
    assert max(lows) <= min(highs)
    assert r["critical_difference"]["p_value"] > 0.5
    assert r["critical_difference"]["p_matrix"] is None  # no post-hoc test after a Friedman test that keeps H0
    assert "cannot be told apart (one group)" in r["critical_difference"]["note"]
    assert "not distinguishable from" in r["summary"]


def test_rope_equivalent_when_the_gap_is_below_it_better_when_above():
    rng = np.random.default_rng(3)
    base = rng.uniform(0.6, 0.8, 40)
    assert ranking.rope_compare(base + 0.003, base, rope=0.01)["verdict"] == "equivalent"
    small = ranking.rope_compare(base + 0.003, base, rope=0.01)
    assert small["p_equivalent"] > 0.95
    big = ranking.rope_compare(base + 0.03, base, rope=0.01)
    assert big["verdict"] == "A better" and big["p_a"] > 0.95
    assert ranking.rope_compare(base, base + 0.03, rope=0.01)["verdict"] == "B better"
    assert ranking.rope_compare(base + 0.03, base, rope=0.05)["verdict"] == "equivalent"
    with pytest.raises(UsageError):
        ranking.rope_from_points(0)
    assert ranking.rope_from_points(2) == pytest.approx(0.02)


def test_pairs_asked_for_are_compared_and_unknown_names_refused(clear):
    _, counts, names = clear
    r = ranking.rankings(counts, names, pairs=[("b", "c")], resamples=200)
    assert [(c["a"], c["b"]) for c in r["rope_comparisons"]] == [("good", r["second"]), ("b", "c")]
    with pytest.raises(UsageError, match="not ranked"):
        ranking.rankings(counts, names, pairs=[("good", "nope")], resamples=50)
    assert ranking.parse_pairs(["a, b"]) == [("a", "b")]
    with pytest.raises(UsageError):
        ranking.parse_pairs(["a"])


def test_cd_groups_by_hand():
    sig = np.zeros((4, 4), bool)
    sig[0, 2] = sig[2, 0] = sig[0, 3] = sig[3, 0] = sig[1, 3] = sig[3, 1] = True
    assert ranking.cd_groups([0, 1, 2, 3], sig) == [[0, 1], [1, 2], [2, 3]]
    assert ranking.cd_groups([0, 1, 2], np.zeros((3, 3), bool)) == [[0, 1, 2]]
    full = ~np.eye(3, dtype=bool)
    assert ranking.cd_groups([2, 0, 1], full) == [[2], [0], [1]]


def test_seeds_and_assignments_widen_the_rank_distribution():
    """Two runs tied on average whose seeds differ: a single seed ranks them surely, several seeds do not."""
    rng = np.random.default_rng(4)
    labels = labels_of(rng, 40)
    skill = rng.uniform(0.7, 0.75, 40)
    a_seeds = np.stack([counts_of(labels, skill + d, rng) for d in (0.04, -0.04, 0.0)])
    b_seeds = np.stack([counts_of(labels, skill, rng) for _ in range(3)])
    one = ranking.rank_uncertainty([a_seeds[0], b_seeds[0]], ["a", "b"], np.random.default_rng(0), 500)
    three = ranking.rank_uncertainty([a_seeds, b_seeds], ["a", "b"], np.random.default_rng(0), 500)
    assert one["runs"][0]["p_best"] > 0.99
    assert 0.1 < three["runs"][0]["p_best"] < 0.9
    # assignments: (A, S, C, K, 4); the same runs on two assignments where the order flips
    two = [np.stack([a_seeds[:1], a_seeds[1:2]]), np.stack([b_seeds[:1], b_seeds[1:2]])]
    flips = ranking.rank_uncertainty(two, ["a", "b"], np.random.default_rng(0), 500)
    assert 0.1 < flips["runs"][0]["p_best"] < 0.9


def test_caveats_name_few_subjects_and_seeds():
    rng = np.random.default_rng(5)
    labels = labels_of(rng, 8)
    skill = rng.uniform(0.6, 0.8, 8)
    r = ranking.rankings([counts_of(labels, skill, rng) for _ in range(3)], ["a", "b", "c"], resamples=200)
    text = " ".join(r["caveats"])
    assert "only 8 test subjects" in text and "one training seed" in text
    assert "Caveats:" in r["summary"]


def test_an_au_whose_positives_lie_in_one_subject_is_a_caveat():
    """As stats gives such an AU no interval (stats.single_holders), the rankings say their intervals miss it."""
    rng = np.random.default_rng(6)
    labels = labels_of(rng)
    skill = rng.uniform(0.6, 0.8, SUBJECTS)
    plain = ranking.rankings([counts_of(labels, skill, rng) for _ in range(3)], ["a", "b", "c"], resamples=200)
    assert plain["aus_in_one_subject"] == [] and "frame in one subject" not in " ".join(plain["caveats"])
    labels[1:, :, 2] = False  # AU 2's positives: subject 0's only
    r = ranking.rankings([counts_of(labels, skill, rng) for _ in range(3)], ["a", "b", "c"], resamples=200)
    assert r["aus_in_one_subject"] == [2]
    assert any("1 AU with every positive (or negative) frame in one subject" in c for c in r["caveats"])


def test_subjects_are_resampled_together_for_every_run():
    """A gain of 1 point on every subject, under a subject spread of 10 points: paired, it is certain; resampling
    each run's subjects on their own would drown it in the spread between subjects."""
    rng = np.random.default_rng(6)
    labels = labels_of(rng, 40)
    skill = rng.uniform(0.55, 0.95, 40)
    right = rng.random(labels.shape)  # the same draws for both: b is a with 1 point more per subject
    counts = []
    for gain in (0.0, 0.01):
        pred = np.where(right < (skill + gain)[:, None, None], labels, ~labels)
        counts.append(np.stack([(pred & labels).sum(1), labels.sum(1), (~pred & ~labels).sum(1), (~labels).sum(1)], -1))
    r = ranking.rank_uncertainty(counts, ["a", "b"], np.random.default_rng(0), 1000)
    assert r["runs"][1]["p_best"] > 0.99 and r["p_better"][1][0] > 0.99


def test_the_report_opens_with_the_summary_and_ends_with_the_rankings(clear):
    r, _, _ = clear
    result = {"ranking": ranking.public(r), "ranked": ["good", "a", "b", "c"], "left_out": {"d": "missing"},
              "aus": ["AU01"], "note": "", "noise_floor": None}
    from aubench_cli.studies import rankings as rankmod

    md = rankmod.into_report("# aubench report\n\n## Study\n\n| x |\n", "md", {"s": result})
    lines = md.split("\n")
    assert lines[0] == "# aubench report" and lines[2].startswith("**Summary.** s: Best: good")
    assert "Not ranked: d (missing)" in lines[2]
    assert md.index("## Study") < md.index("## Which run to choose") and "| good | " in md
    page = rankmod.into_report("<html><body><h1>aubench report</h1><p>x</p></body></html>", "html", {"s": result})
    assert page.index("<b>Summary.</b>") < page.index("<p>x</p>") < page.index("Which run to choose") < page.index("</body>")
    tex = rankmod.into_report("% first line\n\\begin{table}", "tex", {"s": result})
    assert tex.split("\n")[1].startswith("% Summary: s: Best: good") and "\\caption{s: rankings" in tex
    assert rankmod.into_report("a,b\n", "csv", {"s": result}) == "a,b\n"
    rows = rankmod.render_csv({"s": result}).splitlines()
    assert rows[1].startswith("s,good,") and len(rows) == 5


def test_an_au_without_positives_leaves_no_resample_and_nothing_breaks(tmp_path):
    """Every resample degenerate (an AU with no positive frame at all): no ranks, said, and the report's
    sections and figures still render."""
    rng = np.random.default_rng(8)
    labels = labels_of(rng, 12)
    labels[..., 0] = False
    counts = [counts_of(labels, rng.uniform(0.6, 0.8, 12), rng) for _ in range(3)]
    r = ranking.rankings(counts, ["a", "b", "c"], resamples=100)
    assert r["resamples"] == 0 and r["degenerate"] == 100 and all(x["mean_rank"] is None for x in r["runs"])
    assert "100 resamples left out" in r["summary"]
    from aubench_cli.studies import rankfig, rankings as rankmod

    result = {"ranking": ranking.public(r), "ranked": ["a", "b", "c"], "left_out": {}, "aus": ["AU01"], "note": ""}
    assert "| a | - | - | - |" in rankmod.into_report("# r\n", "md", {"s": result})
    assert rankmod.render_csv({"s": result}).count("\n") == 4
    assert rankfig.rank_figure("s", result, tmp_path / "r.png") is None


def test_one_test_subject_one_seed_one_split_is_ranked_on_the_data_with_no_uncertainty():
    """With one unit of everything every resample is the data itself: P(best) would be 1 and the rank interval a
    point by construction (the report said "best in 100 % of 2000 resamples" of one subject). The order on the data
    is kept; the intervals, P(best) and P(better) are absent, and the summary says the study shows no run better."""
    rng = np.random.default_rng(3)
    labels = labels_of(rng, subjects=1)
    names = ["low", "high", "mid"]
    counts = [counts_of(labels, np.array([acc]), rng) for acc in (0.6, 0.9, 0.75)]
    r = ranking.rankings(counts, names, resamples=200)
    assert r["resampled"] is False and r["resamples"] == 0 and r["degenerate"] == 0
    by = {x["run"]: x for x in r["runs"]}
    assert [by[n]["mean_rank"] for n in ("high", "mid", "low")] == [1.0, 2.0, 3.0] and r["best"] == "high"
    assert all(x["rank_ci95"] is None and x["p_best"] is None for x in r["runs"])
    assert all(v is None for row in r["p_better"] for v in row)
    assert r["lead"]["value"] == pytest.approx(by["high"]["value"] - by["mid"]["value"]) and r["lead"]["ci95"] is None
    assert r["summary"].startswith("Highest: high, ") and "no run is shown better than another" in r["summary"]
    assert "--folds" in r["summary"] and "resamples" not in r["summary"]
    assert not any("resampling so few" in c for c in r["caveats"])
    # a second training seed is something to resample: the usual answer, with its caveat on few subjects
    seeded = [np.stack([c, counts_of(labels, np.array([acc]), rng)]) for c, acc in zip(counts, (0.6, 0.9, 0.75))]
    r2 = ranking.rankings([s[None] for s in seeded], names, resamples=200)
    assert r2["resampled"] is True and r2["resamples"] > 0 and r2["summary"].startswith("Best: ")
    assert all(x["rank_ci95"] is not None for x in r2["runs"])


def test_the_report_says_no_resampling_and_draws_no_rank_figure(tmp_path):
    from aubench_cli.studies import rankings as study_rankings
    from aubench_cli.studies.rankfig import rank_figure

    rng = np.random.default_rng(4)
    labels = labels_of(rng, subjects=1)
    names = ["a", "b", "c"]
    r = ranking.public(ranking.rankings([counts_of(labels, np.array([acc]), rng) for acc in (0.6, 0.9, 0.75)], names))
    result = {"ranking": r, "ranked": names, "aus": list(range(AUS)), "left_out": {}, "note": ""}
    text = "\n".join(study_rankings.markdown_section("s", result, []))
    assert "no resampling (1 test subject, one training seed, one test split" in text
    assert "P(row better than column)" not in text  # every cell would be blank
    assert "(3 runs, 1 subject)" in text
    assert rank_figure("s", result, tmp_path / "ranks.png") is None and not (tmp_path / "ranks.png").exists()


def test_the_rope_is_said_in_points_with_the_right_number(clear):
    r, _, _ = clear
    assert "P(equivalent within 1 point)" in r["summary"]  # the default ROPE, 0.01: not '1 points'
    assert [ranking.rope_points(x) for x in (0.01, 0.005, 0.02)] == ["1 point", "0.5 points", "2 points"]
