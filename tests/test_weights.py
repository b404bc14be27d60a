"""Weight loading: every published format loads fully (features equal to the source network's), partial loads
are refused, the classifier is replaced, size-dependent layers are re-initialised and listed, no network.

Each format is built here from a randomly initialised network (BatchNorm statistics randomised too, so they are
checked as well) and written the way the real files are: torchvision's DenseNet with legacy keys, a VGG-16 renamed
to VGG-Face's names, LightCNN built at 128x128 in the authors' checkpoint dict, wrapper prefixes in any order.
"""

from __future__ import annotations

import itertools
import json
import random
import re

import pytest
import timm
import torch
import torchvision.models as tvm
from torch import nn
from typer.testing import CliRunner

from aubench_cli.cli import app
from aubench_cli.errors import AubenchError, UsageError
from aubench_cli.models import create_model
from aubench_cli.models import weights
from aubench_cli.models.lightcnn import LightCNN9, LightCNN29

runner = CliRunner()
ATOL = 1e-5


def _fresh(arch, seed, outputs=12, **kw):
    torch.manual_seed(seed)
    return create_model(arch, outputs, **kw)


def _randomize_bn(model: nn.Module, seed: int = 7) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


class _Stop(Exception):
    pass


def _output_of(model: nn.Module, name: str, x: torch.Tensor, call=None) -> torch.Tensor:
    """The output of submodule ``name`` on input ``x`` (the forward stops there)."""
    captured = {}

    def hook(module, args, output):
        captured["y"] = output
        raise _Stop

    handle = model.get_submodule(name).register_forward_hook(hook)
    try:
        with torch.no_grad():
            (call or model)(x)
    except _Stop:
        pass
    finally:
        handle.remove()
    return captured["y"]


def _assert_same_features(ours, source, ours_at, source_at=None, rgb=True):
    """Our network's features equal the source network's on the same gray batch (the source sees it as RGB)."""
    ours.eval(), source.eval()
    gray = torch.rand(2, 1, 96, 96)
    a = _output_of(ours, ours_at, gray)
    b = _output_of(source, source_at or ours_at, gray.expand(-1, 3, -1, -1) if rgb else gray)
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=ATOL), (a - b).abs().max()


def _no_counters(state):  # published checkpoints predate num_batches_tracked
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def _legacy_densenet(state):
    """torchvision's DenseNet keys as its published checkpoints spell them: denselayer1.norm.1.weight."""
    return {re.sub(r"(denselayer\d+\.)(norm|relu|conv)([12])\.", r"\1\2.\3.", k): v for k, v in state.items()}


VGG_FACE_CONVS = [f"conv{b}_{i}" for b, n in enumerate([2, 2, 3, 3, 3], 1) for i in range(1, n + 1)]


def _vgg_face(state, shuffle_seed=0):
    """A torchvision VGG-16 state dict under VGG-Face's names (conv1_1 ... conv5_3, fc6, fc7, fc8), shuffled."""
    conv_idx = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    names = dict(zip(conv_idx, VGG_FACE_CONVS))
    fcs = {0: "fc6", 3: "fc7", 6: "fc8"}
    out = {}
    for key, value in state.items():
        part, idx, leaf = key.split(".")
        out[f"{names[int(idx)] if part == 'features' else fcs[int(idx)]}.{leaf}"] = value
    items = list(out.items())
    random.Random(shuffle_seed).shuffle(items)  # the file's order must not matter, only the layer numbers
    return dict(items)


@pytest.fixture(scope="module")
def tv_vgg16():
    torch.manual_seed(3)
    return tvm.vgg16()


# --- the published formats load fully --------------------------------------------------------------------------

@pytest.mark.parametrize("arch, cls, fc", [("lightcnn9", LightCNN9, "fc1"), ("lightcnn29", LightCNN29, "fc")])
def test_official_lightcnn_checkpoint_at_128_loads_and_reinitialises_fc(tmp_path, arch, cls, fc):
    torch.manual_seed(11)
    source = cls(num_outputs=100, input_size=128)  # the authors' 128x128 network (their fc2 has 79,077 outputs)
    assert source.get_submodule(fc).filter.weight.shape == (512, 8192)
    path = tmp_path / "LightCNN_release.pth.tar"  # the official train.py's save_checkpoint dict, DataParallel names
    torch.save({"epoch": 80, "arch": arch, "prec1": torch.tensor(98.8),
                "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)

    target = _fresh(arch, seed=2)
    fc_before = target.get_submodule(fc).filter.weight.detach().clone()
    report = weights.load_weights_file(target, arch, path)

    assert report.missing == [] and report.unexpected == []
    assert report.reinitialized == [f"{fc}.filter.bias", f"{fc}.filter.weight"]
    assert report.params["reinitialized"] == 512 * 4608 + 512  # the 96x96 layer, kept at its init
    assert report.replaced == ["fc2.bias", "fc2.weight"]
    assert torch.equal(target.get_submodule(fc).filter.weight, fc_before)
    assert len(report.loaded) == len(source.state_dict()) - 4  # all but fc and the classifier
    _assert_same_features(target, source, "features" if arch == "lightcnn9" else "pool4", rgb=False)


def test_lightcnn_fc_with_other_outputs_is_not_a_size_change():
    state = LightCNN9(num_outputs=10, input_size=96).state_dict()
    state["fc1.filter.weight"] = torch.zeros(256, 4608)  # rows differ: another network, not another input size
    with pytest.raises(UsageError, match="fc1.filter.weight"):
        weights.load_into(create_model("lightcnn9"), "lightcnn9", state, "f.pt")


def test_densenet_legacy_checkpoint_loads_fully():
    torch.manual_seed(5)
    source = _randomize_bn(tvm.densenet121())
    state = _legacy_densenet(_no_counters(source.state_dict()))
    assert "features.denseblock1.denselayer1.norm.1.weight" in state  # really the published spelling
    model = _fresh("densenet121", seed=1)
    report = weights.load_into(model, "densenet121", state, "densenet121-a639ec97.pth")
    assert report.missing == [] and report.unexpected == [] and report.reinitialized == []
    assert len(report.loaded) == len(state) - 2
    assert report.conversions and "legacy DenseNet" in report.conversions[0]
    _assert_same_features(model, source, "features")


def test_legacy_densenet_names_without_the_renaming_are_refused_with_the_cause(monkeypatch):
    monkeypatch.delitem(weights.CONVERSIONS, "densenet121")
    state = _legacy_densenet(tvm.densenet121().state_dict())
    with pytest.raises(weights.PartialWeightsError, match="legacy DenseNet"):
        weights.load_into(create_model("densenet121"), "densenet121", state, "f")


def test_vgg_face_names_map_in_order_onto_features(tv_vgg16):
    face = _vgg_face(tv_vgg16.state_dict())
    model = _fresh("facevgg", seed=1)
    report = weights.load_into(model, "facevgg", face, "vgg_face.pth")
    assert report.missing == []
    assert sorted(report.unexpected) == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]
    assert report.params["unexpected"] == 25088 * 4096 + 4096 + 4096 * 4096 + 4096
    assert report.replaced == ["classifier.bias", "classifier.weight"]  # fc8 is the replaced classifier
    assert len(report.loaded) == 26
    _assert_same_features(model, tv_vgg16, "features")


@pytest.mark.parametrize("prefix", ["_orig_mod.module.", "module._orig_mod.", "model.module.", "module.model._orig_mod."])
def test_wrapped_resnet50_loads_in_the_layout_it_was_trained_in(prefix):
    torch.manual_seed(8)
    source = _randomize_bn(tvm.resnet50())  # torchvision's v1.5
    state = {prefix + k: v for k, v in source.state_dict().items()}
    model = _fresh("resnet50", seed=1, layout="v1.5")
    report = weights.load_into(model, "resnet50", state, "compiled-ddp.pt")
    assert report.missing == [] and report.unexpected == []
    assert report.replaced == ["fc.bias", "fc.weight"]
    _assert_same_features(model, source, "avgpool")


def test_resnet50_v1_runs_the_same_weights_differently():
    # why the layout matters: same tensors, other strides, other features
    torch.manual_seed(8)
    source = tvm.resnet50().eval()
    v1 = _fresh("resnet50", seed=1)
    weights.load_into(v1, "resnet50", source.state_dict(), "f")
    gray = torch.rand(1, 1, 96, 96)
    assert not torch.allclose(_output_of(v1.eval(), "avgpool", gray),
                              _output_of(source, "avgpool", gray.expand(-1, 3, -1, -1)), atol=1e-3)


@pytest.mark.parametrize("wrappers", [p for n in (1, 2, 3) for p in itertools.permutations(weights.WRAPPER_PREFIXES, n)])
def test_wrapper_prefixes_in_any_combination_and_order(tmp_path, wrappers):
    source = _fresh("lightcnn9", seed=1, outputs=7)
    prefix = "".join(wrappers)
    path = tmp_path / "w.pt"
    torch.save({prefix + k: v for k, v in source.state_dict().items()}, path)
    target = _fresh("lightcnn9", seed=2)
    report = weights.load_weights_file(target, "lightcnn9", path)
    assert report.missing == [] and report.unexpected == [] and report.reinitialized == []
    assert all(torch.equal(target.state_dict()[k], source.state_dict()[k]) for k in report.loaded)


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "state_dict", "nested"])
def test_checkpoint_dicts_and_the_classifier_is_replaced(tmp_path, wrap):
    source = _fresh("lightcnn9", seed=1, outputs=7)
    state = source.state_dict()
    payload = {"plain": state, "checkpoint": {"model": state, "epoch": 3}, "state_dict": {"state_dict": state, "epoch": 1},
               "nested": {"state_dict": {"model": state}}}[wrap]
    path = tmp_path / "w.pt"
    torch.save(payload, path)
    target = _fresh("lightcnn9", seed=2, outputs=12)
    head_before = target.fc2.weight.detach().clone()
    report = weights.load_weights_file(target, "lightcnn9", path)
    assert report.replaced == ["fc2.bias", "fc2.weight"]
    assert torch.equal(target.fc2.weight, head_before)  # the new head keeps its own init
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(state) - 2


def _tv_source(arch):
    torch.manual_seed(4)
    if arch == "inceptionv3":  # the published file carries the auxiliary classifier
        return tvm.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return {"mobilenetv2": tvm.mobilenet_v2, "resnet50": tvm.resnet50, "densenet121": tvm.densenet121}[arch]()


TV_FEATURES = {"mobilenetv2": ("features", "features"), "inceptionv3": ("avgpool", "avgpool"),
               "resnet50": ("avgpool", "avgpool"), "densenet121": ("features", "features"),
               "vgg16": ("features", "features")}


@pytest.mark.parametrize("arch", ["mobilenetv2", "inceptionv3", "densenet121", "resnet50", "vgg16"])
def test_torchvision_registry_weights_load_fully(monkeypatch, arch, tv_vgg16):
    source = _randomize_bn(tv_vgg16 if arch == "vgg16" else _tv_source(arch))
    published = _no_counters(source.state_dict())
    if arch == "densenet121":
        published = _legacy_densenet(published)
    enum_name = weights.get_model_info(arch).pretrained_source.split(":")[1].split(".")[0]
    monkeypatch.setattr(getattr(tvm, enum_name), "get_state_dict", lambda self, **kw: dict(published))

    layout, _ = weights.choose_layout(arch, None, pretrained=True)
    model = _fresh(arch, seed=1, layout=layout)
    report = weights.load_pretrained(model, arch)
    assert report.missing == [] and report.reinitialized == []
    extra = {"inceptionv3": "AuxLogits.", "vgg16": "classifier."}.get(arch)  # aux head; fc6/fc7 as classifier.0/.3
    assert all(k.startswith(extra) for k in report.unexpected) and bool(report.unexpected) == bool(extra)
    _assert_same_features(model, source, *TV_FEATURES[arch])


def test_timm_registry_xception_loads_fully(monkeypatch):
    torch.manual_seed(9)
    source = _randomize_bn(timm.create_model("legacy_xception", pretrained=False, num_classes=1000)).eval()
    calls = []

    def fake_create(name, pretrained=False, **kw):
        calls.append((name, pretrained))
        return source

    monkeypatch.setattr(timm, "create_model", fake_create)
    model = _fresh("xception", seed=1)
    report = weights.load_pretrained(model, "xception")
    assert calls == [("legacy_xception.tf_in1k", True)]
    assert report.missing == [] and report.unexpected == [] and report.replaced == ["fc.bias", "fc.weight"]
    gray = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model.eval().forward_features(gray.expand(-1, 3, -1, -1)),
                              source.forward_features(gray.expand(-1, 3, -1, -1)), atol=ATOL)


# --- no silent partial loads ------------------------------------------------------------------------------------

def test_half_a_resnet50_is_refused_naming_the_tensors():
    full = tvm.resnet50().state_dict()
    keys = list(full)
    half = {k: full[k] for k in keys[: len(keys) // 2]}
    with pytest.raises(weights.PartialWeightsError) as info:
        weights.load_into(create_model("resnet50"), "resnet50", half, "half.pt")
    dropped = [k for k in keys[len(keys) // 2:] if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    assert f"leave {len(dropped)} of resnet50's tensors" in info.value.message
    assert "part of resnet50" in info.value.message  # the likely cause
    named = re.findall(r"layer[34]\.[\w.]+", info.value.message)
    assert named and all(k in dropped for k in named)
    assert "--allow-partial-weights" in info.value.hint
    report = weights.load_into(create_model("resnet50"), "resnet50", half, "half.pt", allow_partial=True)
    assert sorted(report.missing) == sorted(dropped)
    own = create_model("resnet50").state_dict()
    assert report.params["missing"] == sum(own[k].numel() for k in dropped)


def test_shape_mismatch_names_the_tensor():
    model = create_model("baseline", 12)
    state = create_model("baseline", 12, input_size=64).state_dict()  # fc1 takes 4x4x64 there
    with pytest.raises(UsageError) as info:
        weights.load_into(model, "baseline", state, "file.pt")
    assert "fc1.weight" in info.value.message


def test_weights_of_another_network_are_refused_with_the_names_expected():
    with pytest.raises(UsageError, match="none of the") as info:
        weights.load_into(create_model("resnet50", 12), "resnet50", create_model("baseline", 12).state_dict(), "f")
    assert "conv1.weight" in info.value.message and "features.0.weight" in info.value.message


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        weights.load_weights_file(create_model("baseline"), "baseline", tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(UsageError, match="cannot read"):
        weights.load_weights_file(create_model("baseline"), "baseline", bad)
    nodict = tmp_path / "list.pt"
    torch.save([1, 2, 3], nodict)
    with pytest.raises(UsageError, match="no state dict"):
        weights.load_weights_file(create_model("baseline"), "baseline", nodict)


def test_pretrained_without_a_registry_points_to_weights():
    for arch in ("facevgg", "lightcnn29"):
        with pytest.raises(UsageError) as info:
            weights.load_pretrained(create_model(arch), arch)
        assert "--weights" in info.value.hint
    with pytest.raises(UsageError, match="random init"):
        weights.load_pretrained(create_model("baseline"), "baseline")


def test_pretrained_offline_fails_fast_with_a_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(tvm.ResNet50_Weights, "get_state_dict", offline)
    with pytest.raises(AubenchError) as info:
        weights.load_pretrained(create_model("resnet50"), "resnet50")
    assert "--weights" in info.value.hint and "ResNet50_Weights" in info.value.hint


# --- the layout a run is built in -------------------------------------------------------------------------------

def test_choose_layout():
    assert weights.choose_layout("resnet50", None) == ("v1", "")
    layout, note = weights.choose_layout("resnet50", None, pretrained=True)
    assert layout == "v1.5" and "v1.5" in note and "model.layout=v1" in note
    assert weights.choose_layout("resnet50", "v1", pretrained=True) == ("v1", "")  # the user's choice wins
    layout, note = weights.choose_layout("resnet50", None, weights_file=True)
    assert layout == "v1" and "model.layout=v1.5" in note
    assert weights.choose_layout("vgg16", None, pretrained=True) == (None, "")
    with pytest.raises(UsageError, match="one layout only"):
        weights.choose_layout("vgg16", "v1.5")
    with pytest.raises(UsageError, match="unknown layout"):
        weights.choose_layout("resnet50", "v2")


# --- the command line -------------------------------------------------------------------------------------------

def test_models_reports_a_lightcnn_release(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "LightCNN_9Layers_checkpoint.pth.tar"
    state = LightCNN9(num_outputs=50, input_size=128).state_dict()
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    result = runner.invoke(app, ["models", "lightcnn9", "--weights", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["accepted"] is True and report["missing"] == [] and report["unexpected"] == []
    assert report["loaded"] == len(state) - 4
    assert report["reinitialized"] == ["fc1.filter.bias", "fc1.filter.weight"]
    assert report["replaced"] == ["fc2.bias", "fc2.weight"]
    assert report["params"]["replaced"] == 256 * 12 + 12
    assert report["params"]["loaded"] + report["params"]["reinitialized"] + report["params"]["replaced"] == sum(
        v.numel() for v in create_model("lightcnn9").state_dict().values())


def test_models_refuses_a_partial_file_unless_allowed(tmp_path):
    full = create_model("baseline").state_dict()
    path = tmp_path / "half.pt"
    torch.save({k: v for k, v in full.items() if not k.startswith("features.9")}, path)
    result = runner.invoke(app, ["models", "baseline", "--weights", str(path), "--json"])
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["accepted"] is False and report["missing"] == ["features.9.bias", "features.9.weight"]
    assert "features.9.bias" in result.stderr
    allowed = runner.invoke(app, ["models", "baseline", "--weights", str(path), "--json", "--allow-partial-weights"])
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.stdout)
    assert report["accepted"] is True and report["allow_partial"] is True
    assert report["params"]["missing"] == 64 * 64 * 9 + 64


def test_models_pretrained_resnet50_reports_its_layout(monkeypatch):
    published = tvm.resnet50().state_dict()
    monkeypatch.setattr(tvm.ResNet50_Weights, "get_state_dict", lambda self, **kw: published)
    result = runner.invoke(app, ["models", "resnet50", "--pretrained", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layout"] == "v1.5"
    result = runner.invoke(app, ["models", "resnet50", "--pretrained", "--layout", "v1", "--json"])
    assert json.loads(result.stdout)["layout"] == "v1"
