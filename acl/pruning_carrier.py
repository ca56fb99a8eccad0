"""Exact folding of constant channels into a zero-padded reader: one kept *carrier* channel per value.

A channel holding a constant ``v_c`` contributes ``v_c * W[:, c]`` summed over the
kernel taps that fall inside the image: the full kernel sum inside, a partial sum
at the border, because zero padding pads with 0, not with ``v_c``. A plain bias
cannot hold that. One constant channel ``k`` of the same value, kept, has exactly
the same border pattern, so ``W[:, k] += (v_c / v_k) * W[:, c]`` moves channel
``c``'s contribution onto it exactly, at every position and for any input size.
Every other constant channel of that value then goes, at the price of one channel
per value (``k`` has the largest ``|v_k|``, so no ratio exceeds 1). A constant
that is exactly zero needs no carrier: it is what the padding holds.
"""

from __future__ import annotations

from torch import Tensor, fx

__all__ = ["CARRIER", "choose_carriers", "column_deltas"]

CARRIER = "carries the constants of removed channels into a zero-padded convolution"


def _value(values: dict[str, Tensor], node: str, c: int) -> Tensor:
    return values[node][0, c].flatten()[0]


def choose_carriers(plan, candidate_folds: dict[int, list], values: dict[str, Tensor], cls) -> dict[str, int]:
    """Per value with padded folds of removed classes, its carrier channel; the carrier's class is kept."""
    padded: dict[str, set[int]] = {}
    for root in plan.removed:
        for _, node, c, through_padding in candidate_folds[root]:
            if through_padding:
                padded.setdefault(node, set()).add(c)
    carriers = {}
    for node in sorted(padded):
        k = max(sorted(padded[node]), key=lambda c: float(_value(values, node, c).abs()))
        carriers[node] = k
        root = cls(node, k)
        if root in plan.removed:
            plan.removed.discard(root)
            plan.kept[root] = CARRIER
    return carriers


def column_deltas(plan, gm: fx.GraphModule, values: dict[str, Tensor]) -> dict[str, dict[int, Tensor]]:
    """Per padded reader, ``{carrier input channel: [Co, kh, kw] to add to its weights}``."""
    out: dict[str, dict[int, Tensor]] = {}
    for module, node, c, through_padding in plan.folds:
        if not through_padding:
            continue
        k = plan.carriers[node]
        w = gm.get_submodule(module).weight.detach()
        ratio = _value(values, node, c) / _value(values, node, k)
        per = out.setdefault(module, {})
        per[k] = per.get(k, 0) + ratio * w[:, c]
    return out
