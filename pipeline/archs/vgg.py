"""VGG-11 with batch normalisation (Simonyan and Zisserman 2015, config "A") in torchvision's layout.

Unlike ResNet, VGG's convolutions keep their bias before BatchNorm (torchvision
does), so state dicts load with ``strict=True``. The adaptive average pool to 7x7
makes any input of at least 32x32 work: smaller maps are repeated up to 7x7, so
CIFAR-sized images run through the unchanged 25088-input classifier.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "vgg11_bn"]

CFG_A = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
"""Config "A" (VGG-11): channels of each 3x3 convolution, ``"M"`` a 2x2 max-pool."""


class VGG(nn.Module):
    """VGG with BatchNorm: ``features`` (conv-BN-ReLU and max-pools), 7x7 pool, three linear layers.

    Args:
        cfg: channel list as ``CFG_A``.
        num_classes: classifier outputs.
        in_channels: input image channels.
        dropout: dropout between the linear layers.
    """

    def __init__(self, cfg=CFG_A, *, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg11_bn(*, num_classes: int = 1000, in_channels: int = 3) -> VGG:
    """VGG-11 with BatchNorm (torchvision's ``vgg11_bn``: 132,868,840 parameters at 1000 classes)."""
    return VGG(CFG_A, num_classes=num_classes, in_channels=in_channels)
