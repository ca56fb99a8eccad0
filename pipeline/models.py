"""Architectures of the paper's AnaNN experiments (section 4.2, Fig. 5), for 1x32x32 inputs.

``build(arch, spec)`` makes the plain CNN and converts every Conv2d into an ACL with
``spec`` (a ratio spec serves every layer); ``spec=None`` keeps the plain CNN.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

import acl

__all__ = ["ARCHS", "DEFAULT_SPEC", "build"]

DEFAULT_SPEC = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
"""exp3's arrangement in ratio form (Table 1; the AnaNN experiments use it for every ACL)."""


class LeNet(nn.Module):
    """LeNet-5 (Fig. 5a): two 5x5 convolutions, max-pooling, three linear layers."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = x.flatten(1)
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


class CNN4(nn.Module):
    """The four-convolution network of Fig. 5b: 3x3 convolutions, two max-pools, one linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        self.fc = nn.Linear(64 * 8 * 8, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv2(self.act(self.conv1(x)))))
        x = self.pool(self.act(self.conv4(self.act(self.conv3(x)))))
        return self.fc(x.flatten(1))


ARCHS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet, "cnn4": CNN4}


def build(arch: str, spec: str | None = DEFAULT_SPEC, *, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The AnaNN version of ``arch`` (every Conv2d an ACL with ``spec``), or the plain CNN when ``spec`` is None.

    Raises:
        ValueError: unknown arch, or a spec that does not fit a layer (named).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; expected one of {', '.join(ARCHS)}")
    net = ARCHS[arch](in_channels=in_channels, num_classes=num_classes)
    if spec is None:
        return net
    return acl.convert(net, spec, layers="all", inplace=True)
