"""The registry and every network: shapes, gradients, channels, the paper's training facts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aubench_cli.errors import UsageError
from aubench_cli.models import create_model, get_model_info, list_models, register_model

PAPER_ORDER = ["baseline", "mobilenetv2", "inceptionv3", "emonets", "densenet121", "lightcnn9", "resnet50",
               "xception", "lightcnn29", "facevgg", "vgg16"]


def test_registry_lists_the_paper_networks_in_table_order():
    assert list_models() == PAPER_ORDER
    assert list_models("lightcnn*") == ["lightcnn9", "lightcnn29"]


@pytest.mark.parametrize("arch", PAPER_ORDER)
def test_forward_and_backward(arch):
    torch.manual_seed(0)
    model = create_model(arch, num_outputs=5).train()
    x = torch.rand(2, 1, 96, 96)
    logits = model(x)
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    # the classifier (the layer the paper replaces) receives a non-zero gradient
    head = model.get_submodule(get_model_info(arch).classifier)
    assert isinstance(head, nn.Linear) and head.out_features == 5
    assert head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", [a for a in PAPER_ORDER if get_model_info(a).in_chans == 3][:3])
def test_three_channel_networks_repeat_the_gray_channel(arch):
    model = create_model(arch, 3).eval()
    x = torch.rand(2, 1, 96, 96)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x.repeat(1, 3, 1, 1)), atol=1e-5)
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.in_channels == 3


def test_paper_training_facts():
    scratch = [a for a in PAPER_ORDER if get_model_info(a).from_scratch]
    assert scratch == ["baseline", "emonets"]
    assert get_model_info("baseline").optimizer == "adagrad" and get_model_info("baseline").lr == 0.005
    assert get_model_info("vgg16").optimizer == "adam" and get_model_info("vgg16").lr == 1e-4
    one_channel = {a for a in PAPER_ORDER if get_model_info(a).in_chans == 1}
    assert one_channel == {"baseline", "emonets", "lightcnn9", "lightcnn29"}


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UsageError) as info:
        create_model("vgg", 12)
    assert "vgg16" in info.value.hint


def test_zero_outputs_is_an_error():
    with pytest.raises(UsageError):
        create_model("baseline", 0)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        @register_model(title="x", column=99, in_chans=1, from_scratch=True, classifier="fc")
        def baseline(num_outputs: int, input_size: int = 96) -> nn.Module:  # noqa: F811
            return nn.Linear(1, 1)


def test_resnet50_uses_the_v1_stride_placement():
    model = create_model("resnet50", 12)
    for layer in (model.layer2, model.layer3, model.layer4):
        assert layer[0].conv1.stride == (2, 2)
        assert layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (2, 2)


def test_resnet50_v15_layout_is_torchvisions():
    import torchvision.models as tvm

    model = create_model("resnet50", 12, layout="v1.5")
    reference = tvm.resnet50()
    for ours, theirs in zip(model.modules(), reference.modules()):
        if isinstance(ours, nn.Conv2d):
            assert (ours.stride, ours.padding) == (theirs.stride, theirs.padding)
    assert model.aubench_layout == "v1.5" and create_model("resnet50", 12).aubench_layout == "v1"


def test_layouts_are_checked():
    with pytest.raises(UsageError, match="unknown layout"):
        create_model("resnet50", 12, layout="v2")
    with pytest.raises(UsageError, match="one layout only") as info:
        create_model("vgg16", 12, layout="v1.5")
    assert "resnet50" in info.value.hint


def test_other_input_sizes_work_for_size_dependent_heads():
    for arch in ("baseline", "emonets", "lightcnn9"):
        assert create_model(arch, 4, input_size=64)(torch.rand(1, 1, 64, 64)).shape == (1, 4)


def test_pool_before_relu_is_the_same_function_as_relu_before_pool():
    from torch import nn as tnn

    torch.manual_seed(0)
    model = create_model("baseline", 4)
    convs = [m for m in model.features if isinstance(m, tnn.Conv2d)]
    x = torch.randn(3, 1, 96, 96)
    h = x
    for conv in convs:  # the paper's order: conv -> ReLU -> maxpool
        h = torch.nn.functional.max_pool2d(torch.relu(conv(h)), 2)
    reference = model.classifier(torch.relu(model.fc1(h.flatten(1))))
    assert torch.allclose(model(x), reference, atol=1e-5)


def test_the_small_networks_never_import_torchvision_or_timm():
    # ~200 MiB of memory and ~0.5 s that listing networks, the baseline, EmoNets and LightCNN (training, eval,
    # predict) must not pay: the ImageNet families import them only when one of theirs is built.
    import subprocess
    import sys

    code = ("import sys; from aubench_cli.models import create_model, list_models\n"
            "[create_model(n, 12) for n in ('baseline', 'emonets', 'lightcnn9', 'lightcnn29')]\n"
            "print(len(list_models()), 'torchvision' in sys.modules, 'timm' in sys.modules)\n"
            "create_model('resnet50', 12); print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["11", "False", "False", "True"]


def test_every_dropout_is_a_layer_the_trainer_sees_and_the_docs_name():
    # The trainer warns about per-process dropout masks under DDP from the network's dropout modules
    # (trainer.dropout_layers); a network calling F.dropout itself would escape it. Built and run on the meta
    # device: no memory, no arithmetic.
    from pathlib import Path

    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    from aubench_cli.training.trainer import dropout_layers

    class DropoutCalls(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += func in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                                   F.feature_alpha_dropout, torch.dropout)
            return func(*args, **(kwargs or {}))

    with_dropout = []
    for arch in PAPER_ORDER:
        with torch.device("meta"):
            model = create_model(arch, 3).train()
            spy = DropoutCalls()
            with spy:
                model(torch.empty(2, 1, 96, 96))
        assert bool(spy.calls) == bool(dropout_layers(model)), arch
        if spy.calls:
            with_dropout.append(get_model_info(arch).title)
    assert with_dropout == ["InceptionV3", "LightCNN-9", "LightCNN-29"]
    docs = " ".join((Path(__file__).parents[1] / "docs" / "training.md").read_text().split())
    assert f"with dropout ({', '.join(with_dropout[:-1])} and {with_dropout[-1]})" in docs  # where the limit is said
