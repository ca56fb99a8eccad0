"""Models for the serving, hot-swap and file-format tests: BatchNorm and residual connections, ACLs and 1x1 convs.

``small_resnet``: a Conv-BN-residual net small enough to export in seconds, every
kernel family in its ACLs, one strided block with a 1x1 projection shortcut (a
plain convolution: ``layers="all"`` converts spatial convolutions only).
``resnet18``: ``pipeline.archs``' ResNet-18 for 32x32 images, every 3x3 Conv an ACL.
Both get BatchNorm statistics measured on data and random affine parameters (a
fresh net's BatchNorm is the identity, which would hide folding mistakes).
"""

from __future__ import annotations

import torch
from torch import nn

import acl
from tests.conftest import trained_looking_bn

ALL_FAMILIES = "G0.2Lg0.1Lt0.1Tf0.15Ts0.1M0.05P0.3"


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layer1 = Block(16, 16)
        self.layer2 = Block(16, 32, stride=2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(self.stem(x))))


def small_resnet(seed: int = 0, image: tuple[int, int, int] = (3, 16, 16)) -> nn.Module:
    torch.manual_seed(seed)
    net = acl.convert(SmallResNet(image[0]), ALL_FAMILIES, layers="all")
    return trained_looking_bn(net, image, seed)


def resnet18(seed: int = 0) -> nn.Module:
    from pipeline.archs import build

    torch.manual_seed(seed)
    return trained_looking_bn(build("resnet18_cifar", layers="all", in_channels=3), (3, 32, 32), seed)
