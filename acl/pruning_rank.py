"""How ``acl.zero_masks`` ranks spatial kernels: the paper's saliency, or our FLOP-aware extension.

``saliency`` (the default, ExplainFix Sec. 3.3): kernel ``j`` ranks by its Eq. 4
saliency ``w_j``, globally over all layers.

``saliency-per-flop`` (ours, not in the paper): kernel ``j`` of layer ``l`` ranks by
``w_j / macs_l``, where ``macs_l = kh * kw * Ho * Wo`` is the multiply-adds one kernel
costs per image at the layer's output size. Removing a kernel of a 32x32 layer saves
64 times what one of a 4x4 layer saves, so per unit of saliency lost it is the
cheaper one to remove. The paper's ranking removes mostly the parameter-heavy but
low-resolution layers (layer3, layer4 of a ResNet): a smaller file, but less latency
saved than parameters.

``saliency-per-cost`` (ours, not in the paper): kernel ``j`` of layer ``l`` ranks by
``w_j / (params_l / P + macs_l / M)``: its saliency over its share of the model's
spatial parameters (``params_l = kh * kw``, ``P`` their sum over every ranked kernel)
plus its share of the model's spatial multiply-adds (``M`` likewise). The first
share is what the static file loses, the second what latency loses, so it aims at
"smaller and faster" at once with no weight to tune: on a ResNet where every stage
holds about the same multiply-adds, a 4x4 layer4 kernel costs mostly parameters, a
32x32 layer1 kernel mostly multiply-adds (16 times the layer4 one's total cost, where
``saliency-per-flop`` says 64 and ``saliency`` 1).

``channel-per-cost`` (ours): whole channel classes by saliency per that cost, so that
the zeroed kernels are ones ``channel_prune`` removes (``acl.pruning_classes``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from acl.pruning_cost import cost_shares

__all__ = ["RANKINGS", "kernel_macs", "kernel_params", "rank_inputs", "rank_scores"]

RANKINGS = ("saliency", "saliency-per-flop", "saliency-per-cost", "channel-per-cost")
"""The paper's global Eq. 4 ranking; ours: saliency per multiply-add, per share of parameters plus multiply-adds, and
whole channel classes per that share."""


@torch.no_grad()
def kernel_macs(model: nn.Module, layers: list[str], example: Tensor) -> dict[str, float]:
    """Multiply-adds of one kernel of each layer in ``layers``, per image: ``kh * kw * Ho * Wo``.

    ``Ho, Wo`` are the layer's output size on one image of ``example`` (one forward
    of ``example[:1]`` with shape-recording hooks; the model is not changed).
    """
    sizes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returns None: a hook's return value would replace the output
            sizes.setdefault(name, tuple(output.shape[-2:]))

        return hook

    hooks = [model.get_submodule(n).register_forward_hook(record(n)) for n in layers]
    was_training = model.training
    try:
        model.eval()(example[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    missing = [n for n in layers if n not in sizes]
    if missing:
        raise ValueError(f"layer {missing[0]!r} is not called by the model's forward, expected every ranked layer")
    out = {}
    for n in layers:
        kh, kw = model.get_submodule(n).kernel_size
        out[n] = float(kh * kw * sizes[n][0] * sizes[n][1])
    return out


def kernel_params(model: nn.Module, layers: list[str]) -> dict[str, float]:
    """Parameters of one kernel of each layer in ``layers``: ``kh * kw``."""
    out = {}
    for n in layers:
        kh, kw = model.get_submodule(n).kernel_size
        out[n] = float(kh * kw)
    return out


def rank_inputs(model: nn.Module, layers: list[str], example: Tensor, rank: str) -> dict:
    """What ``acl.zero_masks`` needs besides the saliency for ``rank``: ``macs``, ``params``, ``classes``."""
    if rank == "saliency":
        return {}
    out = {"macs": kernel_macs(model, layers, example), "params": kernel_params(model, layers)}
    if rank == "channel-per-cost":
        from acl.pruning_classes import class_kernels

        out["classes"] = class_kernels(model, layers, example)
    return out


def rank_scores(
    kernels: dict[str, Tensor], rank: str, macs: dict[str, float] | None = None, params: dict[str, float] | None = None
) -> dict[str, Tensor]:
    """The score each kernel is ranked by (lowest zeroed first): its saliency, saliency / ``macs`` of its layer, or
    saliency / (its layer's share of the parameters + share of the multiply-adds) per kernel."""
    if rank not in RANKINGS:
        raise ValueError(f"ranking {rank!r}, expected one of {', '.join(RANKINGS)}")
    if rank == "saliency":
        return kernels
    if rank == "channel-per-cost":
        raise ValueError(f"ranking {rank!r} ranks channel classes, expected classes, macs and params (rank_inputs)")
    if macs is None:
        raise ValueError(f"ranking {rank!r} needs the kernels' multiply-adds, expected macs (kernel_macs)")
    if rank == "saliency-per-flop":
        return {n: s / macs[n] for n, s in kernels.items()}
    if params is None:
        raise ValueError(f"ranking {rank!r} needs the kernels' parameters, expected params (kernel_params)")
    cost = cost_shares(kernels, macs, params)
    return {n: s / cost[n] for n, s in kernels.items()}
