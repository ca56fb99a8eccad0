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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RANKINGS", "kernel_macs", "rank_scores"]

RANKINGS = ("saliency", "saliency-per-flop")
"""The paper's global Eq. 4 ranking, and saliency per multiply-add (our extension)."""


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


def rank_scores(kernels: dict[str, Tensor], rank: str, macs: dict[str, float] | None = None) -> dict[str, Tensor]:
    """The score each kernel is ranked by (lowest zeroed first): its saliency, or saliency / ``macs`` of its layer."""
    if rank not in RANKINGS:
        raise ValueError(f"ranking {rank!r}, expected one of {', '.join(RANKINGS)}")
    if rank == "saliency":
        return kernels
    if macs is None:
        raise ValueError("ranking 'saliency-per-flop' needs the kernels' multiply-adds, expected macs (kernel_macs)")
    return {n: s / macs[n] for n, s in kernels.items()}
