"""Round the channels a pruned convolution keeps up to a multiple of ``multiple`` (an option of ``acl.channel_prune``).

ONNX Runtime's CPU provider runs convolutions in a channel-blocked layout (NCHWc,
8 channels per block with AVX2, 16 with AVX-512) only when a convolution's channel
counts are multiples of the block; any other count falls back to a plain
convolution with layout reorders before and after it. A pruned model with 35 or 213
channels pays those reorders at every such layer. Keeping a removable channel is
always exact (the zeroed model computes it too; its constant then simply is not
folded), so this only moves the pruned model towards the zeroed one.
"""

from __future__ import annotations

from torch import fx, nn

from acl.channel_graph import ChannelGraph

__all__ = ["ALIGNED", "align_channels"]

ALIGNED = "rounds a convolution's channels up to a multiple of the runtime's block"


def align_channels(g: ChannelGraph, gm: fx.GraphModule, plan, multiple: int) -> None:
    """Take removed classes back into ``plan.kept`` until every convolution keeps a multiple of ``multiple``
    input and output channels (or all of them). Repeats until nothing changes: a class spans several layers."""
    if multiple <= 1:
        return
    values = [v for name, node in g.calls.items() if isinstance(gm.get_submodule(name), nn.Conv2d)
              for v in (g.inputs[node], node)]  # fmt: skip
    changed = True
    while changed:
        changed = False
        for value in values:
            roots = [g.cls(value, c) for c in range(g.channels[value])]
            removed = [r for r in dict.fromkeys(roots) if r in plan.removed]
            while (len(roots) - sum(r in plan.removed for r in roots)) % multiple and removed:
                root = removed.pop(0)
                plan.removed.discard(root)
                plan.kept[root] = ALIGNED
                changed = True
