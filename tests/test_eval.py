"""Evaluation: metrics against hand computations, per-AU batches shared across runs, the structured digest,
paired comparisons on shared AUs, refusals that name what differs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.data.cache import cache_identity, open_cache
from aubench_cli.errors import UsageError
from aubench_cli.evaluation.evaluate import compare, draw_test_batches, evaluate_run, natural_metrics, public
from aubench_cli.training.trainer import load_checkpoint, save_checkpoint, train
from cachefixture import AUS, make_cache, relabel_cache

runner = CliRunner()
# 8 subjects: one for validation, three for the test (so a paired test over subjects cannot reach p < 0.05)
SPLITS = {"S00": "val", "S01": "test", "S02": "test", "S03": "test", **{f"S0{i}": "train" for i in range(4, 8)}}


def test_natural_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7])
    labels = np.array([1, 1, 1, 0, 0, 0, -1])
    m = natural_metrics(scores, labels)
    # predictions at 0.5 over the 6 known: TP=2, FN=1, FP=1 -> F1 = 2*2 / (2*2 + 1 + 1)
    assert m["f1"] == pytest.approx(4 / 6)
    # AUC: of the 9 positive-negative pairs, the positive scores higher in 8
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["positive_rate"] == pytest.approx(0.5) and m["frames"] == 6
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    for rate in (0.0, 0.05, 0.5):  # no positive at all, few, half
        labels = np.where(rng.random(300) < 0.1, -1, (rng.random(300) < rate).astype(int))
        scores = rng.random(300) * rng.choice([0.4, 1.0])  # sometimes nothing predicted positive
        known = labels >= 0
        assert natural_metrics(scores, labels)["f1"] == pytest.approx(
            f1_score(labels[known], scores[known] > 0.5, zero_division=0))


def test_an_aus_batches_depend_only_on_that_au(tmp_path):
    cache = open_cache(make_cache(tmp_path / "c", subjects=4, videos_per_subject=1, frames=30))
    index = cache.indices("train")
    au01 = draw_test_batches(cache.labels[:, 0], index, "AU01", 0, 50)
    # the same column drawn with any other columns around it, in any order: the same frames
    assert np.array_equal(au01, draw_test_batches(np.ascontiguousarray(cache.labels[:, [3, 0]])[:, 1], index,
                                                  "AU01", 0, 50))
    assert au01.shape == (50, 8)
    assert (cache.labels[au01[:, :4], 0] == 1).all() and (cache.labels[au01[:, 4:], 0] == 0).all()
    assert np.isin(au01, index).all()
    assert not np.array_equal(au01, draw_test_batches(cache.labels[:, 0], index, "AU01", 1, 50))
    assert not np.array_equal(au01, draw_test_batches(cache.labels[:, 0], index, "AU02", 0, 50))


def test_cache_identity_is_content_not_path(tmp_path):
    a = make_cache(tmp_path / "a", subjects=3, videos_per_subject=1, frames=12, seed=0)
    b = make_cache(tmp_path / "b", subjects=3, videos_per_subject=1, frames=12, seed=1)  # same layout, other frames
    assert open_cache(a).labels.shape == open_cache(b).labels.shape
    assert cache_identity(a) != cache_identity(b)
    moved = tmp_path / "moved"
    shutil.copytree(a, moved)
    assert cache_identity(moved) == cache_identity(a) == cache_identity(open_cache(a))
    # the identity is of the content the header lists (per-video checksums, test_cache.py): a cache with the same
    # layout whose images alone differ gets another identity
    c = make_cache(tmp_path / "c", subjects=3, videos_per_subject=1, frames=12, seed=0, rates=None)
    assert cache_identity(c) == cache_identity(a)  # same seed: same frames


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cache = make_cache(root / "cache", subjects=8, splits=SPLITS)
    out = []
    for name, arch, epochs in (("a", "baseline", 3), ("b", "emonets", 1)):
        cfg = cfgmod.resolve(sets=[f"train.epochs={epochs}", "train.batches_per_epoch=8", "train.val_batches=2",
                                   "train.aug=A"], options={"data.cache": str(cache), "model.arch": arch})
        train(cfg, root / name)
        out.append(root / name)
    return cache, out


def _drop_au(run, out, au):
    """A copy of ``run`` that predicts every AU but ``au``: its classifier's rows for the others, unchanged."""
    shutil.copytree(run, out)
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(out / name)
        k = state["au_names"].index(au)
        keep = [i for i in range(len(state["au_names"])) if i != k]
        n = len(state["au_names"])
        for key in list(state["model"])[-2:]:  # the last layer's weight and bias
            assert state["model"][key].shape[0] == n
            state["model"][key] = state["model"][key][keep].clone()
        state["au_names"] = [a for a in state["au_names"] if a != au]
        save_checkpoint(out / name, state)
    return out


def test_eval_writes_results_and_accuracy_is_consistent(runs):
    cache, (a, _) = runs
    result = evaluate_run(a, batches=50)
    assert (a / "eval.json").is_file() and (a / "eval.csv").is_file()
    saved = json.loads((a / "eval.json").read_text())
    assert saved["mean_accuracy"] == pytest.approx(result["mean_accuracy"])
    data = open_cache(cache)
    index = data.indices("test")
    pred, labels = result["_pred"], data.labels[index]
    for k, (au, m) in enumerate(saved["per_au"].items()):
        assert m["n"] == 50 * 8  # 4 + 4 frames of each AU per batch
        # the balanced accuracy by hand, over every labelled frame of the split
        pos, neg = labels[:, k] == 1, labels[:, k] == 0
        by_hand = 0.5 * (pred[pos, k].mean() + (~pred[neg, k]).mean())
        assert m["balanced_accuracy"] == pytest.approx(by_hand)
        assert m["ci95"][0] - 1e-9 <= m["balanced_accuracy"] <= m["ci95"][1] + 1e-9
        # the paper's figure, from the AU's own batches
        drawn = draw_test_batches(data.labels[:, data.au_names.index(au)], index, au, 0, 50)
        position = {f: i for i, f in enumerate(index)}
        rows = np.vectorize(position.get)(drawn)
        truth = np.r_[np.ones(4, bool), np.zeros(4, bool)]
        assert m["accuracy"] == pytest.approx((pred[rows, k] == truth).mean())
    assert saved["balanced_accuracy"] == pytest.approx(np.mean([m["balanced_accuracy"] for m in saved["per_au"].values()]))
    assert saved["mean_accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in saved["per_au"].values()]))
    assert saved["mean_accuracy"] > 0.7  # the fixture is learnable in a few dozen steps
    # three test subjects: the jackknife over subjects, said so
    assert (saved["ci_unit"], saved["ci_method"], saved["ci_units"]) == ("subject", "jackknife-t", 3)
    assert "jackknife" in saved["ci_note"]
    assert np.array(saved["subject_counts"]["counts"]).shape == (3, len(AUS), 4)
    assert (a / "eval.csv").read_text().splitlines()[0].startswith("au,accuracy,balanced_accuracy,ci95_low")


def test_digest_and_shared_frames(runs, tmp_path):
    cache, (a, b) = runs
    ra, rb = evaluate_run(a, batches=20, write=False), evaluate_run(b, batches=20, write=False)
    assert ra["digest"] == rb["digest"] and ra["batch_digest"] == rb["batch_digest"]
    assert set(ra["digest"]) == {"cache", "split_map", "split", "seed", "batches", "per_au"}
    assert ra["digest"]["cache"] == cache_identity(cache)
    other_seed = evaluate_run(a, batches=20, seed=1, write=False)
    assert other_seed["digest"]["seed"] == 1 and other_seed["digest"]["per_au"] != ra["digest"]["per_au"]
    with pytest.raises(UsageError, match="seed"):
        compare([ra, other_seed])
    # a cache with the same layout but other frames: refused, naming the cache's content
    other = make_cache(tmp_path / "other", subjects=8, splits=SPLITS, seed=5)
    rc = evaluate_run(a, cache=other, batches=20, write=False)
    with pytest.raises(UsageError, match="cache content"):
        compare([ra, rc])


def test_runs_with_different_au_lists_compare_on_shared_aus(runs, tmp_path):
    _, (a, _) = runs
    fewer = _drop_au(a, tmp_path / "a-no-au04", "AU04")
    full, part = evaluate_run(a, batches=30, write=False), evaluate_run(fewer, batches=30, write=False)
    assert list(part["per_au"]) == [au for au in AUS if au != "AU04"]
    for au in part["per_au"]:  # the same AU, the same frames and the same network rows: the same figures
        assert part["digest"]["per_au"][au] == full["digest"]["per_au"][au]
        assert part["per_au"][au]["accuracy"] == full["per_au"][au]["accuracy"]
    (pair,) = compare([full, part])
    assert pair["compared_aus"] == list(part["per_au"]) and list(pair["not_compared"]) == ["AU04"]
    assert "only a" in pair["not_compared"]["AU04"]
    assert pair["balanced_accuracy_diff"] == pytest.approx(0) and pair["mean_accuracy_diff"] == pytest.approx(0)
    assert pair["overall"]["p_value"] == 1.0 and all(t["p_value"] == 1.0 for t in pair["per_au"].values())


def test_comparison_with_itself_and_with_another(runs):
    _, (a, b) = runs
    ra, rb = evaluate_run(a, batches=30, write=False), evaluate_run(b, batches=30, write=False)
    (same,) = compare([ra, ra])
    assert same["balanced_accuracy_diff"] == 0 and same["overall"]["p_value"] == 1.0
    (pair,) = compare([ra, rb])
    assert pair["balanced_accuracy_diff"] == pytest.approx(ra["balanced_accuracy"] - rb["balanced_accuracy"])
    # three subjects: 8 sign patterns, the smallest two-sided p is 2/8, and the tool says nothing can be significant
    assert pair["permutation"] == "exact" and pair["permutations"] == 8 and pair["min_p_value"] == 0.25
    assert not pair["can_be_significant"] and "no difference can be significant" in pair["note"]
    assert pair["overall"]["p_value"] >= 0.25 and not pair["overall"]["significant"]
    assert all(not t["significant"] and t["p_holm"] >= t["p_value"] for t in pair["per_au"].values())


def test_multi_run_comparison_through_the_cli(runs):
    _, (a, b) = runs
    result = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["arch"] for r in data["runs"]] == ["baseline", "emonets"]
    (pair,) = data["comparisons"]
    assert 0 <= pair["overall"]["p_value"] <= 1 and set(pair["per_au"]) == set(data["runs"][0]["per_au"])
    assert pair["mean_accuracy_diff"] == pytest.approx(data["runs"][0]["mean_accuracy"] - data["runs"][1]["mean_accuracy"])
    for key in ("balanced_accuracy_diff", "balanced_accuracy_diff_ci95", "half_width", "min_detectable_diff"):
        assert key in pair
    table = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40"])
    assert table.exit_code == 0 and "permutation" in table.stdout and "AVG" in table.stdout
    assert "no difference can be significant" in table.stdout


def test_ci_unit_option(runs):
    _, (a, _) = runs
    by = {}
    for unit in ("subject", "video", "frame"):
        result = runner.invoke(app, ["eval", str(a), "--batches", "10", "--json", "--ci-unit", unit])
        assert result.exit_code == 0, result.output
        by[unit] = json.loads(result.stdout)
        assert by[unit]["ci_unit"] == unit
    assert (by["subject"]["ci_units"], by["video"]["ci_units"], by["frame"]["ci_units"]) == (3, 6, 240)
    assert by["frame"]["ci_method"] == "bootstrap-percentile" and by["video"]["ci_method"] == "jackknife-t"
    bad = runner.invoke(app, ["eval", str(a), "--ci-unit", "person"])
    assert bad.exit_code == 2 and "subject" in bad.output


def test_single_run_json_schema_and_table(runs):
    _, (a, _) = runs
    result = runner.invoke(app, ["eval", str(a), "--batches", "10", "--json"])
    data = json.loads(result.stdout)
    assert isinstance(data["mean_accuracy"], float) and isinstance(data["balanced_accuracy"], float)
    for m in data["per_au"].values():
        assert set(m) >= {"accuracy", "balanced_accuracy", "ci95", "f1", "auc"} and len(m["ci95"]) == 2
    table = runner.invoke(app, ["eval", str(a), "--batches", "10"])
    shown = " ".join(table.stdout.split())
    assert table.exit_code == 0 and "balanced accuracy over subjects: 3 subjects" in shown and "jackknife" in shown


def test_cross_dataset_eval_tests_the_shared_aus_with_the_right_outputs(runs, tmp_path):
    cache, (a, _) = runs
    own = evaluate_run(a, batches=30, write=False)
    # another dataset: other people, AUs in another order, two of the run's missing and one it does not predict
    other = relabel_cache(cache, tmp_path / "other", ["AU12", "AU25", "AU04", "AU01"], prefix="X")
    foreign = evaluate_run(a, cache=other, batches=30, write=False)
    assert list(foreign["per_au"]) == ["AU01", "AU04", "AU12"]  # the run's order, shared AUs only
    assert foreign["aus_missing"] == ["AU02", "AU06"] and foreign["aus_unpredicted"] == ["AU25"]
    for au, m in foreign["per_au"].items():  # the same frames and labels: the network's own column for each AU
        for key in ("accuracy", "balanced_accuracy", "f1", "auc"):
            assert m[key] == own["per_au"][au][key], (au, key)
        assert foreign["digest"]["per_au"][au] == own["digest"]["per_au"][au]
    assert foreign["subject_counts"]["au_names"] == ["AU01", "AU04", "AU12"]
    result = runner.invoke(app, ["eval", str(a), "--cache", str(other), "--batches", "10"])
    shown = " ".join(result.stdout.split())
    assert result.exit_code == 0, result.output
    assert "not tested (the cache has no labels for them): AU02, AU06" in shown and "AU25" in shown
    as_json = json.loads(runner.invoke(app, ["eval", str(a), "--cache", str(other), "--batches", "10",
                                             "--json"]).stdout)
    assert as_json["aus_missing"] == ["AU02", "AU06"] and list(as_json["per_au"]) == ["AU01", "AU04", "AU12"]


def test_a_cache_sharing_no_au_is_refused(runs, tmp_path):
    cache, (a, _) = runs
    other = relabel_cache(cache, tmp_path / "none", ["AU25", "AU26"], prefix="X")
    result = runner.invoke(app, ["eval", str(a), "--cache", str(other)])
    assert result.exit_code == 2 and "shares no AU" in result.stderr and "AU25" in result.stderr
    with pytest.raises(UsageError):
        evaluate_run(tmp_path / "no-run")
    assert public({"a": 1, "_pred": 2}) == {"a": 1}


def test_split_all_tests_a_foreign_cache_and_refuses_the_runs_own(runs, tmp_path):
    cache, (a, _) = runs
    refused = runner.invoke(app, ["eval", str(a), "--split", "all"])
    assert refused.exit_code == 2 and "trained" in refused.stderr
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)  # the same content elsewhere: refused by identity
    with pytest.raises(UsageError, match="split all"):
        evaluate_run(a, cache=copy, split="all", write=False)
    same_people = relabel_cache(cache, tmp_path / "same", AUS[::-1])  # other content, the run's own people
    with pytest.raises(UsageError, match="trained or validated on"):
        evaluate_run(a, cache=same_people, split="all", write=False)
    other = relabel_cache(cache, tmp_path / "other", AUS, prefix="X")
    whole = evaluate_run(a, cache=other, split="all", batches=20, write=False)
    assert whole["frames_in_split"] == len(open_cache(other).labels)
    assert whole["subject_counts"]["subjects"] == [f"XS0{i}" for i in range(8)]


def test_folds_pooled_from_real_evaluations_equal_one_evaluation_of_every_frame(runs, tmp_path):
    """Three disjoint subject sets of another dataset's cache (its train, val and test splits) laid out as the
    folds of a study: the literature report's pooled F1 and balanced accuracy are those of one evaluation of
    every frame (--split all), which F1 over the concatenated predictions is."""
    from aubench_cli.studies import literature
    from aubench_cli.studies.study import parse_study, write_study_file

    cache, (a, _) = runs
    other = relabel_cache(cache, tmp_path / "other", AUS, prefix="X")
    whole = evaluate_run(a, cache=other, split="all", batches=20, write=False)
    study = tmp_path / "study"
    write_study_file(parse_study({"name": "x", "runs": [{"name": "a"}]}, "x", tmp_path / "x.yaml"), study, [], None)
    folds = []
    for i, split in enumerate(("train", "val", "test")):
        fold = evaluate_run(a, cache=other, split=split, batches=20, write=False)
        folds.append(fold)
        shutil.copytree(a, study / "a" / f"fold{i}", ignore=shutil.ignore_patterns("eval.*"))
        (study / "a" / f"fold{i}" / "eval.json").write_text(json.dumps(
            {**public(fold), "fold": i, "folds": 3, "subjects": fold["subject_counts"]["subjects"]}))
    (row,) = literature.read(study)[0].rows
    assert row.state == "done" and row.subjects == 8
    for au in AUS:
        assert row.cells["f1"][au].pooled == pytest.approx(whole["per_au"][au]["f1"]), au
        assert row.cells["balanced_accuracy"][au].pooled == pytest.approx(whole["per_au"][au]["balanced_accuracy"])
        assert row.cells["f1"][au].mean == pytest.approx(np.mean([f["per_au"][au]["f1"] for f in folds]))
    assert row.cells["f1"]["Avg."].pooled == pytest.approx(whole["mean_f1"])


def test_multi_run_rankings_in_json_and_table(runs):
    _, (a, b) = runs
    result = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40", "--json", "--rope", "2",
                                 "--pair", "b,a"])
    assert result.exit_code == 0, result.output
    ranked = json.loads(result.stdout)["rankings"]
    assert {x["run"] for x in ranked["runs"]} == {"a", "b"} and ranked["rope"] == pytest.approx(0.02)
    assert sum(x["p_best"] for x in ranked["runs"]) == pytest.approx(1.0)
    assert ranked["subjects"] == len(json.loads(result.stdout)["runs"][0]["subjects"])
    assert [(c["a"], c["b"]) for c in ranked["rope_comparisons"]][1:] == [("b", "a")]
    c = ranked["rope_comparisons"][0]
    assert c["p_a"] + c["p_equivalent"] + c["p_b"] == pytest.approx(1.0)
    assert ranked["summary"].startswith(f"Best: {ranked['best']}")
    table = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40"])
    assert table.exit_code == 0 and "Rankings on mean balanced accuracy" in table.stdout
    assert "summary: Best:" in table.stdout
    bad = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40", "--rope", "-1"])
    assert bad.exit_code == 2 and "--rope must be a positive" in bad.stderr


def test_inference_precision_is_fp32_unless_bf16_is_asked():
    import torch

    from aubench_cli.device import autocast_dtype, inference_precision

    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") == torch.bfloat16
    with pytest.raises(UsageError) as info:
        autocast_dtype("fp16")
    assert "fp32" in info.value.hint
    with torch.autocast("cpu", dtype=torch.bfloat16), inference_precision("cpu"):  # fp32 even inside autocast
        assert not torch.is_autocast_enabled("cpu")
    with inference_precision(torch.device("cpu"), "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    # CUDA: TF32 off for convolutions and matrix products inside, restored after (the flags need no GPU)
    conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        flags = [(conv, "fp32_precision", "ieee", "tf32"),
                 (torch.backends.cuda.matmul, "fp32_precision", "ieee", "tf32")]
    else:
        flags = [(torch.backends.cudnn, "allow_tf32", False, True),
                 (torch.backends.cuda.matmul, "allow_tf32", False, True)]
    saved = [getattr(owner, name) for owner, name, _, _ in flags]  # torch's flag objects defeat monkeypatch
    try:
        for owner, name, _, tf32 in flags:
            setattr(owner, name, tf32)
        with inference_precision(torch.device("cuda", 0), "fp32"):
            assert [getattr(owner, name) for owner, name, _, _ in flags] == [ieee for _, _, ieee, _ in flags]
        assert [getattr(owner, name) for owner, name, _, _ in flags] == [tf32 for _, _, _, tf32 in flags]
    finally:
        for (owner, name, _, _), value in zip(flags, saved):
            setattr(owner, name, value)


def test_eval_runs_in_fp32_by_default_and_in_bf16_when_asked(runs, monkeypatch):
    import torch

    from aubench_cli.evaluation import evaluate as evalmod
    from aubench_cli.training.inference import load_run_model, score_frames

    cache, (a, _) = runs
    seen = []  # the split's scores, as natural_metrics gets them (AU by AU)
    monkeypatch.setattr(evalmod, "natural_metrics", lambda s, y, _f=natural_metrics: seen.append(s) or _f(s, y))
    fp32 = evaluate_run(a, batches=10, write=False)
    bf16 = evaluate_run(a, batches=10, write=False, precision="bf16")
    scores = {"fp32": np.stack(seen[:len(AUS)], 1), "bf16": np.stack(seen[len(AUS):], 1)}
    assert (fp32["precision"], bf16["precision"], fp32["device"]) == ("fp32", "bf16", "cpu")
    data = open_cache(cache)
    index = data.indices("test")
    exact = score_frames(load_run_model(a / "best.pt"), data.images, index)  # float32, as predict scores
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.inference_mode():
        run = load_run_model(a / "best.pt")
        from aubench_cli.training.transforms import normalize, to_float

        x = normalize(to_float(torch.from_numpy(data.images[index])), run.norm, run.stats)
        rounded = torch.sigmoid(run.model(x.contiguous(memory_format=torch.channels_last)).float()).numpy()
    np.testing.assert_allclose(scores["fp32"], exact, rtol=0, atol=1e-6)
    np.testing.assert_allclose(scores["bf16"], rounded, rtol=0, atol=1e-6)
    assert np.abs(rounded - exact).max() > 1e-4  # what bf16 changes: the scores themselves
    assert np.array_equal(fp32["_pred"], exact > 0.5)
    labels = data.labels[index]
    for k, au in enumerate(AUS):
        for result, scored in ((fp32, exact), (bf16, rounded)):
            assert result["per_au"][au]["auc"] == pytest.approx(natural_metrics(scored[:, k], labels[:, k])["auc"],
                                                                abs=1e-12)
    assert len(np.unique(rounded)) < len(np.unique(exact))  # bf16 logits: fewer distinct scores (ties)
    shown = runner.invoke(app, ["eval", str(a), "--batches", "5", "--json", "--precision", "bf16"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["precision"] == "bf16"
    shown = runner.invoke(app, ["eval", str(a), "--batches", "5", "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["precision"] == "fp32"


def test_predict_scores_in_fp32_whatever_the_surrounding_precision(runs):
    import torch

    from aubench_cli.training.inference import load_run_model, score_crops

    cache, (a, _) = runs
    crops = open_cache(cache).images[:64]
    run = load_run_model(a / "best.pt")
    plain = score_crops(run, crops)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside a bf16 training step or evaluation
        inside = score_crops(run, crops)
    assert plain.dtype == np.float32 and np.array_equal(plain, inside)


@pytest.mark.parametrize("option, value, says", [("--batches", "0", "--batches must be at least 1, got 0"),
                                                 ("--seed", "-1", "--seed must be 0 or more, got -1")])
def test_bad_counts_are_one_line_and_exit_2(runs, option, value, says):
    _, (a, _) = runs
    result = runner.invoke(app, ["eval", str(a), option, value])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and says in result.stderr, result.output
    assert "Traceback" not in result.output
