"""CUDA-graph training on the CPU: the epoch's draws made ahead equal the per-step draws, the static-buffer step
(graphs "emulated": the captured code path without capture) trains to the weights of the plain step, the
capturable Adagrad is torch's Adagrad step for step, when graphs fall back to eager, and a failed capture."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from aubench_cli import config as cfgmod
from aubench_cli.data.cache import open_cache
from aubench_cli.errors import UsageError
from aubench_cli.training import graphs
from aubench_cli.training.optim import CapturableAdagrad, load_optimizer_state, make_optimizer
from aubench_cli.training.sampling import make_sampler
from aubench_cli.training.trainer import BatchPlan, Dist, load_checkpoint, train
from aubench_cli.training.transforms import build_augmentation
from cachefixture import make_cache


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "c", subjects=5, videos_per_subject=1, frames=40)


def _cfg(cache, **train):
    sets = {"train.epochs": 2, "train.batches_per_epoch": 4, "train.val_batches": 3, "train.aug": "D",
            "train.pos_per_au": 2, "train.neg_per_au": 2, **train}
    return cfgmod.resolve(sets=[f"{k}={v}" for k, v in sets.items()], options={"data.cache": str(cache)})


@pytest.mark.parametrize("balance", ["oversample", "cost"])
def test_prepared_epoch_equals_per_step_draws(cache, balance):
    data = open_cache(cache)
    index = data.indices("train")
    labels = np.ascontiguousarray(data.labels)
    sampler = make_sampler(balance, labels, index, np.random.default_rng(1), 2, 2)
    aug = build_augmentation("D", cfgmod.AugmentConfig())
    plan = BatchPlan(sampler, labels, aug, 7, Dist(), torch.device("cpu"), balance == "cost", False)
    lookup = np.full(len(labels), -1, dtype=np.int64)
    lookup[index] = np.arange(len(index))[::-1]  # a store in another order: positions, not cache indices
    epoch = graphs.prepare_epoch(plan, lookup, 10, 5, torch.device("cpu"))
    assert epoch.fixed_targets == (balance == "oversample")
    for j, step in enumerate(range(10, 15)):
        batch = plan(step)
        assert torch.initial_seed() == epoch.seeds[j]  # the dropout stream of the step
        assert np.array_equal(epoch.frames[j].numpy(), lookup[batch.idx])
        assert torch.equal(epoch.aug[j], batch.aug)
        assert torch.equal(epoch.targets[j], batch.targets)
        assert torch.equal(epoch.weights[j], batch.weights)
    assert not torch.equal(epoch.frames[0], epoch.frames[1])  # each step its own batch


def _last_weights(run):
    return load_checkpoint(run / "last.pt")


@pytest.mark.parametrize("optimizer,exact", [("adam", True), ("adagrad", False)])
def test_static_buffer_step_trains_to_the_plain_steps_weights(cache, tmp_path, optimizer, exact):
    cfg = {"train.optimizer": optimizer, "train.lr": 0.01}
    plain = train(_cfg(cache, **cfg, **{"train.cuda_graphs": "off"}), tmp_path / "plain")
    lines = []
    static = train(_cfg(cache, **cfg, **{"train.cuda_graphs": "emulate"}), tmp_path / "static", log=lines.append)
    assert json.loads((tmp_path / "static" / "data.json").read_text())["cuda_graphs"] == "emulate"
    assert not any("CUDA graphs" in line for line in lines)
    a, b = _last_weights(tmp_path / "plain"), _last_weights(tmp_path / "static")
    for name in a["model"]:
        if exact:  # Adam is torch's own on the CPU: the same arithmetic in the same order
            assert torch.equal(a["model"][name], b["model"][name]), name
        else:  # CapturableAdagrad's foreach order against torch's single-tensor one: rounding only
            torch.testing.assert_close(a["model"][name], b["model"][name], rtol=1e-4, atol=1e-6)
    assert plain["best_val_mean_accuracy"] == pytest.approx(static["best_val_mean_accuracy"], abs=1e-9)
    # the optimizer state keeps torch's format: the plain run's optimizer loads it
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    assert set(a["optimizer"]["state"][0]) == set(b["optimizer"]["state"][0])


def test_static_buffer_run_resumes_exactly_in_either_mode(cache, tmp_path):
    straight = train(_cfg(cache, **{"train.epochs": 3, "train.cuda_graphs": "emulate"}), tmp_path / "a")
    train(_cfg(cache, **{"train.epochs": 2, "train.cuda_graphs": "emulate"}), tmp_path / "b")
    resumed = train(_cfg(cache, **{"train.cuda_graphs": "emulate"}), tmp_path / "b", resume=True, epochs=3)
    assert resumed["weights_checksum"] == straight["weights_checksum"]
    # a static-buffer checkpoint continues on the plain path (and its Adagrad state loads into torch's)
    train(_cfg(cache, **{"train.epochs": 2, "train.cuda_graphs": "emulate"}), tmp_path / "c")
    eager = train(_cfg(cache, **{"train.cuda_graphs": "off"}), tmp_path / "c", resume=True, epochs=3)
    assert eager["weights_checksum"] == pytest.approx(straight["weights_checksum"], rel=1e-5)


@pytest.mark.parametrize("weight_decay,lr_decay,maximize", [(0.0, 0.0, False), (0.01, 0.05, False), (0.1, 0.0, True)])
def test_capturable_adagrad_matches_torch_step_for_step(weight_decay, lr_decay, maximize):
    torch.manual_seed(0)
    shapes = [(5, 3), (7,), (2, 3, 4)]
    start = [torch.randn(s) for s in shapes]
    ours = [p.clone().requires_grad_() for p in start]
    single = [p.clone().requires_grad_() for p in start]
    multi = [p.clone().requires_grad_() for p in start]
    kw = dict(lr=0.05, lr_decay=lr_decay, weight_decay=weight_decay, maximize=maximize, eps=1e-10)
    opts = [CapturableAdagrad(ours, **kw), torch.optim.Adagrad(single, foreach=False, **kw),
            torch.optim.Adagrad(multi, foreach=True, **kw)]
    for step in range(6):
        grads = [torch.randn(s) for s in shapes]
        for params, opt in zip((ours, single, multi), opts):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
        for a, b, c in zip(ours, single, multi):
            torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-7)
            torch.testing.assert_close(a, c, rtol=2e-6, atol=1e-7)
    assert all(not torch.equal(a, s) for a, s in zip(ours, start))
    # torch's state_dict format both ways: our state continues in torch's Adagrad, and torch's in ours
    plain = torch.optim.Adagrad([p.detach().clone().requires_grad_() for p in ours], **kw)
    plain.load_state_dict(opts[0].state_dict())
    assert float(plain.state_dict()["state"][0]["step"]) == 6.0
    again = CapturableAdagrad([p.detach().clone().requires_grad_() for p in single], **kw)
    again.load_state_dict(opts[1].state_dict())
    for opt, params in ((plain, plain.param_groups[0]["params"]), (again, again.param_groups[0]["params"])):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    for a, b in zip(plain.param_groups[0]["params"], again.param_groups[0]["params"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_make_optimizer_forms():
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert type(make_optimizer("adagrad", p, 0.1)) is torch.optim.Adagrad
    assert type(make_optimizer("adagrad", p, 0.1, capturable=True)) is CapturableAdagrad
    assert make_optimizer("adam", p, 0.1, capturable=True, device=torch.device("cpu")).defaults["capturable"] is False
    # a checkpoint of a capturable Adam (CUDA) resumed on the CPU keeps this optimizer's flag
    saved = torch.optim.Adam(p, lr=0.1, capturable=False).state_dict()
    saved["param_groups"][0]["capturable"] = True
    opt = torch.optim.Adam(p, lr=0.1)
    load_optimizer_state(opt, saved)
    assert opt.param_groups[0]["capturable"] is False


def test_when_graphs_fall_back_to_eager():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    said = []
    assert graphs.choose_mode("auto", cpu, log=said.append) == "off" and said == []  # the CPU default: silent
    assert graphs.choose_mode("off", cuda, log=said.append) == "off" and said == []
    assert graphs.choose_mode("auto", cuda, log=said.append) == "capture" and said == []
    cases = [(dict(device=cpu, setting="on"), "not CUDA"), (dict(world=2), "DDP"), (dict(compiled=True), "--compile"),
             (dict(frames_where="ram"), "do not fit in GPU memory")]
    for kw, reason in cases:
        said.clear()
        kw = {"setting": "auto", "device": cuda, **kw}
        assert graphs.choose_mode(kw.pop("setting"), kw.pop("device"), log=said.append, **kw) == "off"
        assert len(said) == 1 and reason in said[0] and said[0].startswith("CUDA graphs off"), said
    with pytest.raises(UsageError, match="auto, on or off"):
        graphs.choose_mode("yes", cuda)


def test_a_failed_capture_continues_eagerly(cache, tmp_path, monkeypatch):
    """A capture that raises is logged once and the run goes on with the same step, eagerly: same weights."""
    three = {"train.epochs": 3}  # validation: one pass of its 3 batches per epoch, captured after 2 eager ones
    reference = train(_cfg(cache, **three, **{"train.cuda_graphs": "emulate"}), tmp_path / "ref")
    tries = []

    def refuse(graph, stream=None):  # noqa: ARG001
        tries.append(1)
        raise RuntimeError("operation not permitted when stream is capturing")

    init = graphs._Captured.__init__

    def capturing(self, mode, device, log):
        init(self, mode, device, log)
        self.capture = True  # as on CUDA, without a side stream

    monkeypatch.setattr(graphs._Captured, "__init__", capturing)
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: object())
    monkeypatch.setattr(torch.cuda, "graph", refuse)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    lines = []
    summary = train(_cfg(cache, **three, **{"train.cuda_graphs": "emulate"}), tmp_path / "fell", log=lines.append)
    failures = [line for line in lines if line.startswith("CUDA graphs off: capturing")]
    assert len(tries) == 2 and len(failures) == 2  # the step and validation, each tried once
    assert "the step failed (RuntimeError: operation not permitted" in failures[0]
    assert summary["weights_checksum"] == reference["weights_checksum"]


def test_validation_graph_takes_several_batches_per_pass_and_counts_as_the_plain_one(cache, tmp_path):
    from aubench_cli.training.trainer import read_metrics

    assert [graphs.val_group(n) for n in (1, 3, 7, 8, 12, 300, 301)] == [1, 3, 7, 8, 6, 6, 7]
    assert graphs.val_group(300, most=4) == 4
    cfg = {"train.val_batches": 6, "train.epochs": 3}  # one pass of 6 batches per epoch (and 2 eager warm-ups)
    train(_cfg(cache, **cfg, **{"train.cuda_graphs": "off"}), tmp_path / "plain")
    train(_cfg(cache, **cfg, **{"train.cuda_graphs": "emulate"}), tmp_path / "static")
    plain, static = read_metrics(tmp_path / "plain" / "metrics.csv"), read_metrics(tmp_path / "static" / "metrics.csv")
    columns = [k for k in plain[0] if k.startswith("val_")]
    assert len(columns) > 1 and len(plain) == len(static) == 3
    for a, b in zip(plain, static):  # per-AU validation accuracy, every epoch
        assert [a[k] for k in columns] == pytest.approx([b[k] for k in columns], abs=1e-6)
