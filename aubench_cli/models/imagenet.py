"""The networks pretrained on object or face recognition, built from torchvision and timm.

They take 3 channels (the paper's parameter counts include 3-channel first convolutions), so each repeats the
grayscale crop to 3 channels at the top of its ``forward``. Module names are the libraries' own, so the
libraries' pretrained state dicts load unchanged; only the classifier differs (global average pool, then one
Linear layer with one output per AU, as the paper's "replace the last fully-connected layer").
"""

from __future__ import annotations

import torch
import torchvision.models as tvm
from timm.models.xception import Xception
from torch import nn
from torchvision.models.inception import Inception3
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import cfgs, make_layers

from aubench_cli.models.registry import register_model


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


@register_model(title="MobileNetV2", column=2, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:MobileNet_V2_Weights.IMAGENET1K_V1")
def mobilenetv2(num_outputs: int, input_size: int = 96) -> nn.Module:
    return GapNet(tvm.mobilenet_v2().features, 1280, num_outputs)


@register_model(title="InceptionV3", column=3, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="torchvision:Inception_V3_Weights.IMAGENET1K_V1")
def inceptionv3(num_outputs: int, input_size: int = 96) -> nn.Module:
    return InceptionV3(num_outputs)


@register_model(title="DenseNet121", column=5, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:DenseNet121_Weights.IMAGENET1K_V1")
def densenet121(num_outputs: int, input_size: int = 96) -> nn.Module:
    return GapNet(tvm.densenet121().features, 1024, num_outputs, final_relu=True)


@register_model(title="ResNet50", column=7, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="torchvision:ResNet50_Weights.IMAGENET1K_V1",
                layouts=("v1", "v1.5"), pretrained_layout="v1.5")
def resnet50(num_outputs: int, input_size: int = 96, layout: str = "v1") -> nn.Module:
    return ResNet50(num_outputs, layout)


@register_model(title="Xception", column=8, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="timm:legacy_xception.tf_in1k")
def xception(num_outputs: int, input_size: int = 96) -> nn.Module:
    return LegacyXception(num_outputs)


@register_model(title="FaceVGG", column=10, in_chans=3, from_scratch=False, classifier="classifier",
                local_weights_note="VGG-Face weights are not in any library registry: convert the authors' release "
                "to a state dict with torchvision's VGG-16 'features.N' names and pass it with --weights")
def facevgg(num_outputs: int, input_size: int = 96) -> nn.Module:
    # VGG-Face (Parkhi et al. 2015) is the VGG-16 conv stack trained on faces: same build, other weights.
    return GapNet(_vgg16_features(), 512, num_outputs)


@register_model(title="VGG-16", column=11, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:VGG16_Weights.IMAGENET1K_V1")
def vgg16(num_outputs: int, input_size: int = 96) -> nn.Module:
    return GapNet(_vgg16_features(), 512, num_outputs)


def _vgg16_features() -> nn.Sequential:
    # torchvision's own VGG-16 ("D") conv stack, without building its 120M-parameter classifier only to drop it.
    features = make_layers(cfgs["D"], batch_norm=False)
    for module in features.modules():  # the init torchvision's VGG applies to its convs
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return features
