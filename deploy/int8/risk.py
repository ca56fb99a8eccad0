"""INT8 risk per layer and per kernel family: what INT8 weights cost each family of every convolution.

The Q/DQ file's weights are INT8 per output channel: one symmetric scale per
channel, set by the channel's largest ``|w|``. An ACL's mosaic fills the
``C_o x C_i/groups`` grid of 2-D kernels, so one output channel can hold kernels
of several families (a small-sigma LoG beside Gabors), and they share its scale:
the family with the largest weights sets it, and a family with much smaller
weights is left few of the 127 steps. For every convolution of a model, as ONNX
Runtime's ``quantize_static`` quantizes it, this module measures:

* the weight as the Q/DQ file holds it: a BatchNorm that reads the convolution's
  output is folded in first (``gamma / sqrt(var + eps)`` per output channel, as
  ONNX Runtime's Conv+BatchNorm fusion in ``quant_pre_process`` does). The factor
  is per channel, so it moves the ranges but not which family sets a channel's
  scale;
* the per-channel scale (``weight_scales``, ONNX Runtime's rule) and the weight
  error ``dW = Q(W) - W`` (``fake_quantize``);
* the output error each family's kernels alone contribute, ``conv(x, dW * mask_f)``
  on the layer's FP32 inputs (so weight quantization alone, not the activations').
  A convolution is linear in its kernels, so the parts add up to ``conv(x, dW)``,
  as ``acl.interpret``'s family split of the output does (its masks are used here);
* per family: its largest ``|w|``, the effective bits it keeps in each channel,
  ``log2(max|w_f| / scale)`` (``log2(127) = 6.99`` for the family that sets the
  scale), and flags where one family sets the scale of channels in which another
  keeps fewer than ``MIN_BITS``.

Plain convolutions get the same figures with one group, ``plain``. Layers are
found by module type (``nn.Conv2d``, ``AnalyticConv2d``); their inputs are caught
with forward pre-hooks, one batch at a time, so no activation is kept.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.interpret import conv_input, family_index

__all__ = [
    "MIN_BITS",
    "PLAIN",
    "QMAX",
    "Ranges",
    "batchnorm_after",
    "fake_quantize",
    "family_errors",
    "family_ranges",
    "flag_counts",
    "fold_batchnorm",
    "kernel_groups",
    "risk_report",
    "stacked_conv",
    "weight_scales",
]

QMAX = 127
"""ONNX Runtime's symmetric INT8 range is -127..127 (``ONNX_INT_TYPE_SYMMETRIC_RANGE``): scale = max|w| / 127."""

MIN_BITS = 4.0
"""A family keeping fewer effective bits than this in a channel whose scale another family sets is flagged.

Symmetric INT8 has 7 magnitude bits (127 steps). Below 4 the family has lost
more than 3 of them, most of its resolution: its largest weight is under 1/8 of
the channel's range and spans fewer than 16 steps, so a weight at the family's
maximum is already rounded by up to 1/32 (3 %) of itself, and its typical,
smaller weights fall on a handful of levels, as coarse as 4-bit weights.
"""

PLAIN = "plain"
"""The one group of a plain convolution's kernels."""


def weight_scales(weight: Tensor) -> Tensor:
    """Per-output-channel symmetric INT8 scales, exactly as ONNX Runtime's ``quantize_static`` computes them.

    ``compute_scale_zp(symmetric=True)`` with ``qmin, qmax = -127, 127``: the range
    ``[-max|w|, max|w|]`` over ``254`` steps, computed in float64 and stored as
    float32; a channel whose scale is below the smallest normal float32 (all zero)
    gets scale 1, as there.

    Args:
        weight: a convolution's weight as the file holds it (BatchNorm folded in).

    Shape:
        - weight: :math:`(C_o, *)`
        - Output: :math:`(C_o,)`, float32

    Examples:
        >>> weight_scales(torch.tensor([[[[0.5, -1.27]]], [[[0.0, 0.0]]]])).tolist()
        [0.009999999776482582, 1.0]
    """
    absmax = weight.detach().to(torch.float32).flatten(1).abs().amax(1).double()
    scale = (absmax * 2) / (2 * QMAX)  # ORT's (rmax - rmin) / (qmax - qmin), in float64
    return torch.where(scale < torch.finfo(torch.float32).tiny, 1.0, scale).to(torch.float32)


def fake_quantize(weight: Tensor, scale: Tensor) -> Tensor:
    """``Q(W)``: the weight as the Q/DQ file's DequantizeLinear gives it back.

    ``round(w / scale)`` (half to even, as NumPy), clipped to INT8, times the scale;
    float32 throughout, as ONNX Runtime's ``quantize_nparray`` and DequantizeLinear.

    Shape:
        - weight: :math:`(C_o, *)`
        - scale: :math:`(C_o,)`
        - Output: like ``weight``

    Examples:
        >>> w = torch.tensor([[2.54, 0.01, -0.03]])  # 127, 0.5 and -1.5 steps of 0.02
        >>> [round(v, 4) for v in fake_quantize(w, torch.tensor([0.02]))[0].tolist()]
        [2.54, 0.0, -0.04]
    """
    s = scale.to(torch.float32).view(-1, *[1] * (weight.dim() - 1))
    return (weight.to(torch.float32) / s).round().clamp(-128, 127) * s


def fold_batchnorm(weight: Tensor, bn: nn.BatchNorm2d) -> Tensor:
    """The convolution's weight with ``bn`` folded in, as the Q/DQ file holds it.

    ``w * (gamma / sqrt(running_var + eps))`` per output channel in float32, the
    order of ONNX Runtime's Conv+BatchNorm fusion (ACLs: their BatchNorm stays a
    node in the static file) and the same bits as the exporter's folding of plain
    convolutions; the bias changes too, but biases are not INT8 weights.

    Shape:
        - weight: :math:`(C_o, C_i / groups, h, w)`
        - Output: like ``weight``

    Examples:
        >>> bn = nn.BatchNorm2d(2, eps=0.0).eval()
        >>> bn.running_var.fill_(4.0)  # doctest: +ELLIPSIS
        tensor(...)
        >>> fold_batchnorm(torch.ones(2, 1, 1, 1), bn).flatten().tolist()
        [0.5, 0.5]
    """
    var = bn.running_var.detach().to(torch.float32)
    gamma = torch.ones_like(var) if bn.weight is None else bn.weight.detach().to(torch.float32)
    # float32 sqrt correctly rounded, as ONNX Runtime's (via float64, which rounds to the same float32):
    # PyTorch's vectorised float32 sqrt is off by one ulp for some inputs, which moved scales by one ulp.
    root = torch.sqrt((var + bn.eps).double()).to(torch.float32)
    factor = gamma / root
    return weight.to(torch.float32) * factor.view(-1, *[1] * (weight.dim() - 1))


def kernel_groups(layer: nn.Module) -> tuple[list[str], Tensor]:
    """The groups whose INT8 error is split: an ACL's families (``acl.interpret.family_index``), or ``plain``.

    Shape:
        - Output: ``(names, index)``; ``index`` :math:`(C_o, C_i / groups)`, each
          kernel's position in ``names``.

    Examples:
        >>> kernel_groups(AnalyticConv2d(2, 2, 3, spec="Lg1P3"))[1].tolist()
        [[0, 1], [1, 1]]
        >>> kernel_groups(nn.Conv2d(2, 2, 3))[0]
        ['plain']
    """
    if isinstance(layer, AnalyticConv2d):
        names, index = family_index(layer)
    else:
        weight = layer.weight
        names, index = [PLAIN], torch.zeros(weight[:, :, 0, 0].numel(), dtype=torch.int64, device=weight.device)
    return names, index.view(layer.out_channels, -1)


def _members(index: Tensor, n: int) -> Tensor:
    """``[n, C_o, K]``: kernel ``(c, k)`` belongs to group ``f``."""
    return index.unsqueeze(0) == torch.arange(n, device=index.device).view(n, 1, 1)


class Ranges(NamedTuple):
    max_abs: Tensor  # (F, C_o): the group's largest |w| in each channel; NaN where it has no kernel there
    bits: Tensor  # (F, C_o): log2(max_abs / scale), float64; NaN where absent or all zero
    setter: Tensor  # (C_o,): the group holding the channel's largest |w| (first such); -1 for an all-zero channel


def family_ranges(weight: Tensor, scale: Tensor, index: Tensor, n: int) -> Ranges:
    """Each group's range per channel against the channel's scale, and which group sets that scale.

    Args:
        weight: the weight as the file holds it.
        scale: ``weight_scales(weight)``.
        index: ``kernel_groups``' index; ``n``: the number of groups.

    Shape:
        - weight: :math:`(C_o, K, h, w)`; scale: :math:`(C_o,)`; index: :math:`(C_o, K)`
        - Output: ``Ranges`` of :math:`(F, C_o)`, :math:`(F, C_o)`, :math:`(C_o,)`

    Examples:
        >>> w = torch.tensor([[[[1.27]], [[0.01]]]])  # one channel: a big and a small kernel
        >>> r = family_ranges(w, weight_scales(w), torch.tensor([[0, 1]]), 2)
        >>> [round(b, 2) for b in r.bits[:, 0].tolist()], r.setter.tolist()
        ([6.99, 0.0], [0])
    """
    peak = weight.detach().to(torch.float32).flatten(2).abs().amax(2)  # each kernel's largest |w|
    members = _members(index, n)
    top = torch.where(members, peak.unsqueeze(0), -1.0).amax(2)  # -1: no kernel of the group there
    max_abs = torch.where(members.any(2), top, math.nan)
    bits = torch.where(top > 0, torch.log2(top.double() / scale.double()), math.nan)
    setter = torch.where(top.amax(0) > 0, top.argmax(0), -1)
    return Ranges(max_abs, bits, setter)


def flag_counts(ranges: Ranges, min_bits: float = MIN_BITS) -> Tensor:
    """How many channels each group sets the scale of while another keeps fewer than ``min_bits``.

    Shape:
        - Output: :math:`(F, F)`, int64: ``[setter, victim]``

    Examples:
        >>> w = torch.tensor([[[[1.27]], [[0.01]]]])
        >>> flag_counts(family_ranges(w, weight_scales(w), torch.tensor([[0, 1]]), 2)).tolist()
        [[0, 1], [0, 0]]
    """
    n = ranges.bits.shape[0]
    low = (ranges.bits < min_bits).double()  # NaN (absent, all zero) is never low
    sets = (ranges.setter.unsqueeze(0) == torch.arange(n, device=ranges.setter.device).view(n, 1)).double()
    counts = (sets @ low.T).round().long()
    return counts.fill_diagonal_(0)  # a group cannot lose resolution to itself


def stacked_conv(layer: nn.Module, x: Tensor, weights: Tensor) -> Tensor:
    """``layer``'s convolution of ``x`` with each of ``weights`` (no bias), as one convolution.

    The kernel sets are stacked along the output channels, kept inside their
    convolution groups, so a grouped or depthwise layer stays one call.

    Shape:
        - x: :math:`(B, C_i, H, W)`
        - weights: :math:`(S, C_o, C_i / groups, h, w)`
        - Output: :math:`(B, S, C_o, H', W')`

    Examples:
        >>> conv = nn.Conv2d(4, 4, 3, groups=2, bias=False)
        >>> x = torch.randn(1, 4, 5, 5)
        >>> out = stacked_conv(conv, x, torch.stack([conv.weight, 2 * conv.weight]))
        >>> torch.allclose(out[:, 1], 2 * conv(x), atol=1e-6)
        True
    """
    s, co, *kernel = weights.shape
    g = layer.groups
    x, padding = conv_input(layer, x)
    w = weights.reshape(s, g, co // g, *kernel).transpose(0, 1).reshape(s * co, *kernel)
    out = F.conv2d(x, w, None, layer.stride, padding, layer.dilation, g)
    b, _, *hw = out.shape
    return out.view(b, g, s, co // g, *hw).transpose(1, 2).reshape(b, s, co, *hw)


def family_errors(layer: nn.Module, x: Tensor, weight: Tensor, index: Tensor, n: int) -> Tensor:
    """The output error each group's kernels alone contribute: ``conv(x, dW * mask_f)``.

    ``dW = Q(W) - W`` with this module's scales; by linearity the parts add up to
    ``conv(x, dW)``, the layer's whole weight-quantization error.

    Args:
        layer: the convolution (its stride, padding, dilation and groups are used).
        x: the layer's input.
        weight: the weight as the file holds it (``fold_batchnorm`` applied where
            a BatchNorm follows), not necessarily ``layer.weight``.
        index: ``kernel_groups``' index; ``n``: the number of groups.

    Shape:
        - x: :math:`(B, C_i, H, W)`; weight: :math:`(C_o, C_i / groups, h, w)`
        - Output: :math:`(B, F, C_o, H', W')`
    """
    dw = fake_quantize(weight, weight_scales(weight)) - weight
    masks = _members(index, n).to(dw.dtype)[..., None, None]
    return stacked_conv(layer, x, dw.unsqueeze(0) * masks)


class _Layer(NamedTuple):
    layer: nn.Module
    bn: str | None  # the BatchNorm folded in
    names: list[str]
    index: Tensor
    weight: Tensor  # as the file holds it
    scale: Tensor
    ranges: Ranges


@torch.no_grad()
def _prepare(layer: nn.Module, bn: tuple[str, nn.BatchNorm2d] | None) -> _Layer:
    weight = layer.weight.detach().to(torch.float32)
    if bn is not None:
        weight = fold_batchnorm(weight, bn[1])
    names, index = kernel_groups(layer)
    scale = weight_scales(weight)
    return _Layer(layer, bn and bn[0], names, index, weight, scale, family_ranges(weight, scale, index, len(names)))


def _energies(p: _Layer, x: Tensor) -> Tensor:
    """Sums of squares over ``x`` of ``[output, error, error_f...]`` (no bias), float64.

    One convolution with ``1 + F`` kernel sets: the weight and each group's error
    part; the whole error is the sum of the parts (linearity), so it costs none.
    """
    dw = fake_quantize(p.weight, p.scale) - p.weight
    masks = _members(p.index, len(p.names)).to(dw.dtype)[..., None, None]
    outs = stacked_conv(p.layer, x.to(torch.float32), torch.cat([p.weight.unsqueeze(0), dw.unsqueeze(0) * masks]))
    parts = outs[:, 1:].double()
    whole = outs[:, :1].double().square().sum()
    return torch.cat([whole.view(1), parts.sum(1).square().sum().view(1), parts.square().sum((0, 2, 3, 4))])


def _convolutions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, AnalyticConv2d))]


@torch.no_grad()
def batchnorm_after(model: nn.Module, x: Tensor) -> dict[str, tuple[str, nn.BatchNorm2d]]:
    """The BatchNorm each convolution's output goes straight into (conv name -> (name, module)).

    Seen by running ``x``: a ``BatchNorm2d`` (with running statistics) whose input
    is the very tensor a convolution returned. ONNX Runtime folds exactly such a
    pair, provided nothing else reads the convolution's output; a model that
    also reuses that output elsewhere is taken as folded here.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Conv2d(2, 2, 1)).eval()
        >>> {conv: bn for conv, (bn, _) in batchnorm_after(net, torch.randn(1, 1, 5, 5)).items()}
        {'0': '1'}
    """
    outputs: dict[int, tuple[str, Tensor]] = {}  # the tensors are kept, so their ids stay theirs
    found: dict[str, tuple[str, nn.BatchNorm2d]] = {}

    def after(name: str):
        return lambda _m, _args, out: outputs.__setitem__(id(out), (name, out))

    def before(name: str, bn: nn.BatchNorm2d):
        def hook(_m, args):
            hit = outputs.get(id(args[0]))
            if hit is not None and hit[1] is args[0] and bn.running_var is not None:
                found.setdefault(hit[0], (name, bn))

        return hook

    hooks = [m.register_forward_hook(after(n)) for n, m in _convolutions(model)]
    hooks += [
        m.register_forward_pre_hook(before(n, m)) for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
    ]
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
    return found


def _accumulate(model: nn.Module, x: Tensor, layers: dict[str, _Layer], batch: int) -> dict[str, Tensor]:
    sums: dict[str, Tensor] = {}

    def hook(name: str, p: _Layer):
        def add(_m, args):
            e = _energies(p, args[0])
            sums[name] = e if name not in sums else sums[name] + e

        return add

    hooks = [p.layer.register_forward_pre_hook(hook(name, p)) for name, p in layers.items()]
    try:
        with torch.no_grad():
            for chunk in x.split(batch):
                model(chunk)
    finally:
        for h in hooks:
            h.remove()
    return sums


def risk_report(model: nn.Module, x: Tensor, *, batch: int = 8, min_bits: float = MIN_BITS) -> dict[str, Any]:
    """The INT8 risk of every convolution of ``model`` on inputs ``x``: a JSON-ready dict.

    Args:
        model: the source model; run in eval mode (BatchNorm's running statistics
            are what is folded), its modes restored afterwards. Not modified.
        x: real inputs (a few dozen images settle the error shares).
        batch: images per forward pass (a layer's output is held ``1 + F``
            times at once, ``F`` its number of groups).
        min_bits: the flag threshold, ``MIN_BITS``.

    Returns:
        ``{"images", "min_bits", "layers": {name: entry}}`` in module order, for
        every convolution the model ran; an entry holds ``kind`` (``acl`` or
        ``conv``), ``spec``, ``batchnorm`` (folded in, or ``None``), ``channels``,
        ``kernels``, ``relative_error`` (RMS of the layer's output error over RMS of
        its output, without bias), ``cross`` (the share of the error energy due to
        the parts' interference), ``families`` (per group: ``kernels``,
        ``channels``, ``max_abs``, ``range_max`` (the largest ``127 * scale`` of its
        channels), ``sets_scale`` (channels), ``bits_min``, ``bits_median``,
        ``error_share`` (of the parts' error energy), ``relative_error`` (RMS of its
        part of the error over RMS of the layer's output)) and ``flags`` (``setter``, ``family``,
        ``channels``, ``of``, ``bits_min``, ``error_share``).

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(AnalyticConv2d(1, 4, 3, spec="Lg2P2"), nn.BatchNorm2d(4))
        >>> r = risk_report(net, torch.randn(4, 1, 8, 8))["layers"]["0"]
        >>> r["batchnorm"], sorted(r["families"]), round(sum(f["error_share"] for f in r["families"].values()), 6)
        ('1', ['LoG', 'Plain'], 1.0)
    """
    modes = {m: m.training for m in model.modules()}
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = x.to(device=device, dtype=torch.float32)
    model.eval()
    try:
        folded = batchnorm_after(model, x[:1])
        layers = {name: _prepare(m, folded.get(name)) for name, m in _convolutions(model)}
        sums = _accumulate(model, x, layers, batch)
    finally:
        for m, mode in modes.items():
            m.train(mode)
    entries = {name: _entry(layers[name], sums[name], min_bits) for name in layers if name in sums}
    return {"images": len(x), "min_bits": min_bits, "layers": entries}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def _entry(p: _Layer, e: Tensor, min_bits: float) -> dict[str, Any]:
    out, err, err_f = float(e[0]), float(e[1]), e[2:].tolist()
    parts = sum(err_f)
    share = [_ratio(v, parts) or 0.0 for v in err_f]
    acl_layer = isinstance(p.layer, AnalyticConv2d)
    return {
        "kind": "acl" if acl_layer else "conv",
        "spec": str(p.layer.spec) if acl_layer else None,
        "batchnorm": p.bn,
        "channels": int(p.weight.shape[0]),
        "kernels": int(p.index.numel()),
        "relative_error": math.sqrt(_ratio(err, out) or 0.0),
        "cross": _ratio(err - parts, err) or 0.0,
        "families": {name: _family(p, i, share[i], _ratio(err_f[i], out)) for i, name in enumerate(p.names)},
        "flags": _flags(p, share, min_bits),
    }


def _finite(values: Tensor) -> Tensor:
    return values[~values.isnan()]


def _family(p: _Layer, i: int, share: float, of_output: float | None) -> dict[str, Any]:
    bits = _finite(p.ranges.bits[i])
    here = ~p.ranges.max_abs[i].isnan()
    return {
        "kernels": int((p.index == i).sum()),
        "channels": int(here.sum()),
        "max_abs": float(_finite(p.ranges.max_abs[i]).max()),
        "range_max": float((p.scale[here] * QMAX).max()),
        "sets_scale": int((p.ranges.setter == i).sum()),
        "bits_min": float(bits.min()) if bits.numel() else None,
        "bits_median": float(bits.quantile(0.5)) if bits.numel() else None,
        "error_share": share,
        "relative_error": math.sqrt(of_output or 0.0),
    }


def _flags(p: _Layer, share: list[float], min_bits: float) -> list[dict[str, Any]]:
    counts = flag_counts(p.ranges, min_bits)
    out = []
    for s, f in counts.nonzero().tolist():
        where = (p.ranges.setter == s) & (p.ranges.bits[f] < min_bits)
        out.append(
            {
                "setter": p.names[s],
                "family": p.names[f],
                "channels": int(counts[s, f]),
                "of": int((~p.ranges.max_abs[f].isnan()).sum()),
                "bits_min": float(p.ranges.bits[f][where].min()),
                "error_share": share[f],
            }
        )
    return out
