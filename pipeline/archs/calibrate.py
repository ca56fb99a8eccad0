"""BatchNorm statistics that look trained, for untrained nets in tests and benchmarks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["trained_looking_bn"]


def trained_looking_bn(model: nn.Module, image: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Measure BatchNorm running statistics on random data, draw random affine parameters; eval mode.

    A fresh net's statistics are the identity, which hides BatchNorm-folding
    mistakes; made-up statistics blow a deep untrained net up to inf; measured ones
    keep its activations finite, as training does.

    Args:
        model: modified in place and returned.
        image: ``(C, H, W)`` of one input.
        seed: seeds the data and the affine parameters.
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            m.momentum = None  # cumulative average over the calibration batches
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, *image, generator=g))
    return model.eval()
