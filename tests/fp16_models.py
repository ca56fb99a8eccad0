"""Models made to overflow FP16, for the FP16 tests (factories for ``--model tests.fp16_models:<name>`` too)."""

from __future__ import annotations

import torch
from torch import nn

WEIGHT_MAX = 2.3e5  # a 3x3 convolution whose outputs reach ~7.9e5 on the digits


def overflow_net(
    num_classes: int = 10, in_channels: int = 1, *, weight_max: float = WEIGHT_MAX, normalised: bool = True
) -> nn.Module:
    """A 3x3 convolution with weights up to ``weight_max``, BatchNorm, ReLU, mean and a linear head.

    ``normalised``: BatchNorm's running statistics (measured on standard normal
    images) bring the convolution's outputs back to about 1, as training would; else
    they are the identity and the outputs stay large after BatchNorm too.
    """
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(in_channels, 4, 3, padding=1)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        w = torch.randn(conv.weight.shape, generator=g)
        conv.weight.copy_(w * (weight_max / w.abs().max()))
        conv.bias.zero_()
        if normalised:
            y = conv(torch.randn(64, in_channels, 32, 32, generator=g))
            bn.running_mean.copy_(y.mean((0, 2, 3)))
            bn.running_var.copy_(y.var((0, 2, 3)))
    head = nn.Linear(4, num_classes)
    return nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def overflowing_resnet(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """resnet18_cifar with trained-looking BatchNorm and two convolutions made to overflow FP16.

    ``layer2.0.conv1`` is scaled by 3e4 and its BatchNorm's statistics with it (a
    file that keeps BatchNorm apart overflows, TensorRT's folded form does not);
    ``layer4.1.conv2`` is scaled by 1e5 alone (it overflows in every form).
    """
    from pipeline.archs import create
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(0)
    net = create("resnet18_cifar", in_channels=in_channels, num_classes=num_classes)
    net = trained_looking_bn(net, (in_channels, 32, 32))
    with torch.no_grad():
        net.layer2[0].conv1.weight.mul_(3e4)
        net.layer2[0].bn1.running_mean.mul_(3e4)
        net.layer2[0].bn1.running_var.mul_(9e8)
        net.layer4[1].conv2.weight.mul_(1e5)
    return net


def overflowing_blocks(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """``overflowing_resnet``'s two cases in the smallest net of the built-in ResNet's blocks.

    ``1.conv1`` (``layer2.0.conv1`` there) is scaled by 1e5 with its BatchNorm's
    statistics (only a file that keeps BatchNorm apart overflows); ``2.conv2``
    (``layer4.1.conv2``) by 1e5 alone (it overflows in every form). ``2.conv2`` has
    72 x 72 kernels, more than a kernel mosaic charts, as ``layer4.1.conv2`` has.
    """
    from pipeline.archs.calibrate import trained_looking_bn
    from pipeline.archs.resnet import BasicBlock

    def down(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        BasicBlock(16, 32, 2, down(16, 32)),
        BasicBlock(32, 72, 2, down(32, 72)),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(72, num_classes)),
    )
    net = trained_looking_bn(net, (in_channels, 32, 32))
    with torch.no_grad():
        net[1].conv1.weight.mul_(1e5)  # 3e4 there: this conv sums fewer inputs
        net[1].bn1.running_mean.mul_(1e5)
        net[1].bn1.running_var.mul_(1e10)
        net[2].conv2.weight.mul_(1e5)
    return net
