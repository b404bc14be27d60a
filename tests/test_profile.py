"""Costs in the paper's conventions: hand computations on small nets, and Table I for every network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aubench_cli.errors import UsageError
from aubench_cli.models import create_model, list_models
from aubench_cli.profiling import PAPER_OUTPUTS, PAPER_TABLE1, count_costs, measure_speed, profile_models

# Networks whose paper memory figure is reproducible from the layers (docs/architectures.md).
MEMORY_EXACT = {"baseline", "emonets", "lightcnn9", "lightcnn29", "vgg16", "facevgg"}


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)  # 8x8 -> 4 x 8 x 8
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)  # -> 4 x 4 x 4
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        y = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(y.flatten(1))


def test_conventions_on_a_hand_computed_net():
    costs = count_costs(Tiny(), input_size=8)
    conv_out, pool_out = 4 * 8 * 8, 4 * 4 * 4
    conv_flops = 2 * conv_out * 9 + conv_out  # 2 x MACs + bias
    pool_flops = pool_out * 2 * 2  # kernel area per output element
    fc_flops = 2 * 3 * 64 + 3
    assert costs.flops == conv_flops + pool_flops + fc_flops  # BatchNorm and ReLU are free
    assert costs.macs == conv_out * 9 + 3 * 64 + 2 * conv_out  # fvcore: conv + linear MACs + affine BatchNorm
    params = (4 * 9 + 4) + (4 + 4) + (64 * 3 + 3)
    assert costs.trainable_params == params
    assert costs.params == params + 8  # Keras also counts BatchNorm running mean and variance
    assert costs.activations == conv_out + pool_out + 3
    assert costs.memory_mb == pytest.approx(4 * (costs.params + costs.activations) / 1e6)


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        x = x.expand(-1, 2, -1, -1)
        return self.gap(self.conv(x) + x).flatten(1)


def test_residual_add_and_global_pool():
    costs = count_costs(Residual(), input_size=4)
    n = 2 * 4 * 4
    # conv without bias: 2 x MACs; add: one per element; global average pool: its input elements
    assert costs.flops == 2 * n * 2 + n + n
    assert costs.activations == n + 2  # the add has no memory of its own


def test_unsupported_ops_are_reported_not_hidden():
    class Odd(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x).sum((2, 3))

    assert count_costs(Odd(), input_size=4).unsupported_ops


@pytest.mark.parametrize("arch", list_models())
def test_table1_is_reproduced(arch):
    costs = count_costs(create_model(arch, PAPER_OUTPUTS))
    paper = PAPER_TABLE1[arch]
    assert costs.flops == pytest.approx(paper["flops"], rel=0.01)
    if arch != "resnet50":  # the paper's ResNet50 count has no classifier (and Keras' convs carry biases)
        assert costs.params == pytest.approx(paper["params"], rel=0.005)
    if arch in MEMORY_EXACT:
        assert costs.memory_mb == pytest.approx(paper["memory_mb"], rel=0.01)
    else:  # BatchNorm-heavy networks: the paper's tool counted more than the layers hold; ours is lower
        assert costs.memory_mb < paper["memory_mb"]
    assert costs.unsupported_ops == {}


def test_resnet50_v1_is_cheaper_than_torchvisions_v15():
    import torchvision.models as tvm

    ours = count_costs(create_model("resnet50", 14)).flops
    torchvision = count_costs(_GrayWrap(tvm.resnet50(num_classes=14))).flops
    assert 1.04 < torchvision / ours < 1.08


def test_profile_shows_the_layout_asked_for():
    import torchvision.models as tvm

    (v1,) = profile_models(["resnet50"], paper=True, measure=False)
    v15, vgg = profile_models(["resnet50", "vgg16"], paper=True, measure=False, layout="v1.5")
    assert (v1["layout"], v15["layout"], vgg["layout"]) == ("v1", "v1.5", None)
    assert v15["flops"] == count_costs(_GrayWrap(tvm.resnet50(num_classes=14))).flops  # torchvision's own network
    assert v1["flops"] == pytest.approx(PAPER_TABLE1["resnet50"]["flops"], rel=0.01)  # Table I stays v1
    assert v15["params"] == v1["params"]
    assert vgg["flops"] == pytest.approx(PAPER_TABLE1["vgg16"]["flops"], rel=0.01)  # others unchanged
    with pytest.raises(UsageError, match="one layout only"):
        profile_models(["vgg16"], measure=False, layout="v1.5")


class _GrayWrap(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.expand(-1, 3, -1, -1))


def test_speed_is_consistent():
    speed = measure_speed(create_model("baseline"), batch=4, min_seconds=0.05)
    assert speed.iterations >= 3
    assert speed.images_per_s == pytest.approx(4 / (speed.latency_ms / 1e3))


def test_profile_rows_with_paper_figures():
    rows = profile_models(["baseline", "emonets"], paper=True, batch=2)
    assert [r["arch"] for r in rows] == ["baseline", "emonets"]
    for r in rows:
        assert r["outputs"] == PAPER_OUTPUTS
        assert isinstance(r["flops"], int) and isinstance(r["params"], int)
        assert r["paper_flops"] == int(PAPER_TABLE1[r["arch"]]["flops"])
        assert r["flops_diff"] == pytest.approx(r["flops"] / r["paper_flops"] - 1)
        assert r["images_per_s"] > 0
