"""`aubench demo` end to end at reduced size: every stage runs, results land where it says, JSON as eval's."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aubench_cli.cli import app


@pytest.mark.slow
def test_demo_end_to_end_at_reduced_size(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--subjects", "5", "--frames", "40", "--epochs", "1",
            "--batches-per-epoch", "2", "--eval-batches", "20"]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.stdout)
    assert 0 <= evaluation["mean_accuracy"] <= 1
    assert len(evaluation["per_au"]) == 12
    for m in evaluation["per_au"].values():
        assert {"accuracy", "ci95", "f1", "auc"} <= set(m)
    run = out / "runs" / "baseline"
    for name in ("best.pt", "metrics.csv", "eval.json", "config.yaml"):
        assert (run / name).is_file()
    assert (out / "cache" / "cache.json").is_file() and (out / "data" / "synth.json").is_file()
    # TensorBoard reads the run's event files: the epoch's curves and eval's test figures
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(str(run))
    board.Reload()
    assert [e.step for e in board.Scalars("train/loss")] == [1]
    assert board.Scalars("test/mean_accuracy")[0].value == pytest.approx(evaluation["mean_accuracy"])
    assert "SYNTHETIC" in result.stderr

    # a second run reuses the dataset and the cache, and says so
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "synth (reused)" in again.stderr and "SYNTHETIC DATA" in again.stdout
    assert "AVG" in again.stdout and "Network costs" in again.stdout
