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
* ``family_index``, ``conv_input``: the split itself (which family each kernel
  belongs to; the layer's input as its convolution sees it), for other analyses
  of the parts, such as ``deploy.int8.risk``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.conversion import acl_layers
from acl.families import FAMILIES, SCALE_MAX, SCALE_MIN
from acl.hooks import forward_with_hooks

__all__ = ["akp_summary", "conv_input", "family_energy", "family_index"]


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


def family_index(layer: AnalyticConv2d) -> tuple[list[str], Tensor]:
    """The layer's family names in mosaic order (each once), and each kernel's position in that list.

    Shape:
        - Output: ``(names, index)``, ``index`` :math:`(C_o C_i / groups)` int64, in
          ``weight.reshape(-1, h, w)`` order (output-channel major).

    Examples:
        >>> index = family_index(AnalyticConv2d(1, 4, 3, spec="Lg1P2Lg1"))
        >>> index[0], index[1].tolist()
        (['LoG', 'Plain'], [0, 1, 1, 0])
    """
    kinds = layer.spec.kinds()
    symbols = list(dict.fromkeys(kinds))  # a family split over several segments is one family
    position = {sym: i for i, sym in enumerate(symbols)}
    index = torch.tensor([position[k] for k in kinds], dtype=torch.int64, device=layer._anchor.device)
    return [FAMILIES[sym].name for sym in symbols], index


def conv_input(layer: nn.Module, x: Tensor) -> tuple[Tensor, Any]:
    """``x`` padded as ``layer`` pads it, and the ``padding`` then left for ``F.conv2d``.

    What the layer's own forward does before its convolution, so the convolution can
    be run with other kernels (a family's part, an error). ``layer``: an
    ``AnalyticConv2d`` or an ``nn.Conv2d`` (same padding attributes, same amounts).
    """
    if layer.padding_mode == "zeros":
        return x, layer.padding
    return F.pad(x, AnalyticConv2d._padding_amounts(layer), mode=layer.padding_mode), 0  # type: ignore[arg-type]


@torch.no_grad()
def _layer_energy(layer: AnalyticConv2d, x: Tensor) -> dict[str, Any]:
    x, padding = conv_input(layer, x)
    weight = layer.weight.detach()
    flat = weight.reshape(-1, *layer.kernel_size)
    names, index = family_index(layer)
    energy: dict[str, float] = {}
    for i, name in enumerate(names):
        part = (flat * (index == i)[:, None, None].to(flat.dtype)).view_as(weight)
        out = F.conv2d(x, part, None, layer.stride, padding, layer.dilation, layer.groups)
        energy[name] = float(out.double().square().sum())
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
    forward_with_hooks(model, x, hooks)
    return {name: _layer_energy(layer, inputs[name]) for name, layer in acl_layers(model) if name in inputs}
