"""TensorBoard event files of `aubench train` and `aubench eval`, read back with TensorBoard's own reader: each
epoch once across resumes (and after a crash past the checkpoint), the HParams session with the run's settings
and its best validation and test figures, turned off, and tensorboard missing."""

from __future__ import annotations

import csv
import shutil
import sys

import pytest
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.training.tracking import EVAL_SUFFIX, HPARAMS_SUFFIX, event_files
from aubench_cli.training.trainer import train
from cachefixture import AUS, make_cache

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "c")


def _cfg(cache, **train):
    sets = {"train.epochs": 2, "train.batches_per_epoch": 2, "train.val_batches": 2, "train.aug": "A",
            "train.pos_per_au": 2, "train.neg_per_au": 2, **train}
    return cfgmod.resolve(sets=[f"{k}={v}" for k, v in sets.items()], options={"data.cache": str(cache)})


def read_events(run_dir):
    """TensorBoard's own reader over the run directory (every event file in it, in TensorBoard's order)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps(acc, tag):
    return [e.step for e in acc.Scalars(tag)]


def session(acc):
    """The run's HParams session: {name: value} of its start info, and the hparams plugin's tags."""
    from tensorboard.plugins.hparams import metadata

    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    values = {k: v.number_value if v.HasField("number_value") else v.string_value for k, v in start.hparams.items()}
    return values, sorted(content)


def test_two_plus_two_epochs_are_epochs_one_to_four_once(cache, tmp_path):
    run = tmp_path / "r"
    train(_cfg(cache), run)
    train(_cfg(cache), run, resume=True, epochs=4)
    acc = read_events(run)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for tag in ("train/loss", "train/lr", "train/images_per_s", "val/mean_accuracy", *(f"val/{au}" for au in AUS)):
        assert steps(acc, tag) == [1, 2, 3, 4], tag
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([float(r["train_loss"]) for r in rows])
    assert [e.value for e in acc.Scalars("val/AU04")] == pytest.approx([float(r["val_AU04"]) for r in rows])
    assert [e.value for e in acc.Scalars("train/images_per_s")] == pytest.approx(
        [float(r["images_per_s"]) for r in rows])
    # one HParams session, the resumed run's: its settings, its best validation figure, every metric declared
    assert len(event_files(run, HPARAMS_SUFFIX)) == 1
    values, tags = session(acc)
    assert values["train.epochs"] == 4 and values["model.arch"] == "baseline" and values["train.aug"] == "A"
    assert values["data.aus"] == ",".join(AUS) and len(values["data.cache_identity"]) >= 12
    assert not any(k.startswith(("eval.", "profile.")) for k in values)
    # no experiment summary: TensorBoard builds it from every run's session, the settings that differ first
    assert tags == ["_hparams_/session_end_info", "_hparams_/session_start_info"]
    best = max(float(r["val_mean"]) for r in rows)
    assert [e.step for e in acc.Scalars("best/val_mean_accuracy")] == [4]
    assert acc.Scalars("best/val_mean_accuracy")[0].value == pytest.approx(best)


def test_points_written_past_the_checkpoint_are_not_shown_twice(cache, tmp_path):
    """A crash after epoch 2's points were written but before its checkpoint: the resume redoes epoch 2."""
    run = tmp_path / "r"
    train(_cfg(cache, **{"train.epochs": 1}), run)
    kept = tmp_path / "after-epoch-1"
    kept.mkdir()
    for name in ("last.pt", "metrics.csv"):
        shutil.copy(run / name, kept / name)
    train(_cfg(cache), run, resume=True, epochs=2)
    for name in ("last.pt", "metrics.csv"):  # back to the checkpoint of epoch 1
        shutil.copy(kept / name, run / name)
    train(_cfg(cache), run, resume=True, epochs=3)
    acc = read_events(run)
    assert steps(acc, "train/loss") == [1, 2, 3]
    assert steps(acc, "val/AU01") == [1, 2, 3]


def test_eval_adds_test_figures_once(cache, tmp_path):
    from aubench_cli.evaluation.evaluate import evaluate_run

    run = tmp_path / "r"
    train(_cfg(cache), run)
    evaluate_run(run, batches=10)
    result = evaluate_run(run, batches=20)  # again: replaces the first evaluation's figures
    assert len(event_files(run, EVAL_SUFFIX)) == 1
    acc = read_events(run)
    points = acc.Scalars("test/mean_accuracy")
    assert [p.step for p in points] == [result["epoch"]]
    assert points[0].value == pytest.approx(result["mean_accuracy"])
    assert acc.Scalars("test/balanced_accuracy")[0].value == pytest.approx(result["balanced_accuracy"])
    assert acc.Scalars("test/AU12")[0].value == pytest.approx(result["per_au"]["AU12"]["accuracy"])
    assert steps(acc, "train/loss") == [1, 2]  # the curves untouched


def test_turned_off_writes_nothing_and_imports_nothing(cache, tmp_path, monkeypatch):
    from aubench_cli.evaluation.evaluate import evaluate_run

    # an import of torch.utils.tensorboard would fail here, so the trainer may not try one
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    lines = []
    train(_cfg(cache, **{"train.tensorboard": False}), tmp_path / "r", log=lines.append)
    assert not any("tensorboard" in line for line in lines)
    monkeypatch.undo()  # tensorboard available again: eval adds no event files to a run trained without them
    evaluate_run(tmp_path / "r", batches=10)
    assert event_files(tmp_path / "r") == [] and (tmp_path / "r" / "eval.json").is_file()


def test_without_the_tensorboard_package_training_goes_on(cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where tensorboard is not installed
    lines = []
    summary = train(_cfg(cache), tmp_path / "r", log=lines.append)
    assert summary["best_epoch"] >= 1 and event_files(tmp_path / "r") == []
    assert len([line for line in lines if "tensorboard" in line]) == 1  # one line, not one per epoch


def test_cli_flag_and_resume_may_change_it(cache, tmp_path):
    run = tmp_path / "r"
    common = ["--set", "train.batches_per_epoch=2", "--set", "train.val_batches=2", "--set", "train.pos_per_au=2",
              "--set", "train.neg_per_au=2"]
    result = runner.invoke(app, ["train", "--cache", str(cache), "--out", str(run), "--epochs", "1", "--aug", "A",
                                 "--no-tensorboard", *common])
    assert result.exit_code == 0, result.output
    assert event_files(run) == []
    # resuming with TensorBoard on is not a change of settings; the new epochs get their points
    result = runner.invoke(app, ["train", "--resume", str(run), "--epochs", "2", "--tensorboard"])
    assert result.exit_code == 0, result.output
    assert steps(read_events(run), "train/loss") == [2]
