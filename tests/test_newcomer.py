"""A newcomer's first steps at their defaults (issue 22, item 1): ``aubench synth ds --subjects 6``, ``aubench
preprocess ds``, ``aubench train``, ``aubench eval``. Seed 0 leaves the validation and test splits of these six
subjects empty; preprocess must choose a seed that fills them, record it and say so, and train and eval must run.
Training is shortened with the CLI's own options; the split and everything else stay at their defaults."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.data.splits import split_subjects


@pytest.mark.slow
def test_synth_preprocess_train_eval_at_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["synth", "ds", "--subjects", "6", "--frames", "40"])
    assert made.exit_code == 0, made.output

    prep = runner.invoke(app, ["preprocess", "ds", "--workers", "1", "--json"])
    assert prep.exit_code == 0, prep.output
    summary = json.loads(prep.stdout)
    names = [f"s{i:02d}" for i in range(1, 7)]
    assert set(split_subjects(names, seed=0).values()) != {"train", "val", "test"}  # what made train refuse
    assert summary["split_seed"]["from"] == "closest-filling" and summary["split_seed"]["seed"] > 0
    assert all(summary["splits"][s]["subjects"] >= 1 for s in ("train", "val", "test"))
    assert any(f"split seed {summary['split_seed']['seed']}" in n for n in summary["notes"])
    header = json.loads((tmp_path / "aubench-cache" / "cache.json").read_text())
    assert header["splits"]["seed"] == summary["split_seed"]["seed"]
    assert header["splits"]["seed_from"] == "closest-filling"

    train = runner.invoke(app, ["train", "--epochs", "1", "--batches-per-epoch", "2", "--val-batches", "1",
                                "--out", "runs/first"])
    assert train.exit_code == 0, train.output
    evaluated = runner.invoke(app, ["eval", "runs/first", "--batches", "5", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    result = json.loads(evaluated.stdout)
    assert result["split"] == "test" and result["subjects"] and 0 <= result["mean_accuracy"] <= 1

    # a rerun keeps the recorded seed; an explicit --split-seed is obeyed as given, even one that empties val
    again = runner.invoke(app, ["preprocess", "ds", "--workers", "1", "--json"])
    assert json.loads(again.stdout)["split_seed"] == {"seed": summary["split_seed"]["seed"], "from": "recorded"}
    given = runner.invoke(app, ["preprocess", "ds", "--workers", "1", "--split-seed", "0", "--json"])
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["split_seed"] == {"seed": 0, "from": "given"}
    refused = runner.invoke(app, ["train", "--epochs", "1", "--batches-per-epoch", "2", "--val-batches", "1",
                                  "--out", "runs/second"])
    assert refused.exit_code == 2
    for fix in ("--split-seed", "split column", "--folds"):
        assert fix in refused.stderr, (fix, refused.stderr)
    tested = runner.invoke(app, ["eval", "runs/first", "--batches", "5"])
    assert tested.exit_code == 2 and "--split-seed" in tested.stderr and "--folds" in tested.stderr


@pytest.mark.slow
def test_a_tiny_set_trains_and_evaluates_at_defaults(tmp_path, monkeypatch):
    """6 subjects of 30 frames: the split chosen by subjects alone left AU06 without a positive frame in val, and
    train refused; preprocess now also asks every split to hold both kinds of frame of every AU."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    made = runner.invoke(app, ["synth", "ds", "--subjects", "6", "--videos-per-subject", "1", "--frames", "30",
                               "--size", "320x240"])
    assert made.exit_code == 0, made.output
    prep = runner.invoke(app, ["preprocess", "ds", "--out", "cache", "--workers", "1", "--json"])
    assert prep.exit_code == 0, prep.output
    assert json.loads(prep.stdout)["split_seed"]["from"] == "closest-balancing"
    trained = runner.invoke(app, ["train", "--cache", "cache", "--epochs", "1", "--batches-per-epoch", "2",
                                  "--val-batches", "1", "--out", "run"])
    assert trained.exit_code == 0, trained.output
    evaluated = runner.invoke(app, ["eval", "run", "--cache", "cache", "--batches", "20"])
    assert evaluated.exit_code == 0, evaluated.output
