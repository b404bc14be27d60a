"""Weight loading: local files round trip, the classifier is replaced, mismatches are clear errors, no network."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm

from aubench_cli.models import weights
from aubench_cli.errors import AubenchError, UsageError
from aubench_cli.models import create_model


def _fresh(arch, seed, outputs=12):
    torch.manual_seed(seed)
    return create_model(arch, outputs)


@pytest.mark.parametrize("wrap", ["plain", "checkpoint", "dataparallel"])
def test_round_trip_loads_everything_but_the_classifier(tmp_path, wrap):
    source = _fresh("lightcnn9", seed=1, outputs=7)
    state = source.state_dict()
    payload = {"plain": state, "checkpoint": {"model": state, "epoch": 3},
               "dataparallel": {f"module.{k}": v for k, v in state.items()}}[wrap]
    path = tmp_path / "w.pt"
    torch.save(payload, path)

    target = _fresh("lightcnn9", seed=2, outputs=12)
    head_before = target.fc2.weight.detach().clone()
    report = weights.load_weights_file(target, "lightcnn9", path)

    loaded = target.state_dict()
    for key in report.loaded:
        assert torch.equal(loaded[key], state[key])
    assert report.replaced == ["fc2.bias", "fc2.weight"]
    assert torch.equal(target.fc2.weight, head_before)  # the new head keeps its own init
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(state) - 2


def test_torchvision_layout_loads_into_our_networks():
    torch.manual_seed(0)
    for arch, reference in (("resnet50", tvm.resnet50()), ("vgg16", tvm.vgg16()), ("mobilenetv2", tvm.mobilenet_v2())):
        model = create_model(arch, 12)
        report = weights.load_into(model, arch, reference.state_dict(), "torchvision")
        assert report.missing == []
        conv = next(k for k in report.loaded if k.endswith("weight"))
        assert torch.equal(model.state_dict()[conv], reference.state_dict()[conv])
        assert report.unexpected == []  # only the library's classifier differs, and it is replaced
        assert report.replaced == sorted(k for k in model.state_dict() if k.startswith(("fc.", "classifier.")))


def test_timm_layout_loads_into_xception():
    import timm

    reference = timm.create_model("legacy_xception", pretrained=False, num_classes=1000)
    report = weights.load_into(create_model("xception", 12), "xception", reference.state_dict(), "timm")
    assert report.missing == [] and report.unexpected == []


def test_shape_mismatch_names_the_tensor():
    model = create_model("baseline", 12)
    state = create_model("baseline", 12, input_size=64).state_dict()  # fc1 takes 4x4x64 there
    with pytest.raises(UsageError) as info:
        weights.load_into(model, "baseline", state, "file.pt")
    assert "fc1.weight" in info.value.message


def test_weights_of_another_network_are_refused():
    with pytest.raises(UsageError, match="none of the"):
        weights.load_into(create_model("resnet50", 12), "resnet50", create_model("baseline", 12).state_dict(), "f")


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

    monkeypatch.setattr(tvm.ResNet50_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(AubenchError) as info:
        weights.load_pretrained(create_model("resnet50"), "resnet50")
    assert "--weights" in info.value.hint and "ResNet50_Weights" in info.value.hint
