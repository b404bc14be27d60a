"""Evaluation: metrics against hand computations, shared batches across runs, comparisons, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.errors import UsageError
from aubench_cli.evaluation.evaluate import evaluate_run, mcnemar, natural_metrics, wilson
from aubench_cli.training.trainer import train
from cachefixture import make_cache

runner = CliRunner()


def test_wilson_interval_by_hand():
    lo, hi = wilson(80, 100)
    p, n, z = 0.8, 100, 1.959963984540054
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((centre - half, centre + half))
    assert wilson(0, 10)[0] == pytest.approx(0.0, abs=1e-12) and wilson(10, 10)[1] == pytest.approx(1.0)
    assert wilson(2400, 3000)[1] - wilson(2400, 3000)[0] < wilson(80, 100)[1] - wilson(80, 100)[0]


def test_mcnemar_counts_discordant_pairs():
    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    t = mcnemar(a, b)
    assert (t["a_only"], t["b_only"]) == (5, 1)
    assert t["p_value"] == pytest.approx(2 * (1 + 6) / 2**6)  # exact two-sided binomial, 1 of 6 discordant
    assert mcnemar(a, a)["p_value"] == 1.0


def test_natural_metrics_by_hand():
    scores = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7])
    labels = np.array([1, 1, 1, 0, 0, 0, -1])
    m = natural_metrics(scores, labels)
    # predictions at 0.5 over the 6 known: TP=2, FN=1, FP=1 -> F1 = 2*2 / (2*2 + 1 + 1)
    assert m["f1"] == pytest.approx(4 / 6)
    # AUC: of the 9 positive-negative pairs, the positive scores higher in 8
    assert m["auc"] == pytest.approx(8 / 9)
    assert m["positive_rate"] == pytest.approx(0.5) and m["frames"] == 6


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    cache = make_cache(root / "cache")
    out = []
    for name, arch, epochs in (("a", "baseline", 3), ("b", "emonets", 1)):
        cfg = cfgmod.resolve(sets=[f"train.epochs={epochs}", "train.batches_per_epoch=8", "train.val_batches=2",
                                   "train.aug=A"], options={"data.cache": str(cache), "model.arch": arch})
        train(cfg, root / name)
        out.append(root / name)
    return cache, out


def test_eval_writes_results_and_accuracy_is_consistent(runs):
    cache, (a, _) = runs
    result = evaluate_run(a, batches=50)
    assert (a / "eval.json").is_file() and (a / "eval.csv").is_file()
    saved = json.loads((a / "eval.json").read_text())
    assert saved["mean_accuracy"] == pytest.approx(result["mean_accuracy"])
    for au, m in saved["per_au"].items():
        assert m["n"] == 50 * 8  # 4 + 4 frames of each AU per batch
        assert m["ci95"][0] - 1e-9 <= m["accuracy"] <= m["ci95"][1] + 1e-9
        assert m["accuracy"] == pytest.approx(result["_decisions"][au].mean())
    assert saved["mean_accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in saved["per_au"].values()]))
    assert saved["mean_accuracy"] > 0.7  # the fixture is learnable in a few dozen steps
    assert (a / "eval.csv").read_text().splitlines()[0].startswith("au,accuracy,ci95_low")


def test_same_seed_same_frames_for_every_run(runs):
    _, (a, b) = runs
    ra, rb = evaluate_run(a, batches=20, write=False), evaluate_run(b, batches=20, write=False)
    assert ra["batch_digest"] == rb["batch_digest"]
    assert evaluate_run(a, batches=20, seed=1, write=False)["batch_digest"] != ra["batch_digest"]


def test_multi_run_comparison_through_the_cli(runs):
    _, (a, b) = runs
    result = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["arch"] for r in data["runs"]] == ["baseline", "emonets"]
    (pair,) = data["comparisons"]
    assert 0 <= pair["overall"]["p_value"] <= 1 and set(pair["per_au"]) == set(data["runs"][0]["per_au"])
    assert pair["mean_accuracy_diff"] == pytest.approx(data["runs"][0]["mean_accuracy"] - data["runs"][1]["mean_accuracy"])
    table = runner.invoke(app, ["eval", str(a), str(b), "--batches", "40"])
    assert table.exit_code == 0 and "McNemar" in table.stdout and "AVG" in table.stdout


def test_single_run_json_schema(runs):
    _, (a, _) = runs
    result = runner.invoke(app, ["eval", str(a), "--batches", "10", "--json"])
    data = json.loads(result.stdout)
    assert isinstance(data["mean_accuracy"], float)
    for m in data["per_au"].values():
        assert set(m) >= {"accuracy", "ci95", "f1", "auc"} and len(m["ci95"]) == 2


def test_mismatched_cache_is_refused(runs, tmp_path):
    _, (a, _) = runs
    other = make_cache(tmp_path / "other", aus=["AU01", "AU02", "AU04", "AU06", "AU25"])
    result = runner.invoke(app, ["eval", str(a), "--cache", str(other)])
    assert result.exit_code == 2 and "AU12" in result.stderr
    with pytest.raises(UsageError):
        evaluate_run(tmp_path / "no-run")
