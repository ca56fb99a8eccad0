"""What a trained ACL holds: its AKPs summarised, and each family's share of the output.

Both read the family registry (``acl.families``), so a new family is summarised
without edits here.

* ``akp_summary``: per analytic segment and AKP, its name, unit and the range and
  median over the segment's kernels, in the units the formulas use (a scale as
  ``clamp(|s|, SCALE_MIN, SCALE_MAX)``, an angle as stored).
* ``family_energy``: a convolution is linear in its kernels, so a layer's output
  (without bias) is the sum of what each family's kernels alone produce. A family's
  share is the energy (sum of squares) of its part over the sum of every family's
  part, on real inputs. The parts are not orthogonal, so the energies of the parts
  need not add up to the energy of the whole; ``cross`` gives the remainder as a
  share of the whole (0 when the parts do not interfere).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.conversion import acl_layers
from acl.families import FAMILIES, SCALE_MAX, SCALE_MIN

__all__ = ["akp_summary", "family_energy"]


def akp_summary(layer: AnalyticConv2d) -> list[dict[str, Any]]:
    """One row per analytic segment and AKP: ``family, segment, akp, unit, n, min, median, max``.

    Examples:
        >>> layer = AnalyticConv2d(1, 4, 5, spec="Lg2P2")
        >>> [(r["family"], r["akp"], r["unit"], r["n"]) for r in akp_summary(layer)]
        [('LoG', 'sigma', 'px', 2)]
    """
    rows = []
    for i, (sym, _start, _stop, param) in enumerate(layer.segment_params()):
        fam = FAMILIES[sym]
        if not fam.akps or param is None:
            continue
        values = param.detach().double().cpu()
        for j, akp in enumerate(fam.akps):
            v = values[:, j]
            if akp.is_scale:
                v = v.abs().clamp(SCALE_MIN, SCALE_MAX)
            rows.append(
                {
                    "family": fam.name,
                    "segment": i,
                    "akp": akp.name,
                    "unit": akp.unit,
                    "n": int(v.numel()),
                    "min": float(v.min()),
                    "median": float(v.median()),
                    "max": float(v.max()),
                }
            )
    return rows


@torch.no_grad()
def _layer_energy(layer: AnalyticConv2d, x: Tensor) -> dict[str, Any]:
    if layer.padding_mode != "zeros":
        x = F.pad(x, layer._padding_amounts(), mode=layer.padding_mode)
        padding: Any = 0
    else:
        padding = layer.padding
    weight = layer.weight.detach()
    flat = weight.reshape(-1, *layer.kernel_size)
    kinds = layer.spec.kinds()
    energy: dict[str, float] = {}
    for sym in dict.fromkeys(kinds):  # families in mosaic order, each once
        mask = torch.tensor([k == sym for k in kinds], device=flat.device)
        part = (flat * mask[:, None, None].to(flat.dtype)).view_as(weight)
        out = F.conv2d(x, part, None, layer.stride, padding, layer.dilation, layer.groups)
        energy[FAMILIES[sym].name] = float(out.double().square().sum())
    whole = F.conv2d(x, weight, None, layer.stride, padding, layer.dilation, layer.groups)
    total = float(whole.double().square().sum())
    parts = sum(energy.values())
    return {
        "share": {name: (e / parts if parts > 0 else 0.0) for name, e in energy.items()},
        "cross": (total - parts) / total if total > 0 else 0.0,
    }


def family_energy(model: nn.Module, x: Tensor) -> dict[str, dict[str, Any]]:
    """Each family's share of every ACL's output energy on inputs ``x``.

    Args:
        model: a network with ``AnalyticConv2d`` layers; run once in its current mode.
        x: a batch of real inputs (a few hundred images are plenty).

    Returns:
        ``{layer name: {"share": {family name: share}, "cross": remainder}}``; the
        shares of a layer add up to 1.

    Examples:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> net = nn.Sequential(AnalyticConv2d(1, 4, 3, spec="Lg2P2"))
        >>> e = family_energy(net, torch.randn(8, 1, 6, 6))["0"]
        >>> sorted(e["share"]), round(sum(e["share"].values()), 6)
        (['LoG', 'Plain'], 1.0)
    """
    inputs: dict[str, Tensor] = {}
    hooks = [
        layer.register_forward_pre_hook(lambda _m, args, name=name: inputs.__setitem__(name, args[0].detach()))
        for name, layer in acl_layers(model)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {name: _layer_energy(layer, inputs[name]) for name, layer in acl_layers(model) if name in inputs}
