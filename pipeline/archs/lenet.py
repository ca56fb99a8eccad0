"""The paper's small AnaNN networks (section 4.2, Fig. 5) for 32x32 inputs.

Both take ``in_channels``/``num_classes`` like every factory of ``pipeline.archs``;
their defaults are the paper's (1-channel digits, 10 classes).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CNN4", "LeNet", "cnn4", "lenet"]


class LeNet(nn.Module):
    """LeNet-5 (Fig. 5a): two 5x5 convolutions, max-pooling, three linear layers.

    Args:
        in_channels: input image channels.
        num_classes: classifier outputs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        # 32 -> 28 -> 14 -> 10 -> 5: the linear head is sized for 32x32 inputs.
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = x.flatten(1)
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class CNN4(nn.Module):
    """The four-convolution network of Fig. 5b: 3x3 convolutions, two max-pools, one linear.

    Args:
        in_channels: input image channels.
        num_classes: classifier outputs.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        # Two 2x pools on 32x32 inputs leave 8x8 maps.
        self.fc = nn.Linear(64 * 8 * 8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv2(self.act(self.conv1(x)))))
        x = self.pool(self.act(self.conv4(self.act(self.conv3(x)))))
        return self.fc(x.flatten(1))


def lenet(*, num_classes: int = 10, in_channels: int = 1) -> LeNet:
    """LeNet-5 for ``in_channels`` x 32 x 32 inputs."""
    return LeNet(in_channels=in_channels, num_classes=num_classes)


def cnn4(*, num_classes: int = 10, in_channels: int = 1) -> CNN4:
    """The paper's four-convolution CNN for ``in_channels`` x 32 x 32 inputs."""
    return CNN4(in_channels=in_channels, num_classes=num_classes)
