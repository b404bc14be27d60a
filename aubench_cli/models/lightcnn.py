"""LightCNN-9 and LightCNN-29, version 1 (Wu et al., 2018), as the paper used them.

Built with the module names of the authors' official PyTorch code, so their released checkpoints load with
``--weights`` (their ``module.`` prefix is stripped by the loader; the fully connected layer after the last pool,
whose width depends on the input size, keeps its init and is reported as re-initialised). The building block is the max-feature-map
(MFM): a convolution (or linear layer) to 2c channels followed by the element-wise max of its two halves. Pools
are 2x2 with ``ceil_mode``; at 96x96 the last map is 6x6x128, so the MFM fully-connected layer takes 4608 inputs
(the official 128x128 models take 8x8x128). LightCNN-29 v2 (plain fc, avg+max pooling) is a different network.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aubench_cli.models.registry import register_model

_LIGHTCNN_NOTE = "LightCNN weights exist only as the authors' released checkpoints: pass the file with --weights"


class mfm(nn.Module):  # noqa: N801  (the official code's name, kept so checkpoints load)
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, type: int = 1):  # noqa: A002
        super().__init__()
        self.out_channels = out_channels
        if type == 1:
            self.filter = nn.Conv2d(in_channels, 2 * out_channels, kernel_size, stride, padding)
        else:
            self.filter = nn.Linear(in_channels, 2 * out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.filter(x), self.out_channels, 1)
        return torch.max(a, b)


class group(nn.Module):  # noqa: N801
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv_a = mfm(in_channels, in_channels, 1, 1, 0)
        self.conv = mfm(in_channels, out_channels, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_a(x))


class resblock(nn.Module):  # noqa: N801
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = mfm(in_channels, out_channels)
        self.conv2 = mfm(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x)) + x


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


def _last_side(input_size: int) -> int:
    side = input_size
    for _ in range(4):  # four ceil-mode 2x2 pools
        side = math.ceil(side / 2)
    return side


class LightCNN9(nn.Module):
    def __init__(self, num_outputs: int, input_size: int = 96):
        super().__init__()
        self.features = nn.Sequential(
            mfm(1, 48, 5, 1, 2), _pool(),
            group(48, 96), _pool(),
            group(96, 192), _pool(),
            group(192, 128), group(128, 128), _pool(),
        )
        self.fc1 = mfm(128 * _last_side(input_size) ** 2, 256, type=0)
        self.dropout = nn.Dropout(0.5)  # the official F.dropout, held as a module so the trainer can see it
        self.fc2 = nn.Linear(256, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc1(self.features(x).flatten(1))
        return self.fc2(self.dropout(x))


class LightCNN29(nn.Module):
    def __init__(self, num_outputs: int, input_size: int = 96, layers: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        self.conv1 = mfm(1, 48, 5, 1, 2)
        self.pool1 = _pool()
        self.block1 = self._make_layer(layers[0], 48)
        self.group1 = group(48, 96)
        self.pool2 = _pool()
        self.block2 = self._make_layer(layers[1], 96)
        self.group2 = group(96, 192)
        self.pool3 = _pool()
        self.block3 = self._make_layer(layers[2], 192)
        self.group3 = group(192, 128)
        self.block4 = self._make_layer(layers[3], 128)
        self.group4 = group(128, 128)
        self.pool4 = _pool()
        self.fc = mfm(128 * _last_side(input_size) ** 2, 256, type=0)
        self.dropout = nn.Dropout(0.5)  # the official F.dropout, held as a module so the trainer can see it
        self.fc2 = nn.Linear(256, num_outputs)

    @staticmethod
    def _make_layer(num_blocks: int, channels: int) -> nn.Sequential:
        return nn.Sequential(*[resblock(channels, channels) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.group1(self.block1(x)))
        x = self.pool3(self.group2(self.block2(x)))
        x = self.group3(self.block3(x))
        x = self.pool4(self.group4(self.block4(x)))
        x = self.fc(x.flatten(1))
        return self.fc2(self.dropout(x))


# fc1 / fc take the last feature map flattened, so their input width depends on the input size (8x8x128 at the
# authors' 128x128, 6x6x128 at 96x96): a checkpoint from another size loads all else and keeps their init.
@register_model(title="LightCNN-9", column=6, in_chans=1, from_scratch=False, classifier="fc2",
                local_weights_note=_LIGHTCNN_NOTE, size_dependent=("fc1",))
def lightcnn9(num_outputs: int, input_size: int = 96) -> nn.Module:
    return LightCNN9(num_outputs, input_size)


@register_model(title="LightCNN-29", column=9, in_chans=1, from_scratch=False, classifier="fc2",
                local_weights_note=_LIGHTCNN_NOTE, size_dependent=("fc",))
def lightcnn29(num_outputs: int, input_size: int = 96) -> nn.Module:
    return LightCNN29(num_outputs, input_size)
