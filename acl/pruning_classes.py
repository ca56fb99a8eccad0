"""Zero whole channel classes, ranked by saliency per cost: the ``channel-per-cost`` ranking (ours, not in the paper).

The paper ranks single kernels, and a channel goes only when every kernel that writes
or reads it happens to be zeroed: at 90 % on a trained ResNet-18 that mostly happens
in layer4, so the file shrinks but latency barely does. Here the unit is a channel
class of ``acl.channel_graph`` (the same channel through BatchNorm, activations,
pooling and additions): its kernels are the rows of the ranked (spatial) layers that
write it and the columns of those that read it. Zeroing them all leaves the channel
a constant or unread, so ``channel_prune`` removes it exactly. A class ranks by its
kernels' summed Eq. 4 saliency over their summed cost, each kernel's cost being its
share of the model's spatial parameters plus its share of the spatial multiply-adds
(as ``saliency-per-cost`` in ``acl.pruning_rank``).

Only classes that zeroing can remove are ranked: not pinned (model input or output,
an unknown op), and written by ranked layers only (a 1x1 shortcut that writes the
residual stream of layer2 to layer4 is not a spatial kernel, so it is never zeroed
and those stream channels stay). Classes are taken lowest score first while their new
kernels fit the budget of ``floor(p/100 * n)``; what is left of the budget goes to
single kernels by the paper's saliency ranking, so exactly as many kernels are zeroed
as with the other rankings. A layer that would lose every kernel keeps its most salient.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from acl.channel_graph import trace_channels
from acl.conversion import bake
from acl.pruning_cost import cost_shares
from acl.saliency import Saliency

__all__ = ["class_kernels", "zero_classes"]


def class_kernels(model: nn.Module, layers: list[str], example: Tensor) -> list[dict[str, Tensor]]:
    """The removable channel classes of ``model``, each as ``{layer: bool mask}`` of the ranked kernels it holds."""
    g, gm = trace_channels(bake(model).eval(), example[:1])
    ranked = set(layers)
    groups: dict[int, dict[str, Tensor]] = {}
    written, rows = set(), set()  # classes a non-ranked layer writes; classes a ranked layer writes
    for name, node in g.calls.items():
        m = gm.get_submodule(name)
        if isinstance(m, nn.BatchNorm2d):
            continue
        outs = {g.cls(node, c) for c in range(g.channels[node])}
        if name not in ranked:  # a 1x1 conv or Linear writes these: zeroing cannot make them constant
            written |= outs
            continue
        shape = (m.out_channels, m.in_channels // m.groups)
        for c in range(shape[0]):
            _mark(groups, g.cls(node, c), name, shape)[c, :] = True
        rows |= outs
        if m.groups == 1:
            src = g.inputs[node]
            for c in range(shape[1]):
                _mark(groups, g.cls(src, c), name, shape)[:, c] = True
    return [k for root, k in groups.items() if root in rows and root not in written and g.pinned(root) is None]


def _mark(groups: dict[int, dict[str, Tensor]], root: int, name: str, shape: tuple[int, int]) -> Tensor:
    return groups.setdefault(root, {}).setdefault(name, torch.zeros(shape, dtype=torch.bool))


def zero_classes(
    saliency: Saliency, percent: float, classes: list[dict[str, Tensor]], macs: dict[str, float],
    params: dict[str, float],
) -> tuple[dict[str, Tensor], list[str]]:  # fmt: skip
    """``zero_masks``' result for the ``channel-per-cost`` ranking: whole ``classes`` (``class_kernels``) first."""
    if not 0 <= percent < 100:
        raise ValueError(f"prune percent {percent}, expected 0 <= percent < 100")
    kernels = saliency.kernels
    cost = cost_shares(kernels, macs, params)
    budget = math.floor(percent / 100 * sum(s.numel() for s in kernels.values()))
    masks = {n: torch.zeros(s.shape, dtype=torch.bool) for n, s in kernels.items()}
    scores = [sum(float(kernels[n][m].sum()) for n, m in k.items()) / sum(cost[n] * int(m.sum()) for n, m in k.items())
              for k in classes]  # fmt: skip
    used = 0
    for i in sorted(range(len(classes)), key=lambda i: scores[i]):
        new = sum(int((m & ~masks[n]).sum()) for n, m in classes[i].items())
        if used + new <= budget:
            for n, m in classes[i].items():
                masks[n] |= m
            used += new
    _fill(kernels, masks, budget - used)
    return masks, _keep_one(kernels, masks)


def _fill(kernels: dict[str, Tensor], masks: dict[str, Tensor], count: int) -> None:
    """Zero ``count`` more kernels, the least salient not yet zeroed (the paper's ranking; ties in layer order)."""
    names = list(kernels)
    scores = torch.cat([kernels[n].flatten() for n in names])
    taken = torch.cat([masks[n].flatten() for n in names])
    order = torch.argsort(scores.masked_fill(taken, math.inf), stable=True)[: max(count, 0)]
    flat = taken.clone()
    flat[order] = True
    start = 0
    for n in names:
        masks[n] = flat[start : start + kernels[n].numel()].view(kernels[n].shape).clone()
        start += kernels[n].numel()


def _keep_one(kernels: dict[str, Tensor], masks: dict[str, Tensor]) -> list[str]:
    emptied = []
    for n, mask in masks.items():
        if bool(mask.all()):
            mask.view(-1)[int(kernels[n].flatten().argmax())] = False
            emptied.append(n)
    return emptied
