"""The two networks the paper trained from random init: its baseline CNN and the EmoNets face network.

Baseline (Section II-B): 4 x [conv3x3 -> ReLU -> maxpool 2x2] with 32, 32, 64, 64 filters, then a 256-unit
fully-connected layer and one output per AU. EmoNets (Kahou et al.): the original cuda-convnet configuration was
never published; this is the reconstruction that reproduces the paper's params, FLOPs and memory exactly
(three conv5x5 + ReLU + maxpool stages, 64-64-128 filters, straight into the output layer).
"""

from __future__ import annotations

import torch
from torch import nn

from aubench_cli.models.registry import register_model


def _conv_stage(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    # conv -> ReLU -> maxpool, computed as conv -> maxpool -> ReLU: max and ReLU commute (both monotonic), so
    # outputs and gradients are identical, and the ReLU and its backward touch a quarter of the elements. On a
    # 2-core CPU that makes a baseline training step ~12 % faster (docs/performance.md). Parameter names are
    # unchanged (convs at features.0, .3, .6, .9).
    return [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.MaxPool2d(2), nn.ReLU(inplace=True)]


class BaselineCNN(nn.Module):
    def __init__(self, num_outputs: int, input_size: int = 96):
        super().__init__()
        self.features = nn.Sequential(
            *_conv_stage(1, 32, 3), *_conv_stage(32, 32, 3), *_conv_stage(32, 64, 3), *_conv_stage(64, 64, 3)
        )
        side = input_size // 16  # four 2x2 pools: 96 -> 6
        self.fc1 = nn.Linear(64 * side * side, 256)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(256, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)
        return self.classifier(self.relu(self.fc1(x)))


class EmoNetsCNN(nn.Module):
    def __init__(self, num_outputs: int, input_size: int = 96):
        super().__init__()
        self.features = nn.Sequential(*_conv_stage(1, 64, 5), *_conv_stage(64, 64, 5), *_conv_stage(64, 128, 5))
        side = input_size // 8  # three 2x2 pools: 96 -> 12
        self.classifier = nn.Linear(128 * side * side, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register_model(title="Baseline", column=1, in_chans=1, from_scratch=True, classifier="classifier")
def baseline(num_outputs: int, input_size: int = 96) -> nn.Module:
    return BaselineCNN(num_outputs, input_size)


@register_model(title="EmoNets", column=4, in_chans=1, from_scratch=True, classifier="classifier")
def emonets(num_outputs: int, input_size: int = 96) -> nn.Module:
    return EmoNetsCNN(num_outputs, input_size)
