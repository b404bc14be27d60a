"""The trainer: run files, learning, exact resume (also after Ctrl-C), subsets, DDP, and every bad input."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.errors import AubenchError, UsageError
from aubench_cli.training.trainer import load_checkpoint, select_subset, train
from cachefixture import AUS, make_cache

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "c")


def _cfg(cache, **train):
    sets = {"train.epochs": 2, "train.batches_per_epoch": 4, "train.val_batches": 3, "train.aug": "D", **train}
    return cfgmod.resolve(sets=[f"{k}={v}" for k, v in sets.items()], options={"data.cache": str(cache)})


def test_run_files_and_learning(cache, tmp_path):
    cfg = _cfg(cache, **{"train.epochs": 5, "train.batches_per_epoch": 12, "train.aug": "A", "train.val_batches": 6})
    summary = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "data.json", "metrics.csv", "best.pt", "last.pt", "summary.json", "train_frames.npy"):
        assert (run / name).is_file(), name
    rows = (run / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5 and rows[0].startswith("epoch,train_loss,val_AU01")
    assert summary["best_val_mean_accuracy"] > 0.75  # each AU brightens its own square: learnable
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == summary["best_epoch"] and best["au_names"] == AUS
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 5
    record = json.loads((run / "data.json").read_text())
    assert record["splits"]["train"]["subjects"] == 4 and record["au_names"] == AUS


def _weights(run):
    return load_checkpoint(run / "last.pt")["model"]


def test_resume_is_exact(cache, tmp_path):
    straight = train(_cfg(cache, **{"train.epochs": 4}), tmp_path / "a")
    train(_cfg(cache, **{"train.epochs": 2}), tmp_path / "b")
    resumed = train(_cfg(cache), tmp_path / "b", resume=True, epochs=4)
    assert resumed["weights_checksum"] == straight["weights_checksum"]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "metrics.csv").read_text().count("\n") == (tmp_path / "b" / "metrics.csv").read_text().count("\n")


def test_ctrl_c_saves_mid_epoch_and_resume_is_exact(cache, tmp_path):
    straight = train(_cfg(cache), tmp_path / "a")
    steps = {"n": 0}

    def interrupt_on_sixth_step(event):
        if event["event"] == "step":
            steps["n"] += 1
            if steps["n"] == 6:  # epoch 2, step 2 of 4
                os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(cache), tmp_path / "b", progress=interrupt_on_sixth_step)
    saved = load_checkpoint(tmp_path / "b" / "last.pt")
    assert (saved["epoch"], saved["step"]) == (2, 2)
    resumed = train(_cfg(cache), tmp_path / "b", resume=True)
    assert resumed["weights_checksum"] == straight["weights_checksum"]


@pytest.mark.parametrize("norm", ["feature-norm", "sample-norm"])
@pytest.mark.parametrize("balance", ["undersample", "cost"])
def test_settings_run_and_are_recorded(cache, tmp_path, norm, balance):
    summary = train(_cfg(cache, **{"train.norm": norm, "train.balance": balance, "train.epochs": 1}), tmp_path / "r")
    assert 0 <= summary["best_val_mean_accuracy"] <= 1
    ckpt = load_checkpoint(tmp_path / "r" / "best.pt")
    assert ckpt["norm"] == norm
    if norm == "feature-norm":
        assert 0 < ckpt["norm_stats"]["mean"] < 1 and ckpt["norm_stats"]["std"] > 0


def test_augmentation_only_in_training(cache):
    from aubench_cli.training.trainer import FrameSource, Step
    from aubench_cli.training.transforms import FeatureStats, build_augmentation
    from aubench_cli.data.cache import open_cache

    c = open_cache(cache)
    source = FrameSource(c.images, np.arange(len(c.images)), torch.device("cpu"))
    step = Step(None, None, source, build_augmentation("D", cfgmod.AugmentConfig()), "raw", FeatureStats(), False,
                False, None)
    idx = np.arange(8)
    assert torch.equal(step.inputs(idx, train=False), step.inputs(idx, train=False))
    assert not torch.equal(step.inputs(idx, train=True), step.inputs(idx, train=False))


def test_section_v_subsets(cache):
    from aubench_cli.data.cache import open_cache

    c = open_cache(cache)
    train_idx = c.indices("train")
    rng = np.random.default_rng(0)
    frames, rec = select_subset(c, train_idx, 0.5, 1.0, rng)
    assert rec["subjects"] == 4 and len(np.unique(c.subject_index[frames])) == 4
    assert len(frames) == pytest.approx(0.5 * len(train_idx), abs=4)
    subjects, rec = select_subset(c, train_idx, 0.25, 0.5, np.random.default_rng(0))
    assert rec["subjects"] == 2 and len(np.unique(c.subject_index[subjects])) == 2
    assert rec["per_subject_frac"] == 0.5
    assert len(subjects) == pytest.approx(0.25 * len(train_idx), abs=4)  # the fixed-total rule
    assert set(subjects) <= set(train_idx)
    with pytest.raises(UsageError):
        select_subset(c, train_idx, 0.6, 0.4, rng)


def test_subset_is_recorded_in_the_run(cache, tmp_path):
    cfg = _cfg(cache, **{"train.epochs": 1})
    cfg.data.frames_frac, cfg.data.subjects_frac = 0.2, 0.5
    summary = train(cfg, tmp_path / "r")
    record = json.loads((tmp_path / "r" / "data.json").read_text())
    assert record["subset"]["subjects"] == 2 and len(record["subset"]["subject_names"]) == 2
    assert len(np.load(tmp_path / "r" / "train_frames.npy")) == summary["train_frames"] == record["subset"]["frames"]


def _ddp_worker(rank, world, cache, out, port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    summary = train(_cfg(cache), out)
    with open(os.path.join(results, f"rank{rank}.json"), "w") as fh:
        json.dump(summary, fh)
    torch.distributed.destroy_process_group()


def test_ddp_two_cpu_processes_end_with_the_same_weights(cache, tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, cache, tmp_path / "run", port, str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == 2
    assert r0["weights_checksum"] == r1["weights_checksum"]
    assert (tmp_path / "run" / "last.pt").is_file()
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert len(ckpt["rng"]["numpy"]) == 2  # each rank draws its own batches; both states kept for resume
    assert ckpt["rng"]["numpy"][0] != ckpt["rng"]["numpy"][1]


# ---- bad input, through the CLI ----------------------------------------------------------------------------


def _cli(*args):
    return runner.invoke(app, ["train", "--epochs", "1", "--batches-per-epoch", "2", "--val-batches", "1", *args])


def test_missing_cache(tmp_path):
    result = _cli("--cache", str(tmp_path / "nothing"), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "aubench preprocess" in result.stderr


def test_incompatible_cache_version(tmp_path):
    c = make_cache(tmp_path / "c", subjects=4, videos_per_subject=1, frames=10)
    header = json.loads((c / "cache.json").read_text())
    (c / "cache.json").write_text(json.dumps({**header, "format_version": 99}))
    result = _cli("--cache", str(c), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "version 99" in result.stderr


def test_unbalanceable_au_is_named_and_can_be_dropped(tmp_path):
    c = make_cache(tmp_path / "c", rates=[0.3, 0.0, 0.3, 0.3, 0.3])  # AU02 never present
    result = _cli("--cache", str(c), "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "AU02 in train/val" in result.stderr and "--drop-unbalanceable" in result.stderr
    result = _cli("--cache", str(c), "--out", str(tmp_path / "r"), "--drop-unbalanceable", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dropped_aus"] == ["AU02"] and "AU02" not in summary["au_names"]
    assert "dropping" in result.stderr


def test_unknown_architecture(cache, tmp_path):
    result = _cli("--cache", str(cache), "--arch", "resnet", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "resnet50" in result.stderr


def test_existing_run_directory(cache, tmp_path):
    assert _cli("--cache", str(cache), "--out", str(tmp_path / "r")).exit_code == 0
    again = _cli("--cache", str(cache), "--out", str(tmp_path / "r"))
    assert again.exit_code == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr
    assert _cli("--cache", str(cache), "--out", str(tmp_path / "r"), "--overwrite").exit_code == 0


def test_resume_refuses_new_settings(cache, tmp_path):
    assert _cli("--cache", str(cache), "--out", str(tmp_path / "r")).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--norm", "sample-norm"])
    assert result.exit_code == 2 and "keeps its own settings" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["last"]["epoch"] == 2


def test_cuda_out_of_memory_suggests_a_smaller_batch(cache, tmp_path, monkeypatch):
    from aubench_cli.training import trainer as trainmod

    def oom(self, idx, targets):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainmod.Step, "train_step", oom)
    with pytest.raises(AubenchError) as info:
        train(_cfg(cache), tmp_path / "r")
    assert "pos_per_au" in info.value.hint
