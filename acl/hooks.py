"""One forward pass with temporary hooks: the way the analyses read a model's inner tensors."""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["forward_with_hooks"]


def forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: Iterable[Any]) -> torch.Tensor:
    """``model(x)`` without gradients; the ``hooks`` (handles of registered hooks) are removed even if it raises.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> seen = []
        >>> handle = net[0].register_forward_hook(lambda m, args, out: seen.append(tuple(out.shape)))
        >>> _ = forward_with_hooks(net, torch.zeros(1, 1, 5, 5), [handle])
        >>> seen, len(net[0]._forward_hooks)
        ([(1, 2, 3, 3)], 0)
    """
    hooks = list(hooks)
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()
