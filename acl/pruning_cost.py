"""What removing one kernel of a layer costs the model: its share of the parameters plus its share of the multiply-adds.

Shared by the ``saliency-per-cost`` ranking (``acl.pruning_rank``) and the ``channel-per-cost`` one
(``acl.pruning_classes``); its own module so that neither imports the other.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["cost_shares"]


def cost_shares(kernels: dict[str, Tensor], macs: dict[str, float], params: dict[str, float]) -> dict[str, float]:
    """Per layer: one kernel's share of all ranked kernels' parameters plus its share of their multiply-adds."""
    total_p = sum(params[n] * s.numel() for n, s in kernels.items())
    total_m = sum(macs[n] * s.numel() for n, s in kernels.items())
    return {n: params[n] / total_p + macs[n] / total_m for n in kernels}
