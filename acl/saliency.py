"""Spatial-kernel saliency (ExplainFix, Gaudio et al., Eq. 4): per kernel, per layer, per ACL family.

For every kernel ``f_j`` of every spatial convolution (kernel not 1x1)::

    w_j = sum_{m=1..M} 1^T | sum_{(x_i, y_i) in minibatch m} d(y_i^T yhat_i) / d f_j  o  f_j |

with ``y`` one-hot and ``yhat`` the logits: the gradient of the true-class logit,
summed over a minibatch *before* the absolute value (so the minibatch size matters:
4, the paper's footnote 5), times the kernel elementwise, then summed over the
kernel's entries and over ``M`` minibatches. Variant ``"grad"`` drops ``o f_j``.

An ACL is scored on its baked form (``acl.bake``): its kernel ``(o, i)`` is mosaic
index ``o * Ci/groups + i``, whose family its spec gives, so the scores add up per
family as well. The model runs in eval mode (BatchNorm with its running
statistics: a minibatch of 4 would make batch statistics mostly noise) on a baked
copy; the model itself is not touched and frozen weights are scored like any other.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from acl.conversion import acl_layers, bake
from acl.families import FAMILIES
from acl.fixing import is_spatial_kernel

__all__ = ["VARIANTS", "Saliency", "kernel_saliency", "zero_kernels"]

VARIANTS = ("weight_grad", "grad")
"""Eq. 4 (``weight_grad``), and the gradient-only variant the paper finds "sufficient" (``grad``)."""


@dataclass(frozen=True)
class Saliency:
    """The result of ``kernel_saliency``.

    Attributes:
        variant: ``weight_grad`` or ``grad``.
        minibatches: ``M``.
        batch_size: samples per minibatch.
        kernels: per spatial layer (module name), ``[Co, Ci/groups]`` saliency of each kernel.
        families: per ACL layer, the family symbol of each kernel in mosaic order (``o * Ci/groups + i``).
    """

    variant: str
    minibatches: int
    batch_size: int
    kernels: dict[str, Tensor]
    families: dict[str, tuple[str, ...]]

    def per_layer(self) -> dict[str, float]:
        """Sum of the kernel saliencies of each layer."""
        return {name: float(s.sum()) for name, s in self.kernels.items()}

    def per_family(self, layer: str | None = None) -> dict[str, float]:
        """Saliency per family name over every ACL (or one ACL ``layer``), in the registry's order."""
        sums: dict[str, float] = {}
        for name, kinds in self.families.items():
            if layer is None or name == layer:
                flat = self.kernels[name].flatten().tolist()
                for sym, value in zip(kinds, flat):
                    sums[sym] = sums.get(sym, 0.0) + value
        return {f.name: sums[sym] for sym, f in FAMILIES.items() if sym in sums}

    def summary(self) -> dict:
        """Plain numbers for a report: totals, per-layer and per-family shares (each set of shares sums to 1)."""
        layers = self.per_layer()
        total = sum(layers.values())
        out_layers = {}
        for name, value in layers.items():
            entry = {"kernels": self.kernels[name].numel(), "sum": value, "share": _share(value, total)}
            if name in self.families:
                fams = self.per_family(name)
                entry["families"] = {k: _share(v, sum(fams.values())) for k, v in fams.items()}
            out_layers[name] = entry
        fams = self.per_family()
        return {
            "variant": self.variant,
            "minibatches": self.minibatches,
            "batch_size": self.batch_size,
            "total": total,
            "layers": out_layers,
            "families": {k: _share(v, sum(fams.values())) for k, v in fams.items()},
        }


def _share(value: float, total: float) -> float:
    return value / total if total > 0 else 0.0


def _spatial_convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and is_spatial_kernel(m)]


def kernel_saliency(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    minibatches: int = 15,
    batch_size: int = 4,
    variant: str = "weight_grad",
) -> Saliency:
    """Eq. 4 for every spatial kernel of ``model`` over the first ``minibatches * batch_size`` samples.

    Args:
        model: a plain CNN or an AnaNN (not modified).
        x: standardised inputs, as the model takes them.
        y: class indices of ``x``.
        minibatches: ``M`` (the paper uses 15 or 50).
        batch_size: samples per minibatch (the paper's 4).
        variant: ``"weight_grad"`` (Eq. 4) or ``"grad"`` (gradient only).

    Returns:
        A ``Saliency``; ``summary()`` gives the shares as plain numbers.

    Raises:
        ValueError: an unknown variant, too few samples, or no spatial convolution.

    Shape:
        - x: :math:`(N, C, H, W)` with :math:`N \\ge M \\cdot B`; y: :math:`(N)`
        - Output kernels: :math:`(C_o, C_i / groups)` per layer

    Examples:
        >>> from acl import AnalyticConv2d
        >>> net = nn.Sequential(AnalyticConv2d(1, 4, 3, spec="D2P2"), nn.Flatten(), nn.Linear(64, 3))
        >>> g = torch.Generator().manual_seed(0)
        >>> s = kernel_saliency(net, torch.randn(8, 1, 6, 6, generator=g), torch.tensor([0, 1, 2, 0] * 2), minibatches=2)
        >>> s.kernels["0"].shape, round(sum(s.summary()["families"].values()), 6)
        (torch.Size([4, 1]), 1.0)
    """
    _check_arguments(x, y, minibatches, batch_size, variant)
    baked = copy.deepcopy(bake(model)).eval()
    convs = _spatial_convs(baked)
    if not convs:
        raise ValueError("the model has no spatial convolution (kernel other than 1x1), expected at least one")
    sums = _saliency_sums(baked, [conv for _, conv in convs], x, y, minibatches, batch_size, variant)
    kinds = {name: tuple(layer.spec.kinds()) for name, layer in acl_layers(model)}
    kernels = {name: s for (name, _), s in zip(convs, sums)}
    return Saliency(variant, minibatches, batch_size, kernels, {n: k for n, k in kinds.items() if n in kernels})


def _check_arguments(x: Tensor, y: Tensor, minibatches: int, batch_size: int, variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown saliency variant {variant!r}, expected one of {', '.join(VARIANTS)}")
    need = minibatches * batch_size
    if minibatches < 1 or batch_size < 1 or len(x) < need or len(y) < need:
        raise ValueError(
            f"saliency over {minibatches} minibatches of {batch_size} needs {need} samples, got {len(x)}, "
            "expected at least that many (and M, B >= 1)"
        )


def _saliency_sums(
    baked: nn.Module, convs: list[nn.Conv2d], x: Tensor, y: Tensor, minibatches: int, batch_size: int, variant: str
) -> list[Tensor]:
    """Eq. 4's sum over the minibatches, one ``[Co, Ci/groups]`` float64 tensor per conv of ``baked``."""
    weights = [conv.weight.requires_grad_(True) for conv in convs]
    sums = [torch.zeros(w.shape[:2], dtype=torch.float64) for w in weights]
    with torch.inference_mode(False), torch.enable_grad():
        for m in range(minibatches):
            xb, yb = x[m * batch_size : (m + 1) * batch_size], y[m * batch_size : (m + 1) * batch_size]
            true_logits = baked(xb).gather(1, yb.long().view(-1, 1)).sum()  # sum_i y_i^T yhat_i
            grads = torch.autograd.grad(true_logits, weights)
            for acc, g, w in zip(sums, grads, weights):
                term = g * w.detach() if variant == "weight_grad" else g
                acc += term.abs().sum((2, 3)).double().cpu()  # abs of the minibatch's sum, then 1^T
    return sums


@torch.no_grad()
def zero_kernels(model: nn.Module, saliency: Saliency, count: int, *, most: bool = False) -> nn.Module:
    """A baked copy of ``model`` with the ``count`` least (or ``most``) salient spatial kernels zeroed.

    Ranked globally over every layer of ``saliency`` (ties in module and mosaic
    order). ExplainFix's sanity check (App. I) and ChannelPrune's first step.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> s = Saliency("grad", 1, 1, {"0": torch.tensor([[2.0], [1.0]])}, {})
        >>> zero_kernels(net, s, 1)[0].weight[1].abs().sum().item()
        0.0
    """
    out = bake(model)
    names = list(saliency.kernels)
    scores = torch.cat([saliency.kernels[n].flatten() for n in names])
    where = [(n, k) for n in names for k in range(saliency.kernels[n].numel())]
    order = torch.argsort(scores, descending=most, stable=True)[:count]
    for idx in order.tolist():
        name, k = where[idx]
        conv = out.get_submodule(name)
        conv.weight.view(-1, *conv.kernel_size)[k] = 0
    return out
