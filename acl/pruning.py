"""ChannelPrune (ExplainFix, Gaudio et al., Sec. 3.3): zero the least salient spatial kernels, rebuild smaller modules.

1. ``zero_masks``: rank every spatial kernel by its saliency (``acl.kernel_saliency``)
   globally (or, our extension, by saliency per multiply-add: ``acl.pruning_rank``)
   and zero the ``floor(p/100 * n)`` lowest-ranked ones, keeping at least
   one kernel per layer (the layers where the ranking would have emptied it are
   listed).
2. ``channel_prune``: on the zeroed model's channel graph (``acl.channel_graph``),
   remove a channel class when every op that mixes channels reading it either
   has all-zero weights for it, or reads a constant (a removed output's bias and
   BatchNorm shift, through ReLU and pooling) without zero padding, so that the
   constant moves exactly into the reader's bias. Anything else is kept, and the
   result says what and why. The modules are *rebuilt* smaller (Conv2d, ACL,
   BatchNorm2d, Linear, depthwise ``groups``): no mask, no gather.
   This *zero form* holds ACLs baked, since an analytic kernel cannot be zero; it
   computes exactly what the zeroed model computes.
3. ``fill_zero`` (FillZero): the model to fine-tune and deploy. Each kernel still
   zero gets a new draw: Kaiming-uniform for plain kernels, new random AKPs of its
   own family for an analytic one, a new draw of its family for a fixed one.

An ACL keeps its spec for what remains: its kept kernels in mosaic order, each
with its own family, runs of one family merged into a segment, so the spec keeps
the original's segment order and at most its number of segments (``G4P4`` on
2x4 with output 0 removed becomes ``(2x3)G2P4``; with input 1 removed, ``(1x4)G2P2``).
An analytic segment keeps the AKP rows of its kept kernels, a Plain or fixed
segment the kernels. (Keeping the zeroed kernels as zeros in the ACL would split
its spec at every zeroed kernel: 10^5 segments for ResNet-18 at 90 %.)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.channel_graph import ChannelGraph, trace_channels
from acl.conversion import bake
from acl.pruning_classes import zero_classes
from acl.pruning_modules import (
    rebuild_acl,
    rebuild_bn,
    rebuild_conv,
    rebuild_linear,
    redraw_acl_kernels,
    redraw_conv_kernels,
)
from acl.pruning_plan import Plan, plan_removal
from acl.pruning_rank import rank_scores
from acl.saliency import Saliency

__all__ = ["PruneResult", "channel_prune", "fill_zero", "zero_masks", "zeroed_model"]


def zero_masks(
    saliency: Saliency,
    percent: float,
    rank: str = "saliency",
    macs: dict[str, float] | None = None,
    params: dict[str, float] | None = None,
    classes: list[dict[str, Tensor]] | None = None,
) -> tuple[dict[str, Tensor], list[str]]:
    """``{layer: bool [Co, Ci/groups]}`` of the kernels to zero, and the layers kept from being emptied.

    The ``floor(percent/100 * n)`` lowest-ranked kernels over every layer (ties in
    layer and mosaic order); a layer that would lose every kernel keeps its
    highest-ranked one. ``rank`` (``acl.pruning_rank``): ``"saliency"``, the paper's
    Eq. 4 ranking, or ``"saliency-per-flop"`` (our extension), saliency divided by
    ``macs[layer]``, one kernel's multiply-adds (``acl.kernel_macs``), or
    ``"saliency-per-cost"`` (ours), saliency divided by the kernel's share of the
    parameters (``params``, ``acl.kernel_params``) plus its share of the multiply-adds, or
    ``"channel-per-cost"`` (ours), whole channel ``classes`` (``acl.pruning_classes``) first.
    ``acl.rank_inputs`` gives ``macs``, ``params`` and ``classes`` for a ranking.
    """
    if not 0 <= percent < 100:
        raise ValueError(f"prune percent {percent}, expected 0 <= percent < 100")
    if rank == "channel-per-cost" and classes is not None and macs is not None and params is not None:
        return zero_classes(saliency, percent, classes, macs, params)
    ranked = rank_scores(saliency.kernels, rank, macs, params)
    names = list(ranked)
    scores = torch.cat([ranked[n].flatten() for n in names])
    count = math.floor(percent / 100 * scores.numel())
    flat = torch.zeros(scores.numel(), dtype=torch.bool)
    flat[torch.argsort(scores, stable=True)[:count]] = True
    masks, emptied, start = {}, [], 0
    for n in names:
        s = ranked[n]
        mask = flat[start : start + s.numel()].view(s.shape).clone()
        start += s.numel()
        if bool(mask.all()):
            mask.view(-1)[int(s.flatten().argmax())] = False
            emptied.append(n)
        masks[n] = mask
    return masks, emptied


@torch.no_grad()
def zeroed_model(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """A baked copy of ``model`` with the masked kernels zeroed: what the pruned model must compute."""
    out = bake(model)
    for name, mask in masks.items():
        conv = out.get_submodule(name)
        conv.weight[mask] = 0
    return out


@dataclass
class PruneResult:
    """What ``channel_prune`` did.

    Attributes:
        model: the pruned *zero form*: every module rebuilt smaller, ACLs baked (an analytic
            kernel cannot be zero), equal to ``zeroed`` on any input to fp32 rounding.
        zeroed: the ``zeroed_model`` (baked, masked kernels zero, full size).
        source: the model given (not modified); ``fill_zero`` rebuilds its ACLs.
        masks: the kernels zeroed (full shape, per spatial layer).
        kept_channels: per rebuilt module, ``(kept inputs, kept outputs)`` as index lists.
        channels: per rebuilt module, ``{"in": [before, after], "out": [before, after]}``.
        kept: why channel classes were kept: reason -> number of classes.
        folded: ``{module: channels}`` of constant channels folded into that module's bias.
        bias_delta: per module, the bias correction of those folds (full output size).
        column_delta: per zero-padded reader, ``{carrier input: [Co, kh, kw]}`` added to its weights
            (``acl.pruning_carrier``); ``fill_zero`` takes it out again.
    """

    model: nn.Module
    zeroed: nn.Module
    source: nn.Module
    masks: dict[str, Tensor]
    kept_channels: dict[str, tuple[list[int], list[int]]]
    channels: dict[str, dict[str, list[int]]]
    kept: dict[str, int]
    folded: dict[str, int] = field(default_factory=dict)
    bias_delta: dict[str, Tensor] = field(default_factory=dict)
    column_delta: dict[str, dict[int, Tensor]] = field(default_factory=dict)


@torch.no_grad()
def channel_prune(model: nn.Module, masks: dict[str, Tensor], example: Tensor, multiple: int = 1) -> PruneResult:
    """Remove the channels the zeroed kernels make unnecessary; rebuild smaller modules (the zero form).

    Args:
        model: a plain CNN or an AnaNN, in eval mode (BatchNorm statistics are used as they are).
        masks: ``zero_masks``'s kernels to zero.
        example: one input batch: shapes, and the constants a removed channel emits.
        multiple: every convolution keeps a multiple of this many input and output channels (or all), taking
            removable channels back (exact; ``acl.pruning_align``): 8 or 16 keeps ONNX Runtime's blocked layout.

    Returns:
        A ``PruneResult``; ``result.model(x)`` equals ``result.zeroed(x)`` to fp32 rounding.
        ``fill_zero(result)`` gives the model to fine-tune and deploy (ACLs as ACLs).
    """
    zeroed = zeroed_model(model, masks).eval()
    graph, gm = trace_channels(zeroed, example)
    plan = plan_removal(graph, gm, example, multiple)
    out = copy.deepcopy(zeroed)
    kept, channels = {}, {}
    for name, node in graph.calls.items():
        kin, kout = _kept(graph, plan, graph.inputs[node]), _kept(graph, plan, node)
        module = _with_columns(zeroed.get_submodule(name), plan.column_delta.get(name))
        _set(out, name, _rebuild(module, kin, kout, plan.bias_delta.get(name)))
        kept[name] = (kin, kout)
        channels[name] = _counts(module, kin, kout)
    return PruneResult(out.eval(), zeroed, model, masks, kept, channels, plan.kept_reasons(), plan.folded_counts(),
                       plan.bias_delta, plan.column_delta)  # fmt: skip


def _with_columns(module: nn.Module, delta: dict[int, Tensor] | None) -> nn.Module:
    if not delta:
        return module
    module = copy.deepcopy(module)
    for k, d in delta.items():
        module.weight[:, k] += d
    return module


def _set(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def _kept(graph: ChannelGraph, plan: Plan, node: str) -> list[int]:
    return [c for c in range(graph.channels[node]) if graph.cls(node, c) not in plan.removed]


def _counts(module: nn.Module, kin: list[int], kout: list[int]) -> dict[str, list[int]]:
    if isinstance(module, nn.BatchNorm2d):
        return {"in": [module.num_features, len(kout)]}
    if isinstance(module, nn.Linear):
        return {"in": [module.in_features, len(kin)], "out": [module.out_features] * 2}
    return {"in": [module.in_channels, len(kin)], "out": [module.out_channels, len(kout)]}


def _rebuild(module: nn.Module, kin: list[int], kout: list[int], delta: Tensor | None) -> nn.Module:
    if isinstance(module, nn.BatchNorm2d):
        return rebuild_bn(module, kout)
    if isinstance(module, nn.Linear):
        return rebuild_linear(module, module, kin, delta)
    return rebuild_conv(module, module, kin, kout, delta)


@torch.no_grad()
def fill_zero(result: PruneResult, seed: int = 0) -> nn.Module:
    """FillZero: the pruned model to fine-tune and deploy, each remaining zeroed kernel drawn afresh.

    A zeroed kernel of a plain convolution or an ACL's Plain segment gets
    Kaiming-uniform(a=sqrt(5)) values (every kernel was zeroed whole, so none is
    "partly zeroed", whose zeros would get N(kernel mean, kernel std^2)). An ACL is
    rebuilt from ``result.source``: its kept kernels in mosaic order with their own
    families (so its spec keeps the original's segment order), a zeroed analytic
    kernel gets new random AKPs of its family, a zeroed fixed kernel a new draw of
    its family, a Mean kernel stays Mean. Draws come from the global RNG seeded with
    ``seed`` (restored afterwards).
    """
    out = copy.deepcopy(result.model)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for name, mask in result.masks.items():
            kin, kout = result.kept_channels[name]
            layer = result.source.get_submodule(name)
            sub = mask[kout][:, [0] if layer.groups > 1 else kin]
            if isinstance(layer, AnalyticConv2d):
                new = rebuild_acl(layer, kin, kout, result.bias_delta.get(name))
                redraw_acl_kernels(new, sub)
                _set(out, name, new)
            else:
                _drop_carried(out.get_submodule(name), result.column_delta.get(name), kin, kout)
                redraw_conv_kernels(out.get_submodule(name), sub)
    return out.eval()


def _drop_carried(conv: nn.Conv2d, delta: dict[int, Tensor] | None, kin: list[int], kout: list[int]) -> None:
    """The carrier's own weights back: FillZero redraws the carrier's zeroed producer, so it is no constant any more."""
    for k, d in (delta or {}).items():
        conv.weight[:, kin.index(k)] -= d[kout]
