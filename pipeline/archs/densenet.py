"""DenseNet-BC (Huang et al. 2017) in torchvision's layout, plus a small CIFAR variant.

Every layer of a dense block sees the concatenation of all earlier feature maps of
the block and adds ``growth_rate`` new ones. Layers are *pre-activation*
(BatchNorm -> ReLU -> Conv), so an ACL here convolves normalised inputs: a 1x1
bottleneck to ``bn_size * growth_rate`` channels, then a 3x3 to ``growth_rate``.
Transitions (BN -> ReLU -> 1x1 conv -> 2x2 average pool) halve channels and
resolution. Module names follow ``torchvision.models.densenet``
(``features.denseblock1.denselayer1.conv1``, ``features.transition1.conv``,
``features.norm5``, ``classifier``), so torchvision state dicts load into
``densenet121`` with ``strict=True``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
from torch import nn

__all__ = ["DenseNet", "densenet121", "densenet_cifar"]


class _DenseLayer(nn.Module):
    def __init__(self, num_input_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(num_input_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(num_input_features, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # relu1 is in place on norm1's output, never on x itself (which later layers still read).
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, num_input_features: int, bn_size: int, growth_rate: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(
                f"denselayer{i + 1}", _DenseLayer(num_input_features + i * growth_rate, growth_rate, bn_size)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision concatenates a list inside every layer; growing one tensor is the
        # same computation and keeps the forward a plain tensor graph for ONNX export.
        for layer in self.values():
            x = torch.cat([x, layer(x)], 1)
        return x


class _Transition(nn.Sequential):
    def __init__(self, num_input_features: int, num_output_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(num_input_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(num_input_features, num_output_features, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """DenseNet-BC: stem, dense blocks separated by transitions, BN, global pool, linear.

    Args:
        growth_rate: channels each dense layer adds.
        block_config: dense layers per block.
        num_init_features: channels of the stem convolution.
        bn_size: bottleneck width as a multiple of ``growth_rate``.
        num_classes: classifier outputs.
        in_channels: input image channels.
        stem: ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool) or
            ``"cifar"`` (one 3x3 stride-1 conv: the first dense layer normalises it).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: tuple[int, ...] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: Literal["imagenet", "cifar"] = "imagenet",
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            head = [
                ("conv0", nn.Conv2d(in_channels, num_init_features, 7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
        elif stem == "cifar":
            head = [("conv0", nn.Conv2d(in_channels, num_init_features, 3, padding=1, bias=False))]
        else:
            raise ValueError(f"unknown DenseNet stem {stem!r}; expected 'imagenet' or 'cifar'")
        self.features = nn.Sequential(OrderedDict(head))
        n = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(f"denseblock{i + 1}", _DenseBlock(num_layers, n, bn_size, growth_rate))
            n += num_layers * growth_rate
            if i != len(block_config) - 1:
                self.features.add_module(f"transition{i + 1}", _Transition(n, n // 2))  # compression 0.5
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.classifier = nn.Linear(n, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu(self.features(x))
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


def densenet121(*, num_classes: int = 1000, in_channels: int = 3) -> DenseNet:
    """DenseNet-121 (torchvision's ``densenet121``: 7,978,856 parameters at 1000 classes)."""
    return DenseNet(32, (6, 12, 24, 16), 64, num_classes=num_classes, in_channels=in_channels)


def densenet_cifar(*, num_classes: int = 10, in_channels: int = 3) -> DenseNet:
    """A small DenseNet-BC for 32x32 inputs: growth 12, three blocks of 6 layers, CIFAR stem.

    About 0.18 M parameters (close to the paper's DenseNet-BC of depth 40 for CIFAR),
    so that it trains in minutes on a CPU.
    """
    return DenseNet(12, (6, 6, 6), 24, num_classes=num_classes, in_channels=in_channels, stem="cifar")
