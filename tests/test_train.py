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
from test_tracking import read_events, steps

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
    assert load_checkpoint(run / "best.pt")["au_names"] == AUS
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 5
    record = json.loads((run / "data.json").read_text())
    assert record["splits"]["train"]["subjects"] == 4 and record["au_names"] == AUS


def test_best_checkpoint_is_the_argmax_of_val_mean(cache, tmp_path, monkeypatch):
    from aubench_cli.training import trainer as trainmod

    scores = iter([0.5, 0.8, 0.8, 0.7])  # a tie: the first epoch reaching the best score is kept
    monkeypatch.setattr(trainmod, "validate", lambda run: np.full(len(AUS), next(scores)))
    summary = train(_cfg(cache, **{"train.epochs": 4, "train.batches_per_epoch": 2}), tmp_path / "r")
    val_mean = [float(r.split(",")[len(AUS) + 2]) for r in (tmp_path / "r" / "metrics.csv").read_text().split()[1:]]
    assert val_mean == [0.5, 0.8, 0.8, 0.7]
    best = load_checkpoint(tmp_path / "r" / "best.pt")
    assert best["epoch"] == summary["best_epoch"] == 1 + int(np.argmax(val_mean)) == 2
    assert load_checkpoint(tmp_path / "r" / "last.pt")["epoch"] == 4


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
    ckpt = load_checkpoint(tmp_path / "r" / "best.pt")
    assert ckpt["norm"] == norm and ckpt["config"]["train"]["balance"] == balance
    assert summary["last"]["train_loss"] > 0


def test_feature_statistics_come_from_the_training_frames_only(cache, tmp_path):
    from aubench_cli.data.cache import open_cache
    from aubench_cli.training.transforms import feature_stats

    train(_cfg(cache, **{"train.norm": "feature-norm", "train.epochs": 1, "train.batches_per_epoch": 1}), tmp_path / "r")
    saved = load_checkpoint(tmp_path / "r" / "last.pt")["norm_stats"]
    c = open_cache(cache)
    own, _ = feature_stats(c.images, c.indices("train"), np.random.default_rng(0))
    every, _ = feature_stats(c.images, np.arange(len(c.images)), np.random.default_rng(0))
    assert every.mean != pytest.approx(own.mean, rel=1e-9)  # the splits differ enough for the check below to tell
    assert saved["mean"] == pytest.approx(own.mean, rel=1e-9) and saved["std"] == pytest.approx(own.std, rel=1e-9)


def test_training_batches_are_augmented_and_validation_batches_never(cache, tmp_path, monkeypatch):
    from aubench_cli.training.transforms import Augmentation

    calls = []
    original = Augmentation.forward
    monkeypatch.setattr(Augmentation, "forward", lambda self, x, p: calls.append(len(x)) or original(self, x, p))
    cfg = _cfg(cache, **{"train.epochs": 2, "train.batches_per_epoch": 3, "train.val_batches": 4})
    train(cfg, tmp_path / "r")
    assert calls == [8 * len(AUS)] * (2 * 3)  # once per training step, the whole batch; validation: none


def test_cost_weighting_reaches_the_trainer(cache, tmp_path):
    # `cost` and `random` draw the same batches from the same seed; only the loss weights differ.
    runs = {b: train(_cfg(cache, **{"train.balance": b, "train.epochs": 1, "train.batches_per_epoch": 2}), tmp_path / b)
            for b in ("random", "cost")}
    assert runs["random"]["weights_checksum"] != runs["cost"]["weights_checksum"]
    assert runs["random"]["last"]["train_loss"] != runs["cost"]["last"]["train_loss"]


def test_section_v_subsets(cache):
    from aubench_cli.data.cache import open_cache

    c = open_cache(cache)
    train_idx = c.indices("train")
    rng = np.random.default_rng(0)
    frames, rec = select_subset(c, train_idx, 0.5, 1.0, rng)
    assert rec["subjects"] == 4 and len(np.unique(c.subject_index[frames])) == 4
    assert len(frames) == round(0.5 * len(train_idx))
    subjects, rec = select_subset(c, train_idx, 0.25, 0.5, np.random.default_rng(0))
    assert rec["subjects"] == 2 and len(np.unique(c.subject_index[subjects])) == 2
    assert rec["per_subject_frac"] == 0.5
    assert set(subjects) <= set(train_idx)
    with pytest.raises(UsageError):
        select_subset(c, train_idx, 0.6, 0.4, rng)


@pytest.mark.parametrize("seed", range(4))
def test_section_v_total_is_exact_and_proportional(seed):
    from types import SimpleNamespace

    sizes = [37, 52, 18, 90, 41, 66, 23]  # subjects of different sizes: rounding per subject would miss the total
    c = SimpleNamespace(subject_index=np.repeat(np.arange(7), sizes), subjects=[f"S{i}" for i in range(7)])
    train_idx = np.arange(sum(sizes))
    for frames_frac, subjects_frac in ((0.33, 0.75), (0.2, 0.5), (0.47, 1.0), (0.1, 0.3)):
        subset, rec = select_subset(c, train_idx, frames_frac, subjects_frac, np.random.default_rng(seed))
        assert len(subset) == len(np.unique(subset)) == round(frames_frac * len(train_idx)), (frames_frac, subjects_frac)
        chosen = np.unique(c.subject_index[subset])
        have = np.array([sizes[s] for s in chosen])
        taken = np.array([(c.subject_index[subset] == s).sum() for s in chosen])
        assert np.abs(taken - len(subset) * have / have.sum()).max() < 1  # each subject in proportion


def _sized(sizes):
    from types import SimpleNamespace

    c = SimpleNamespace(subject_index=np.repeat(np.arange(len(sizes)), sizes),
                        subjects=[f"S{i}" for i in range(len(sizes))])
    return c, np.arange(sum(sizes))


@pytest.mark.parametrize("seed", range(3))
def test_fig2_subjects_runs_where_no_draw_holds_the_budget(seed):
    """Issue 22, item 2: 11 equal subjects, s = F = 20 %: round(0.2 x 11) = 2 subjects hold 60 frames, the budget is
    66. The run trains on every frame of the 2 drawn and records the realised total and share."""
    c, train_idx = _sized([30] * 11)
    subset, rec = select_subset(c, train_idx, 0.2, 0.2, np.random.default_rng(seed))
    chosen = np.unique(c.subject_index[subset])
    assert len(chosen) == 2 and len(subset) == 60 == len(np.unique(subset))
    assert set(subset) == set(train_idx[np.isin(c.subject_index[train_idx], chosen)])  # every frame of the drawn
    assert rec["budget_met"] is False and rec["frames_budget"] == 66 and rec["frames"] == 60
    assert rec["frames_share"] == pytest.approx(60 / 330) and rec["per_subject_frac"] == 1.0


def test_fig2_subjects_redraws_to_keep_the_budget_where_a_draw_can():
    """8 small subjects and 2 large: a draw of 2 small ones cannot give 20 % of the frames; another draw, with a
    large subject, can, and then the total is the budget exactly, in proportion to each drawn subject's size."""
    sizes = [10] * 8 + [100, 100]
    c, train_idx = _sized(sizes)
    redrawn = 0
    for seed in range(12):
        subset, rec = select_subset(c, train_idx, 0.2, 0.2, np.random.default_rng(seed))
        first = np.sort(np.random.default_rng(seed).choice(np.arange(10), 2, replace=False))
        assert rec["budget_met"] is True and len(subset) == rec["frames_budget"] == round(0.2 * 280)
        assert rec["frames_share"] == pytest.approx(56 / 280)
        redrawn += rec["draws"] > 1
        if rec["draws"] == 1:  # the first draw could: the subset is the one drawn before redraws existed
            assert rec["subject_names"] == [f"S{i}" for i in first]
        else:
            assert sum(sizes[i] for i in first) < 56
    assert redrawn >= 3  # the redraw path was exercised


def test_subjects_frac_alone_is_all_frames_of_those_subjects(cache):
    from aubench_cli.data.cache import open_cache

    c = open_cache(cache)
    train_idx = c.indices("train")
    subset, rec = select_subset(c, train_idx, 1.0, 0.5, np.random.default_rng(0))
    chosen = np.unique(c.subject_index[subset])
    assert len(chosen) == 2 and set(subset) == set(train_idx[np.isin(c.subject_index[train_idx], chosen)])


def test_subset_is_recorded_in_the_run(cache, tmp_path):
    cfg = _cfg(cache, **{"train.epochs": 1})
    cfg.data.frames_frac, cfg.data.subjects_frac = 0.2, 0.5
    summary = train(cfg, tmp_path / "r")
    record = json.loads((tmp_path / "r" / "data.json").read_text())
    assert record["subset"]["subjects"] == 2 and len(record["subset"]["subject_names"]) == 2
    assert len(np.load(tmp_path / "r" / "train_frames.npy")) == summary["train_frames"] == record["subset"]["frames"]
    assert record["subset"]["budget_met"] is True


def test_a_subset_short_of_its_budget_is_recorded_said_and_reported(tmp_path):
    """The fig2-subjects 20 % point on 11 equal training subjects trains, logs the shortfall, records the realised
    total and share in data.json, and the study report's caption states them."""
    from aubench_cli.data.cache import open_cache
    from aubench_cli.studies.report import _caption, _short_subsets

    path = make_cache(tmp_path / "c11", subjects=13, videos_per_subject=1, frames=30)
    assert len(set(open_cache(path).subjects)) == 13  # 11 train, 1 val, 1 test
    cfg = _cfg(path, **{"train.epochs": 1, "train.batches_per_epoch": 1, "train.val_batches": 1, **SMALL_ONE})
    cfg.data.frames_frac, cfg.data.subjects_frac = 0.2, 0.2
    lines = []
    train(cfg, tmp_path / "r", log=lines.append)
    sub = json.loads((tmp_path / "r" / "data.json").read_text())["subset"]
    assert sub["budget_met"] is False and sub["frames"] == 60 and sub["frames_budget"] == 66
    assert sub["frames_share"] == pytest.approx(60 / 330, abs=1e-6)
    assert any("training on every frame of the 2 drawn: 60 frames, 18.2% of the training frames" in l for l in lines)
    from aubench_cli.studies.report import RunResult, StudyResults

    run = RunResult("subjects-20", "20 %", "done", subset=sub)
    study = StudyResults("fig2-subjects", tmp_path, {}, {}, [run])
    assert _short_subsets(study) == ["20 %: 60 frames, 18.2 % of the training frames (asked 20 %, from 2 of 11 "
                                     "subjects)"]
    assert "Frame budget not met" in _caption(study) and _short_subsets(study)[0] in _caption(study)


SMALL_ONE = {"train.pos_per_au": 2, "train.neg_per_au": 2}


# ---- several processes: the same experiment as one ----------------------------------------------------------

# quick on a shared 2-core machine; gloo on the CPU whatever GPUs the machine has (the workers pretend to have one)
CPU = {"train.device": "cpu"}
SMALL = {**CPU, "train.pos_per_au": 2, "train.neg_per_au": 2, "train.val_batches": 2}
SGD = {**SMALL, "train.optimizer": "sgd", "train.lr": 0.5, "train.aug": "D", "train.epochs": 2,
       "train.batches_per_epoch": 3}
DDP_RUNS = {
    # SGD reacts to the scale of a gradient: a wrong normalisation shows; 3 validation batches: rank 1 runs one
    # uncounted pass to stay in step (val_share)
    "sgd": {**SGD, "train.val_batches": 3},
    "adagrad": {**SMALL, "train.aug": "A", "train.epochs": 2, "train.batches_per_epoch": 3},  # the defaults (Adagrad)
    "cost": {**SGD, "train.balance": "cost", "train.epochs": 1},  # random batches, weights from the whole batch
    "stop": {**SGD, "train.epochs": 3},  # rank 1 is interrupted in epoch 1; resumed by one process
    "scale": {**SGD, "train.scale_batch": True, "train.epochs": 1},
}
COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter", "reduce",
               "all_gather_object", "broadcast_object_list")


def _one_gpu_machine():
    """What a machine with one GPU answers (the suite's gloo runs must not depend on the GPUs present)."""
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 1


def _spawn(worker, args, nprocs=2, timeout=300):
    """torch.multiprocessing.spawn with a deadline: a hang (collectives out of step) fails, killing the ranks."""
    import time

    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {nprocs} ranks did not finish within {timeout} s (a rank waits in a collective)")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, cache, root, port):
    import torch.distributed as dist

    from aubench_cli.training import trainer as trainmod

    _one_gpu_machine()
    # float64: the comparison then measures the protocol, not float32 sums in another order, which Adagrad (a
    # step of +-lr for any gradient, however small, at first) and a few SGD steps amplify to ~1e-2 of a weight.
    torch.set_default_dtype(torch.float64)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    seen = {"devices": [], "objects": 0, "max_reduces": 0, "writes": []}
    for name in COLLECTIVES:  # the spy: every tensor passed to a collective, and its device
        original = getattr(dist, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            tensors += [t for a in args if isinstance(a, (list, tuple)) for t in a if isinstance(t, torch.Tensor)]
            seen["devices"] += [str(t.device) for t in tensors]
            seen["objects"] += _name.endswith("_object") or _name.endswith("object_list")
            seen["max_reduces"] += _name == "all_reduce" and kwargs.get("op") == dist.ReduceOp.MAX
            return _original(*args, **kwargs)

        setattr(dist, name, spy)
    for name in ("atomic_write_text", "atomic_write_bytes"):  # every file the trainer writes
        original = getattr(trainmod, name)
        setattr(trainmod, name, lambda path, data, _o=original: seen["writes"].append(str(path)) or _o(path, data))
    summaries = {}
    for name, sets in DDP_RUNS.items():
        steps = {"n": 0}

        def interrupt_rank_1(event, _name=name):
            if _name == "stop" and rank == 1 and event["event"] == "step":
                steps["n"] += 1
                if steps["n"] == 2:
                    os.kill(os.getpid(), signal.SIGINT)

        try:
            summaries[name] = train(_cfg(cache, **sets), os.path.join(root, name), progress=interrupt_rank_1)
        except KeyboardInterrupt:
            summaries[name] = "interrupted"
    seen["training_device"] = summaries["sgd"]["device"]
    with open(os.path.join(root, f"rank{rank}.json"), "w") as fh:
        json.dump({"summaries": summaries, **seen}, fh)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_runs(cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    _spawn(_ddp_worker, (2, cache, str(root), _free_port()), timeout=900)
    return root, [json.loads((root / f"rank{r}.json").read_text()) for r in range(2)]


def _float64_train(*args, **kwargs):
    torch.set_default_dtype(torch.float64)
    try:
        return train(*args, **kwargs)
    finally:
        torch.set_default_dtype(torch.float32)


def _assert_same_weights(a, b, init=None, rtol=1e-5):
    """Equal to ``rtol`` of each tensor's scale (float32 sums in another order differ by ~1e-7 of it)."""
    for k in a:
        scale = b[k].abs().max().item()
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=rtol * scale, msg=k)
        if init is not None and k.startswith("classifier"):  # the steps moved the weights far beyond the tolerance
            assert (b[k] - init[k]).abs().max().item() > 100 * rtol * scale, k


@pytest.mark.parametrize("name", ["sgd", "adagrad", "cost"])
def test_two_ranks_run_the_one_process_experiment(cache, ddp_runs, tmp_path, name):
    """Two gloo ranks train the same weights as one process, for the baseline: a network without dropout or
    BatchNorm. That is the claim's extent: with dropout each rank draws its own rows' masks (the same experiment in
    distribution only: test_two_ranks_give_the_one_process_gradient_only_without_dropout), and under gloo a
    BatchNorm network normalises each rank's rows alone (batchnorm_across_ranks)."""
    from aubench_cli.models import create_model

    root, ranks = ddp_runs
    one = _float64_train(_cfg(cache, **DDP_RUNS[name]), tmp_path / "one")
    two = ranks[0]["summaries"][name]
    assert two["world_size"] == 2 and one["world_size"] == 1
    torch.manual_seed(0)
    torch.set_default_dtype(torch.float64)
    try:
        init = create_model("baseline", len(AUS)).state_dict()
    finally:
        torch.set_default_dtype(torch.float32)
    _assert_same_weights(_weights(root / name), _weights(tmp_path / "one"), init)
    assert two["last"]["train_loss"] == pytest.approx(one["last"]["train_loss"], rel=1e-5)
    assert two["last"]["val_mean"] == one["last"]["val_mean"]
    record = json.loads((root / name / "data.json").read_text())
    assert record["distributed"]["steps_per_epoch"] == DDP_RUNS[name]["train.batches_per_epoch"]


def test_ctrl_c_on_one_rank_stops_both_and_resumes_exactly_on_one_process(cache, ddp_runs, tmp_path):
    root, ranks = ddp_runs
    assert ranks[0]["summaries"]["stop"] == ranks[1]["summaries"]["stop"] == "interrupted"
    saved = load_checkpoint(root / "stop" / "last.pt")
    assert (saved["epoch"], saved["step"]) == (1, 0)  # rank 1's Ctrl-C in epoch 1, seen at epoch 2's first step
    resumed = _float64_train(_cfg(cache, **CPU), root / "stop", resume=True)  # another world size: one process
    straight = _float64_train(_cfg(cache, **DDP_RUNS["stop"]), tmp_path / "straight")
    assert resumed["last"]["epoch"] == 3
    _assert_same_weights(_weights(root / "stop"), _weights(tmp_path / "straight"))
    assert steps(read_events(root / "stop"), "train/loss") == [1, 2, 3]  # TensorBoard's curve: each epoch once


def test_collectives_live_on_the_training_device_and_stop_checks_are_sparse(ddp_runs):
    _, ranks = ddp_runs
    for seen in ranks:
        assert seen["devices"] and set(seen["devices"]) == {seen["training_device"]}
        assert seen["objects"] == 0  # no pickled objects through the process group
        steps = sum(DDP_RUNS[n].get("train.epochs", 2) * DDP_RUNS[n]["train.batches_per_epoch"] for n in DDP_RUNS)
        assert 0 < seen["max_reduces"] <= steps // 2  # not a collective and a host sync every step


def test_rank_1_writes_nothing(ddp_runs):
    _, ranks = ddp_runs
    assert ranks[1]["writes"] == []
    assert any(w.endswith("last.pt") for w in ranks[0]["writes"])


def test_only_rank_0_writes_event_files(ddp_runs):
    from aubench_cli.training.tracking import HPARAMS_SUFFIX, event_files

    root, _ = ddp_runs
    for name in ("sgd", "adagrad"):
        curves = [p for p in event_files(root / name) if not p.name.endswith(HPARAMS_SUFFIX)]
        assert len(curves) == 1, curves  # one writer: rank 1 would add a file of its own
        acc = read_events(root / name)
        assert steps(acc, "train/loss") == [1, 2] and steps(acc, "val/mean_accuracy") == [1, 2]


def test_scale_batch_is_another_run_and_says_so(ddp_runs):
    root, ranks = ddp_runs
    record = json.loads((root / "scale" / "data.json").read_text())["distributed"]
    assert record == {"mode": "scale-batch", "global_batch": 2 * 4 * len(AUS), "steps_per_epoch": 2, "lr": 1.0}
    assert yaml.safe_load((root / "scale" / "config.yaml").read_text())["train"]["scale_batch"] is True


def _batchnorm_worker(rank, world, cache, root, port):
    from aubench_cli.models import register_model

    @register_model(title="BN test net", column=99, in_chans=1, from_scratch=True, classifier="classifier")
    def bn_test_net(num_outputs, input_size=96):
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=4), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten())
        net.add_module("classifier", torch.nn.Linear(16, num_outputs))
        return net

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    summary = train(_cfg(cache, **{**SMALL, "model.arch": "bn_test_net", "train.val_batches": 1, "train.epochs": 2,
                                   "train.batches_per_epoch": 2}), os.path.join(root, "bn"))
    with open(os.path.join(root, f"bn{rank}.json"), "w") as fh:
        json.dump(summary, fh)


def test_batchnorm_network_validates_with_fewer_val_batches_than_ranks(cache, tmp_path):
    # One validation batch, two ranks: rank 1 has none of its own, yet takes part in the buffer broadcast DDP makes
    # at the first forward after training (a hang before); the accuracy is that of the one batch, on both ranks.
    _spawn(_batchnorm_worker, (2, cache, str(tmp_path), _free_port()), timeout=300)
    ranks = [json.loads((tmp_path / f"bn{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["last"]["epoch"] == 2 and ranks[0]["world_size"] == 2
    assert ranks[0]["best_val_per_au"] == ranks[1]["best_val_per_au"]


def test_validation_batches_are_shared_so_every_rank_runs_as_many_passes():
    from aubench_cli.training.trainer import Dist, val_share

    batches = [np.array([b]) for b in range(5)]
    for world, n in ((2, 1), (3, 5), (2, 4), (4, 2), (1, 5)):
        shares = [val_share(batches[:n], Dist(rank=r, world=world)) for r in range(world)]
        passes = {len(mine) for mine, _ in shares}
        assert len(passes) == 1 and passes.pop() == -(-n // world)  # the same count on every rank
        counted = [int(b[0]) for mine, k in shares for b in mine[:k]]
        assert sorted(counted) == list(range(n))  # each batch counted once, on one rank


def test_validation_counts_only_the_ranks_own_batches():
    import contextlib
    from types import SimpleNamespace

    from aubench_cli.training.trainer import Dist, validate

    # logits +1 / -1 by frame: frames 0-3 all right, frames 4-7 all wrong, against targets of one positive AU
    model = lambda x: torch.where(x[:, :1] < 4, 1.0, -1.0)  # noqa: E731
    model.eval = lambda: None
    right, wrong = np.arange(4), np.arange(4, 8)
    run = SimpleNamespace(train_model=model, data=SimpleNamespace(au_names=["AU01"]), device=torch.device("cpu"),
                          step=SimpleNamespace(autocast=contextlib.nullcontext(),
                                               inputs=lambda idx: torch.from_numpy(idx).double()[:, None]),
                          val_batches=[wrong, right], val_counted=1, val_targets=torch.ones(4, 1, dtype=torch.int8),
                          ddp=Dist(), graph_val=None)
    assert validate(run).tolist() == [0.0]  # the uncounted pass (a batch of another rank) leaves the score alone
    run.val_counted = 2
    assert validate(run).tolist() == [0.5]


@pytest.mark.parametrize("rank", [0, 1])
def test_more_ranks_than_gpus_is_one_line_before_any_process_group(monkeypatch, rank):
    import torch.distributed as dist

    from aubench_cli.training.trainer import init_distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: pytest.fail(f"set_device({i}) was called"))
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: pytest.fail("a process group was started"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    for device in ("auto", "cuda"):
        with pytest.raises(UsageError) as info:  # rank 0 too: no process waits for a rank that stopped
            init_distributed(device)
        assert "2 training processes" in info.value.message and "1 GPU visible" in info.value.message
        assert "--device cpu" in info.value.hint and "--nproc-per-node 1" in info.value.hint
    with pytest.raises(UsageError) as info:
        init_distributed("cuda:1")
    assert "LOCAL_RANK" in info.value.message
    started = []
    monkeypatch.setattr(dist, "init_process_group", lambda backend: started.append(backend))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    ddp, device = init_distributed("cpu")
    assert started == ["gloo"] and device == torch.device("cpu") and (ddp.rank, ddp.world) == (rank, 2)


def test_more_ranks_than_gpus_on_the_command_line(cache, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name, value in (("WORLD_SIZE", "2"), ("RANK", "1"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["train", "--cache", str(cache), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "1 GPU visible" in lines[0] and "--device cpu" in lines[0]
    assert "invalid device ordinal" not in result.output and "Traceback" not in result.output


def test_every_collective_helper_uses_the_training_device(monkeypatch):
    # No GPU here: a "meta" training device stands in for CUDA. A CPU tensor in a collective is the NCCL crash.
    import contextlib

    import torch.distributed as dist

    from aubench_cli.training.trainer import Dist

    devices = []
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None: devices.append(t.device))
    ddp = Dist(rank=0, world=2, device=torch.device("meta"))
    ddp.all_sum(torch.zeros(3, device="meta"))
    with contextlib.suppress(RuntimeError):  # reading a meta tensor's value fails, after the collective
        ddp.any(True)
    assert devices == [torch.device("meta")] * 2
    assert [ddp.stop_check_due(s) for s in range(10)].count(True) == 2


def test_batchnorm_across_ranks():
    from aubench_cli.training.trainer import batchnorm_across_ranks

    messages = []
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    assert batchnorm_across_ranks(net, torch.device("cpu"), messages.append) is net
    assert "per rank" in " ".join(messages) or "own rows" in " ".join(messages)
    synced = batchnorm_across_ranks(net, torch.device("cuda", 0), messages.append)  # conversion needs no GPU
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert batchnorm_across_ranks(torch.nn.Linear(2, 2), torch.device("cpu"), messages.append) is not None
    assert len(messages) == 1


@pytest.mark.parametrize("dropout", [0.5, 0.0])
def test_two_ranks_give_the_one_process_gradient_only_without_dropout(dropout):
    # The limit of "W processes run the one-process experiment" (docs/training.md): BatchPlan seeds torch by seed,
    # step and rank, so each rank draws the dropout masks of its own rows and a dropout network's two-rank
    # gradient is another draw than one process's; without dropout it is the one-process gradient.
    from aubench_cli.training.sampling import make_sampler, weighted_bce
    from aubench_cli.training.trainer import BatchPlan, Dist

    rng = np.random.default_rng(0)
    labels = (rng.random((400, 4)) < 0.3).astype(np.int8)
    sampler = make_sampler("random", labels, np.arange(len(labels)), np.random.default_rng(1))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Dropout(dropout),
                              torch.nn.Linear(64, 4)).double()
    features = torch.randn(len(labels), 16, dtype=torch.float64)

    def gradient(rank, world):
        plan = BatchPlan(sampler, labels, None, 0, Dist(rank=rank, world=world), torch.device("cpu"), False, False)
        batch = plan(5)  # step 5's rows of this rank; seeds torch's stream for its dropout
        net.zero_grad()
        weighted_bce(net(features[batch.idx]), batch.targets, batch.weights).backward()
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    one = gradient(0, 1)
    two = (gradient(0, 2) + gradient(1, 2)) / 2  # DDP's average
    if dropout:
        assert (two - one).abs().max() > 0.05 * one.abs().max()
    else:
        torch.testing.assert_close(two, one, rtol=1e-9, atol=1e-12)


def test_dropout_under_several_processes_is_said():
    from aubench_cli.models import create_model
    from aubench_cli.training.trainer import dropout_across_ranks

    messages = []
    with torch.device("meta"):
        assert dropout_across_ranks(create_model("lightcnn9", 3), messages.append) == ["dropout"]
        assert dropout_across_ranks(create_model("baseline", 3), messages.append) == []
    assert len(messages) == 1 and "not mask for mask" in messages[0]


def test_preloading_follows_available_memory_shared_by_local_ranks(cache, monkeypatch):
    from aubench_cli.data.cache import open_cache
    from aubench_cli.training import trainer as trainmod

    c = open_cache(cache)
    needed = np.arange(100)
    nbytes = 100 * 96 * 96
    monkeypatch.setattr(trainmod, "available_memory", lambda: 3 * nbytes)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    held = trainmod.FrameSource(c.images, needed, torch.device("cpu"))
    assert held.where == "ram" and torch.equal(held(np.array([5, 7])), torch.from_numpy(c.images[[5, 7]]))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # 3/2 of the frames' size, halved again by two ranks: too little
    read = trainmod.FrameSource(c.images, needed, torch.device("cpu"))
    assert read.where == "disk" and torch.equal(read(np.array([5, 7])), torch.from_numpy(c.images[[5, 7]]))


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


def test_resume_refuses_new_settings_and_accepts_its_own(cache, tmp_path):
    assert _cli("--cache", str(cache), "--out", str(tmp_path / "r"), "--norm", "sample-norm").exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--norm", "raw"])
    assert result.exit_code == 2 and "keeps its own settings" in result.stderr and "train.norm" in result.stderr
    result = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--epochs", "2", "--json",
                                 "--norm", "sample-norm", "--cache", str(cache), "--batches-per-epoch", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["last"]["epoch"] == 2


def test_cuda_out_of_memory_suggests_a_smaller_batch(cache, tmp_path, monkeypatch):
    from aubench_cli.training import trainer as trainmod

    def oom(self, batch):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainmod.Step, "train_step", oom)
    with pytest.raises(AubenchError) as info:
        train(_cfg(cache), tmp_path / "r")
    assert "pos_per_au" in info.value.hint


def test_checkpoints_are_written_while_the_next_epoch_trains_and_hold_their_own_epoch(cache, tmp_path, monkeypatch):
    """The write of epoch 1's checkpoint runs in the background during epoch 2's training; what it writes is the
    state at the end of epoch 1 (copied to host memory), not the weights epoch 2 has changed since."""
    import threading

    from aubench_cli.training import trainer as trainmod

    epoch2_trained = threading.Event()
    at_end: dict[int, float] = {}
    written: dict[int, float] = {}
    overlapped: dict[int, bool] = {}
    real_end, real_train_epoch, real_save = trainmod.end_epoch, trainmod.train_epoch, trainmod.save_checkpoint

    def checksum(tensors):
        return float(sum(t.double().sum() for t in tensors))

    def end_epoch(run, epoch, *args):
        at_end[epoch] = checksum(run.model.state_dict().values())
        return real_end(run, epoch, *args)

    def train_epoch(run, epoch, *args):
        loss = real_train_epoch(run, epoch, *args)
        if epoch == 2:
            epoch2_trained.set()
        return loss

    def save_checkpoint(paths, state):
        if state["epoch"] == 1:  # held until epoch 2 has trained: only possible if the write runs alongside it
            overlapped[1] = epoch2_trained.wait(timeout=60)
        written[state["epoch"]] = checksum(state["model"].values())
        return real_save(paths, state)

    monkeypatch.setattr(trainmod, "end_epoch", end_epoch)
    monkeypatch.setattr(trainmod, "train_epoch", train_epoch)
    monkeypatch.setattr(trainmod, "save_checkpoint", save_checkpoint)
    train(_cfg(cache), tmp_path / "r")
    assert overlapped == {1: True}
    assert written == at_end and at_end[1] != at_end[2]  # each epoch's own weights, though epoch 2 changed them
    saved = load_checkpoint(tmp_path / "r" / "last.pt")
    assert saved["epoch"] == 2  # written before train() returned
    assert saved["model"]._metadata  # the copy is still a state dict (its modules' versions kept for loading)


def test_pace_note_projects_the_rest_and_on_a_cpu_says_how_to_shorten_hours():
    from aubench_cli.commands._render import pace_note

    cpu = pace_note(200.0, 540, "cpu")  # the protocol's 600 epochs at 200 s each: what a 2-core CPU does
    assert "other 540 epochs take about 30.0 h" in cpu and "3.3 min for the first epoch" in cpu
    assert "--epochs" in cpu and "aubench demo" in cpu
    gpu = pace_note(200.0, 540, "cuda:0")
    assert "30.0 h" in gpu and "--epochs" not in gpu  # a GPU run of hours is what the protocol is
    short = pace_note(30.0, 10, "cpu")
    assert "about 5.0 min" in short and "--epochs" not in short  # minutes on a CPU need no advice
    assert "the last epoch takes about 1.5 min" in pace_note(90.0, 1, "cpu")
    assert pace_note(30.0, 0, "cpu") is None and pace_note(4.0, 2, "cpu") is None  # under a minute: the bar says it
    assert "(e.g. --set train.epochs=10)" in pace_note(200.0, 540, "cpu", shorten="--set train.epochs=10")  # study's


def test_train_says_after_the_first_epoch_how_long_the_rest_takes(cache, tmp_path, monkeypatch):
    from aubench_cli.commands import _render

    monkeypatch.setattr(_render, "PACE_NOTE_MIN_S", 0.0)  # this run's rest takes seconds, not hours
    result = runner.invoke(app, ["train", "--cache", str(cache), "--epochs", "3", "--batches-per-epoch", "2",
                                 "--val-batches", "1", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("at this pace")]
    assert len(notes) == 1 and "the other 2 epochs take about" in notes[0], result.stderr
    resumed = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--epochs", "4"])
    assert resumed.exit_code == 0, resumed.output
    assert "the last epoch" not in resumed.stderr and "at this pace" not in resumed.stderr  # nothing left after it


def test_under_torchrun_only_rank_0_prints(cache, tmp_path, monkeypatch):
    """Every torchrun process runs the command; rank 1 printing too would double every line, draw a second bar and
    put a second JSON document on stdout (`torchrun ... train --json | jq` would fail). Its run trains all the same."""
    args = ["train", "--cache", str(cache), "--epochs", "1", "--batches-per-epoch", "2", "--val-batches", "1", "--json"]
    monkeypatch.setenv("RANK", "1")  # WORLD_SIZE unset: one process, which reads itself as rank 1
    quiet = runner.invoke(app, args + ["--out", str(tmp_path / "r1")])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == "" and "training into" not in quiet.stderr and "epoch 1" not in quiet.stderr
    assert (tmp_path / "r1" / "best.pt").is_file()
    monkeypatch.setenv("RANK", "0")
    spoken = runner.invoke(app, args + ["--out", str(tmp_path / "r0")])
    assert spoken.exit_code == 0 and json.loads(spoken.stdout)["best_epoch"] == 1 and "training into" in spoken.stderr
