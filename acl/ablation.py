"""Ablation by Mean substitution (paper Table 3, Fig. 4b).

``ablate(model, family)`` replaces one family's kernels by Mean kernels in every
ACL (or chosen ones) of a deep copy, without retraining; ``attribution`` turns the
accuracies of such ablations into the paper's contribution shares.

The substituted kernels become ``M`` segments of the layer's spec, at the same
positions (``G30Lg15...`` ablated for ``Lg`` is ``G30M15...``), so an ablated model
is an ordinary ACL model: it trains, saves and exports (``export.to_onnx``) like
any other. Segments are not merged, so every other segment keeps its index and
its parameter name (``akp0_G``, ``plain4``), and its values.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from acl.analytic_conv import AnalyticConv2d
from acl.conversion import _set_submodule, acl_layers
from acl.families import FAMILIES, family
from acl.spec import Spec

__all__ = ["Attribution", "ablate", "ablated_layer", "attribution"]


def ablated_layer(layer: AnalyticConv2d, families: Iterable[str]) -> AnalyticConv2d:
    """A copy of ``layer`` whose segments of ``families`` are Mean segments.

    Every other parameter (AKPs, plain kernels, bias) is copied unchanged, under its
    own name; hyper-parameters, dtype, device and train/eval mode are kept. The
    global RNG is not used.

    Examples:
        >>> layer = AnalyticConv2d(1, 4, 3, spec="G1Lg1P2")
        >>> str(ablated_layer(layer, ["Lg"]).spec)
        '(1x4)G1M1P2'
    """
    drop = {family(s).symbol for s in families}
    segments = tuple(("M" if sym in drop else sym, n) for sym, n in layer.spec.segments)
    spec = Spec(segments, layer.in_channels, layer.out_channels, layer.groups)
    anchor = layer._anchor  # the layer's dtype and device, even without parameters
    # Built on the meta device (no RNG, no allocation), then every kept tensor is copied in.
    new = AnalyticConv2d(
        layer.in_channels,
        layer.out_channels,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups,
        layer.bias is not None,
        layer.padding_mode,
        device="meta",
        dtype=anchor.dtype,
        spec=spec,
    ).to_empty(device=anchor.device)
    kept = dict(new.named_parameters())
    kept_buffers = dict(new.named_buffers())  # fixed-family kernels, drawn on the meta device: copied too
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in kept:
                kept[name].copy_(p)
                kept[name].requires_grad_(p.requires_grad)
        for name, b in layer.named_buffers():
            if name in kept_buffers and name != "_anchor":
                kept_buffers[name].copy_(b)
    new.train(layer.training)
    return new


def ablate(model: nn.Module, family: str | Iterable[str], layers: str | Iterable[str] | None = None) -> nn.Module:
    """A deep copy of ``model`` with one family's kernels replaced by Mean kernels (Table 3).

    Args:
        model: a model with ``AnalyticConv2d`` layers (or one such layer); untouched.
        family: the symbol to replace (``G``, ``Lg``, ``Lt``, ``Tf``, ``Ts``, ``P`` or a fixed family),
            or several symbols at once (all of them: the paper's exp15, ``M192``).
        layers: ACL names (as in ``named_modules()``; one name or several); ``None``:
            every ACL.

    Returns:
        The ablated copy: the chosen layers' segments of ``family`` are ``M``
        segments (module docstring), everything else equals the original exactly.

    Raises:
        ValueError: an unknown or Mean symbol, a layer that is not an ACL, or no
            chosen layer has a kernel of ``family``.

    Examples:
        >>> net = nn.Sequential(AnalyticConv2d(1, 4, 3, spec="G1Lg1P2"), nn.ReLU())
        >>> str(ablate(net, "G")[0].spec), str(net[0].spec)
        ('(1x4)M1Lg1P2', '(1x4)G1Lg1P2')
    """
    symbols = [family] if isinstance(family, str) else list(family)
    drop = set()
    for sym in symbols:
        fam = FAMILIES.get(sym)
        if fam is None or fam.symbol == "M":
            raise ValueError(f"cannot ablate {sym!r}: expected one of {', '.join(s for s in FAMILIES if s != 'M')}")
        drop.add(fam.symbol)
    if isinstance(model, AnalyticConv2d):
        if not drop & set(model.spec.counts()):
            raise ValueError(f"the layer (spec {model.spec}) has no kernel of {sorted(drop)}")
        return ablated_layer(model, drop)
    found = dict(acl_layers(model))
    if layers is None:
        names = list(found)
    else:
        names = [layers] if isinstance(layers, str) else list(layers)
        for name in names:
            if name not in found:
                raise ValueError(f"layer {name!r} is not an AnalyticConv2d of the model; ACLs are: {list(found)}")
    chosen = [n for n in names if drop & set(found[n].spec.counts())]
    if not chosen:
        raise ValueError(f"no chosen ACL has a kernel of {sorted(drop)} (ACLs: {list(found) or 'none'})")
    out = copy.deepcopy(model)
    for name in chosen:
        _set_submodule(out, name, ablated_layer(out.get_submodule(name), drop))
    return out


@dataclass(frozen=True)
class Attribution:
    """Accuracy contributions of kernel families (Table 3 and Fig. 4b), in the accuracies' unit.

    Attributes:
        loss: accuracy lost when each family alone is replaced by Mean kernels.
        total: accuracy lost when every family is replaced (exp15).
        interaction: ``total - sum(loss)``: the loss no single family explains,
            which the paper attributes to the families' interplay.
        share: ``loss / total`` per family, and ``"interaction"``: ``interaction / total``
            (the slices of Fig. 4b; they sum to 1).
    """

    loss: dict[str, float]
    total: float
    interaction: float
    share: dict[str, float]


def attribution(base: float, ablated: Mapping[str, float], all_replaced: float) -> Attribution:
    """The paper's attribution of accuracy to kernel families, from ablation accuracies (Table 3).

    Each family's loss is ``base - ablated[family]``; the loss with every kernel
    replaced is ``base - all_replaced``; what the single losses do not add up to
    is attributed to interactions. Shares divide by the total loss.

    Table 3 is not self-consistent: it prints exp13's loss as 5.09 although
    90.68 - 85.09 = 5.59. The paper's "about 9.7%" of interactions ("56%" of 17.29
    points) follows from the printed loss column; from the printed accuracies the
    same rule gives 9.2 points (53%). The example shows both.

    Args:
        base: accuracy of the unablated model (exp3).
        ablated: accuracy with one family replaced, by family symbol (exp9-13).
        all_replaced: accuracy with all kernels replaced (exp15).

    Returns:
        An ``Attribution``. A loss may be negative (the ablation helped); shares are
        ``nan`` when the total loss is 0.

    Examples:
        >>> table3 = {"G": 89.72, "Lg": 89.38, "Lt": 90.57, "Tf": 90.55, "P": 85.09}
        >>> a = attribution(90.68, table3, 73.39)
        >>> round(a.total, 2), round(a.loss["P"], 2), round(a.interaction, 2), round(a.share["interaction"], 2)
        (17.29, 5.59, 9.2, 0.53)
        >>> b = attribution(90.68, {**table3, "P": 90.68 - 5.09}, 73.39)  # the printed loss column
        >>> round(b.interaction, 2), round(b.share["interaction"], 2), round(sum(b.share.values()), 6)
        (9.7, 0.56, 1.0)
    """
    loss = {sym: base - acc for sym, acc in ablated.items()}
    total = base - all_replaced
    interaction = total - sum(loss.values())
    share = {sym: (v / total if total else float("nan")) for sym, v in loss.items()}
    share["interaction"] = interaction / total if total else float("nan")
    return Attribution(loss, total, interaction, share)
