"""The self-check's model: a small AnaNN with BatchNorm, residual, depthwise and 1x1 blocks.

Small enough to export and build in seconds, shaped like the models users deploy:
every ACL feeds a BatchNorm (the refit TensorRT must recompute after fusing it),
a residual ``Add``, a depthwise ACL and pointwise convolutions. BatchNorm statistics
are set away from identity, as after training, so a wrong fusion shows.
"""

from __future__ import annotations

from typing import Any

INPUT_SHAPE = (1, 3, 16, 16)
SPEC = "G0.3Lg0.1Lt0.1Tf0.1Ts0.1M0.05P0.25"


def selfcheck_net(seed: int = 0, *, batchnorm: bool = True) -> Any:
    """The AnaNN (eval mode); ``batchnorm=False``: the same without BatchNorm (plain refit by weight names)."""
    import torch
    from torch import nn

    import acl

    torch.manual_seed(seed)

    def bn(c: int) -> nn.Module:
        return nn.BatchNorm2d(c) if batchnorm else nn.Identity()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2, bias=not batchnorm), bn(16), nn.ReLU())
            self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), bn(16), nn.ReLU())
            self.pointwise = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), bn(16))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

        def forward(self, x: Any) -> Any:
            x = self.stem(x)
            return self.head(torch.relu(x + self.pointwise(self.depthwise(x))))

    net = acl.convert(Net(), SPEC, layers="all").eval()
    _trained_looking(net, seed)
    return net


def _trained_looking(net: Any, seed: int) -> None:
    """BatchNorm statistics and affine terms away from identity."""
    import torch

    g = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.weight.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
