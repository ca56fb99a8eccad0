"""Smaller copies of Conv2d, AnalyticConv2d, BatchNorm2d and Linear holding only the kept channels.

A bias correction ``delta`` (per output, from constants folded by ChannelPrune) is
added to the bias, which is created when the layer had none.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.families import FAMILIES
from acl.fixed_families import fixed_kernels
from acl.kernels import init_akps

__all__ = [
    "acl_spec_of", "rebuild_acl", "rebuild_bn", "rebuild_conv", "rebuild_linear", "redraw_acl_kernels",
    "redraw_conv_kernels",
]  # fmt: skip


def _bias(bias: Tensor | None, rows: list[int], delta: Tensor | None, like: Tensor) -> Tensor | None:
    if bias is None and delta is None:
        return None
    out = torch.zeros(len(rows), dtype=like.dtype, device=like.device) if bias is None else bias.detach()[rows].clone()
    if delta is not None:
        out += delta.to(out)[rows]
    return out


def _geometry(conv: nn.Module, kin: list[int], kout: list[int]) -> dict:
    depthwise = conv.groups > 1
    return dict(
        in_channels=len(kin), out_channels=len(kout), kernel_size=conv.kernel_size, stride=conv.stride,
        padding=conv.padding, dilation=conv.dilation, groups=len(kout) if depthwise else 1,
        padding_mode=conv.padding_mode,
    )  # fmt: skip


@torch.no_grad()
def rebuild_conv(conv: nn.Conv2d, zeroed: nn.Conv2d, kin: list[int], kout: list[int], delta: Tensor | None):
    """``zeroed``'s kernels (the zeroed ones zero) of the kept outputs and inputs, in a new ``nn.Conv2d``."""
    bias = _bias(conv.bias, kout, delta, zeroed.weight)
    new = nn.Conv2d(**_geometry(conv, kin, kout), bias=bias is not None, device=zeroed.weight.device,
                    dtype=zeroed.weight.dtype)  # fmt: skip
    cols = [0] if conv.groups > 1 else kin
    new.weight.copy_(zeroed.weight[kout][:, cols])
    new.weight.requires_grad_(conv.weight.requires_grad)
    if bias is not None:
        new.bias.copy_(bias)
        new.bias.requires_grad_(_bias_learns(conv))
    return new.train(conv.training)


def acl_spec_of(layer: AnalyticConv2d, kin: list[int], kout: list[int]) -> tuple[str, Tensor, Tensor]:
    """The pruned ACL's count-form spec and, per kept kernel in mosaic order, its source segment and row.

    The kept kernels keep the mosaic order (output major) and their family; runs of
    one symbol merge into one segment, so the spec has at most the original's segments.
    """
    per_in = layer.in_channels // layer.groups
    cols = torch.tensor([0] if layer.groups > 1 else kin)
    index = (torch.tensor(kout)[:, None] * per_in + cols[None, :]).flatten()
    starts = torch.tensor([start for _, start, _, _ in layer.segment_params()])
    seg = torch.searchsorted(starts, index, right=True) - 1
    row = index - starts[seg]
    symbols = [sym for sym, *_ in layer.segment_params()]
    runs: list[list] = []
    for s in seg.tolist():
        if runs and runs[-1][0] == symbols[s]:
            runs[-1][1] += 1
        else:
            runs.append([symbols[s], 1])
    return f"({len(cols)}x{len(kout)})" + "".join(f"{sym}{n}" for sym, n in runs), seg, row


@torch.no_grad()
def rebuild_acl(layer: AnalyticConv2d, kin: list[int], kout: list[int], delta: Tensor | None) -> AnalyticConv2d:
    """A smaller ``AnalyticConv2d`` with the kept kernels (``acl_spec_of``): their AKPs, plain and fixed kernels."""
    spec, seg, row = acl_spec_of(layer, kin, kout)
    anchor = layer._anchor
    bias = _bias(layer.bias, kout, delta, anchor)
    new = AnalyticConv2d(**_geometry(layer, kin, kout), bias=bias is not None, device=anchor.device,
                         dtype=anchor.dtype, spec=spec)  # fmt: skip
    sources = [t for *_, t in layer.segment_params()]
    learns = any(p.requires_grad for p in layer.parameters())  # a layer frozen by fix_spatial stays frozen
    for _, start, stop, target in new.segment_params():
        if target is not None:
            parts = [sources[s][row[start:stop][seg[start:stop] == s]] for s in seg[start:stop].unique().tolist()]
            target.copy_(torch.cat(parts))  # one run may span source segments of one family, in order
            target.requires_grad_(learns and isinstance(target, nn.Parameter))
    if bias is not None:
        new.bias.copy_(bias)
        new.bias.requires_grad_(learns)
    return new.train(layer.training)


@torch.no_grad()
def rebuild_bn(bn: nn.BatchNorm2d, kept: list[int]) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(kept), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    new = new.to(device=bn.weight.device if bn.affine else None)
    if bn.affine:
        new.weight.copy_(bn.weight[kept])
        new.bias.copy_(bn.bias[kept])
        new.weight.requires_grad_(bn.weight.requires_grad)
        new.bias.requires_grad_(bn.bias.requires_grad)
    if bn.track_running_stats:
        new.running_mean.copy_(bn.running_mean[kept])
        new.running_var.copy_(bn.running_var[kept])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


@torch.no_grad()
def rebuild_linear(lin: nn.Linear, zeroed: nn.Linear, kin: list[int], delta: Tensor | None) -> nn.Linear:
    rows = list(range(lin.out_features))
    bias = _bias(lin.bias, rows, delta, lin.weight)
    new = nn.Linear(len(kin), lin.out_features, bias=bias is not None, device=lin.weight.device, dtype=lin.weight.dtype)
    new.weight.copy_(zeroed.weight[:, kin])
    new.weight.requires_grad_(lin.weight.requires_grad)
    if bias is not None:
        new.bias.copy_(bias)
        new.bias.requires_grad_(_bias_learns(lin))
    return new.train(lin.training)


def _bias_learns(module: nn.Module) -> bool:
    """A rebuilt bias learns as the old one did (``fix_spatial`` freezes it); a bias made by a fold, as the weight."""
    return (module.bias if module.bias is not None else module.weight).requires_grad


def _uniform(n: int, h: int, w: int, fan_in: int, like: Tensor) -> Tensor:
    bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), nn.Conv2d's default
    return torch.empty(n, h, w, dtype=like.dtype, device=like.device).uniform_(-bound, bound)


@torch.no_grad()
def redraw_conv_kernels(conv: nn.Conv2d, zero: Tensor) -> int:
    """Kaiming-uniform values for the kernels ``zero`` (bool ``[Co, Ci/groups]``) marks; returns how many."""
    h, w = conv.kernel_size
    kernels = conv.weight.view(-1, h, w)
    where = torch.nonzero(zero.flatten()).flatten()
    kernels[where] = _uniform(len(where), h, w, conv.in_channels // conv.groups * h * w, kernels)
    return len(where)


@torch.no_grad()
def redraw_acl_kernels(layer: AnalyticConv2d, zero: Tensor) -> int:
    """New draws of their own family for the kernels ``zero`` marks (mosaic order); returns how many."""
    h, w = layer.kernel_size
    fan_in = layer.in_channels // layer.groups * h * w
    flat, count = zero.flatten(), 0
    for sym, start, stop, tensor in layer.segment_params():
        rows = torch.nonzero(flat[start:stop]).flatten()
        if tensor is None or not len(rows):
            continue
        if sym == "P":
            tensor[rows] = _uniform(len(rows), h, w, fan_in, tensor)
        elif FAMILIES[sym].fixed:
            tensor[rows] = fixed_kernels(sym, len(rows), (h, w), fan_in=fan_in).to(tensor)
        else:
            tensor[rows] = init_akps(sym, len(rows), (h, w)).to(tensor)
        count += len(rows)
    return count
