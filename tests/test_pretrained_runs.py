"""Training from weights: the report in weights.json and the log, partial files refused unless allowed, and the
ResNet50 layout chosen for --pretrained recorded by the run and rebuilt by resume and evaluate. No network."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision.models as tvm
import yaml
from typer.testing import CliRunner

import aubench_cli.evaluation.evaluate as evaluate_mod
import aubench_cli.training.trainer as trainer_mod
from aubench_cli import config as cfgmod
from aubench_cli.cli import app
from aubench_cli.evaluation.evaluate import evaluate_run
from aubench_cli.models import create_model
from aubench_cli.models.lightcnn import LightCNN9
from aubench_cli.models.weights import PartialWeightsError
from aubench_cli.training.trainer import train
from cachefixture import make_cache

runner = CliRunner()
SHORT = ["train.epochs=1", "train.batches_per_epoch=1", "train.val_batches=1", "train.aug=A"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("cache") / "c", subjects=4, frames=24)


def test_train_writes_and_logs_the_weights_report(cache, tmp_path):
    torch.manual_seed(0)
    release = tmp_path / "LightCNN_9Layers_checkpoint.pth.tar"  # the authors' format, trained at 128x128
    torch.save({"epoch": 80, "state_dict": {f"module.{k}": v for k, v in LightCNN9(10, 128).state_dict().items()}},
               release)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--cache", str(cache), "--arch", "lightcnn9", "--weights", str(release),
                                 "--out", str(run), *[a for s in SHORT for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    report = json.loads((run / "weights.json").read_text())
    assert report["missing"] == [] and report["reinitialized"] == ["fc1.filter.bias", "fc1.filter.weight"]
    assert report["loaded"] == len(LightCNN9(10, 96).state_dict()) - 4 and report["source"] == str(release)
    assert "weights: reinitialized (2,359,808 values): fc1.filter.bias, fc1.filter.weight" in result.stderr


def test_train_refuses_a_partial_file_unless_allowed(cache, tmp_path):
    path = tmp_path / "partial.pt"
    torch.save({k: v for k, v in create_model("baseline", 3).state_dict().items() if not k.startswith("fc1.")}, path)
    cfg = cfgmod.resolve(sets=SHORT, options={"data.cache": str(cache), "model.weights": str(path)})
    with pytest.raises(PartialWeightsError, match="fc1.bias, fc1.weight"):
        train(cfg, tmp_path / "refused", log=lambda m: None)
    cfg = cfgmod.resolve(sets=SHORT + ["model.allow_partial_weights=true"],
                         options={"data.cache": str(cache), "model.weights": str(path)})
    train(cfg, tmp_path / "allowed", log=lambda m: None)
    report = json.loads((tmp_path / "allowed" / "weights.json").read_text())
    assert report["missing"] == ["fc1.bias", "fc1.weight"] and report["allow_partial"] is True


def _spy(monkeypatch, module):
    built = []

    def spy(*args, **kwargs):
        built.append(kwargs.get("layout"))
        return create_model(*args, **kwargs)

    monkeypatch.setattr(module, "create_model", spy)
    return built


def test_pretrained_resnet50_runs_in_torchvisions_layout(cache, tmp_path, monkeypatch):
    torch.manual_seed(1)
    published = tvm.resnet50().state_dict()
    monkeypatch.setattr(tvm.ResNet50_Weights, "get_state_dict", lambda self, **kw: published)
    built = _spy(monkeypatch, trainer_mod)
    lines: list[str] = []
    cfg = cfgmod.resolve(sets=SHORT, options={"data.cache": str(cache), "model.arch": "resnet50", "model.pretrained": True})
    run = tmp_path / "r50"
    train(cfg, run, log=lines.append)
    assert built == ["v1.5"]
    assert any("built in layout v1.5" in line for line in lines)
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["layout"] == "v1.5"  # the run records it
    assert json.loads((run / "weights.json").read_text())["missing"] == []

    train(cfg, run, resume=True, epochs=2, log=lambda m: None)  # resume rebuilds the recorded layout
    assert built == ["v1.5", "v1.5"]
    evaluated = _spy(monkeypatch, evaluate_mod)
    evaluate_run(run, batches=5, write=False, device="cpu")
    assert evaluated == ["v1.5"]


def test_a_layout_set_by_the_user_is_kept(cache, tmp_path, monkeypatch):
    built = _spy(monkeypatch, trainer_mod)
    cfg = cfgmod.resolve(sets=SHORT + ["model.layout=v1"], options={"data.cache": str(cache), "model.arch": "resnet50"})
    published = tvm.resnet50().state_dict()
    monkeypatch.setattr(tvm.ResNet50_Weights, "get_state_dict", lambda self, **kw: published)
    cfg.model.pretrained = True
    train(cfg, tmp_path / "v1", log=lambda m: None)
    assert built == ["v1"]
    with pytest.raises(Exception, match="one layout only"):
        train(cfgmod.resolve(sets=SHORT + ["model.layout=v1.5"], options={"data.cache": str(cache)}), tmp_path / "b",
              log=lambda m: None)
