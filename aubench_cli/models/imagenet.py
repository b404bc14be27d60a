"""The networks pretrained on object or face recognition, built from torchvision and timm.

This file registers them; the modules themselves live in ``imagenet_nets``, imported when one is built, so
that listing networks or building the baseline never imports torchvision or timm.

They take 3 channels (the paper's parameter counts include 3-channel first convolutions), so each repeats the
grayscale crop to 3 channels at the top of its ``forward``. Module names are the libraries' own, so the
libraries' pretrained state dicts load unchanged; only the classifier differs (global average pool, then one
Linear layer with one output per AU, as the paper's "replace the last fully-connected layer").
"""

from __future__ import annotations

from torch import nn

from aubench_cli.models.registry import register_model


@register_model(title="MobileNetV2", column=2, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:MobileNet_V2_Weights.IMAGENET1K_V1")
def mobilenetv2(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.GapNet(nets.mobilenetv2_features(), 1280, num_outputs)


@register_model(title="InceptionV3", column=3, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="torchvision:Inception_V3_Weights.IMAGENET1K_V1")
def inceptionv3(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.InceptionV3(num_outputs)


@register_model(title="DenseNet121", column=5, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:DenseNet121_Weights.IMAGENET1K_V1")
def densenet121(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.GapNet(nets.densenet121_features(), 1024, num_outputs, final_relu=True)


@register_model(title="ResNet50", column=7, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="torchvision:ResNet50_Weights.IMAGENET1K_V1",
                layouts=("v1", "v1.5"), pretrained_layout="v1.5")
def resnet50(num_outputs: int, input_size: int = 96, layout: str = "v1") -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.ResNet50(num_outputs, layout)


@register_model(title="Xception", column=8, in_chans=3, from_scratch=False, classifier="fc",
                pretrained_source="timm:legacy_xception.tf_in1k")
def xception(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.LegacyXception(num_outputs)


@register_model(title="FaceVGG", column=10, in_chans=3, from_scratch=False, classifier="classifier",
                local_weights_note="VGG-Face weights are not in any library registry: convert the authors' release "
                "to a state dict with torchvision's VGG-16 'features.N' names and pass it with --weights")
def facevgg(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    # VGG-Face (Parkhi et al. 2015) is the VGG-16 conv stack trained on faces: same build, other weights.
    return nets.GapNet(nets.vgg16_features(), 512, num_outputs)


@register_model(title="VGG-16", column=11, in_chans=3, from_scratch=False, classifier="classifier",
                pretrained_source="torchvision:VGG16_Weights.IMAGENET1K_V1")
def vgg16(num_outputs: int, input_size: int = 96) -> nn.Module:
    from aubench_cli.models import imagenet_nets as nets

    return nets.GapNet(nets.vgg16_features(), 512, num_outputs)
