"""The library-built networks behind ``imagenet``'s builders: torchvision's and timm's modules, imported only when
one of these networks is built (``import torchvision`` and ``timm`` cost ~200 MiB of memory and ~0.5 s, which a
baseline run, its evaluation or ``aubench predict`` with a small network should not pay).
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from timm.models.xception import Xception
from torch import nn
from torchvision.models.inception import Inception3
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import cfgs, make_layers


def gray_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Repeat a 1-channel batch to 3 channels (a view: no copy until a layer needs one; 3 channels pass as they are)."""
    return x.expand(-1, 3, -1, -1)


class GapNet(nn.Module):
    """A torchvision feature extractor, then global average pooling and one Linear layer."""

    def __init__(self, features: nn.Module, num_features: int, num_outputs: int, final_relu: bool = False):
        super().__init__()
        self.features = features
        # DenseNet's torchvision forward applies a ReLU after its last BatchNorm; keep it.
        self.final_relu = nn.ReLU(inplace=True) if final_relu else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(num_features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final_relu(self.features(gray_to_rgb(x)))
        return self.classifier(self.pool(x).flatten(1))


class ResNet50(ResNet):
    """ResNet-50 in either stride placement (``layout``).

    ``v1`` (the default, the paper's Keras ResNet50): stride 2 on the first 1x1 conv of a downsampling block, the
    3x3 at stride 1; the paper's 1420M FLOPs match it. ``v1.5`` (torchvision's ResNet, the layout its ImageNet
    weights were trained in): stride 2 on the 3x3, about 6 % more FLOPs at this input size. The weights have the
    same shapes in both, so a file loads into either; features match only in the layout they were trained in.
    """

    def __init__(self, num_outputs: int, layout: str = "v1"):
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_outputs)
        if layout == "v1":
            for layer in (self.layer2, self.layer3, self.layer4):
                block = layer[0]
                block.conv1.stride = (2, 2)
                block.conv2.stride = (1, 1)
        elif layout != "v1.5":
            raise ValueError(f"unknown ResNet50 layout {layout!r}")
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(gray_to_rgb(x))


class InceptionV3(Inception3):
    def __init__(self, num_outputs: int):
        super().__init__(num_classes=num_outputs, aux_logits=False, transform_input=False, init_weights=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(gray_to_rgb(x))


class LegacyXception(Xception):
    """timm's ``legacy_xception`` (the Keras port the paper's figures match; not the aligned xception41/65/71)."""

    def __init__(self, num_outputs: int):
        super().__init__(num_classes=num_outputs, in_chans=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(gray_to_rgb(x))


def mobilenetv2_features() -> nn.Module:
    return tvm.mobilenet_v2().features


def densenet121_features() -> nn.Module:
    return tvm.densenet121().features


def vgg16_features() -> nn.Sequential:
    # torchvision's own VGG-16 ("D") conv stack, without building its 120M-parameter classifier only to drop it.
    features = make_layers(cfgs["D"], batch_norm=False)
    for module in features.modules():  # the init torchvision's VGG applies to its convs
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features
