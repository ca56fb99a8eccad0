"""Fixing the spatial filters of any model (ExplainFix, Gaudio et al., sec. 3.1).

``fix_spatial(model, method)`` freezes, in place, every *spatial* convolution of a
plain CNN or an AnaNN: its weights and bias get ``requires_grad=False``, after their
kernels were set by ``method``. 1x1 convolutions, normalisation and linear layers
keep learning. Spatial means any kernel other than 1x1 (the paper's definition;
1xk and kx1 kernels are fixed too, unlike ``acl.selection``, which converts to
ACLs only kernels at least 2x2).

Methods (``METHODS``): ``none`` (nothing changes), ``unchanged`` (the current
kernels, frozen: random Unchanged on a fresh model), ``ones``, ``dct2``, ``ghaar``
and ``psine`` (drawn by ``acl.fixed_kernels``; DCT2 assigns the basis rows over a
layer's kernels with the balanced permutation), and ``guidedsteer`` (drawn by
``acl.guided`` from ``guide``: the spatial kernels of a trained network of the
same architecture, by layer name; Algorithm 1).

What fixing an ACL means: its AKPs and bias stop learning (the analytic kernels
stay the analytic functions they are at that moment), and its Plain kernels are
replaced by the method's kernels (kept as they are for ``unchanged``) and stop
learning. Its fixed-family and Mean kernels were never learned. The ACL keeps its
spec and parameter names, so checkpoints and exports are unchanged in form: frozen
AKPs are still AKPs (inputs of a live-akp file), frozen Plain kernels still Plain
kernels, and the compact factor (eq. 25, per spec) does not change; the learnable
count after fixing is ``FixSummary.learnable``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.fixed_families import fixed_kernels

__all__ = ["METHODS", "FixSummary", "fix_spatial", "is_spatial_kernel"]

METHODS = ("none", "unchanged", "ones", "dct2", "ghaar", "psine", "guidedsteer")
"""``fix_spatial``'s methods (``pipeline.fix_args`` repeats them without torch; a test keeps them equal)."""

_SYMBOL = {"ones": "O", "dct2": "D", "ghaar": "H", "psine": "S"}  # the fixed family each method draws from


@dataclass(frozen=True)
class FixSummary:
    """What ``fix_spatial`` did.

    Attributes:
        method: the method applied.
        fixed: the spatial convolutions and ACLs fixed, in module order.
        learning: the 1x1 convolutions left learning.
        frozen: parameter values frozen by this call.
        learnable: parameter values of the whole model still learnable afterwards.
    """

    method: str
    fixed: tuple[str, ...]
    learning: tuple[str, ...]
    frozen: int
    learnable: int

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def is_spatial_kernel(module: nn.Module) -> bool:
    """True for a convolution whose kernel is not 1x1 (ExplainFix's spatial convolution).

    Examples:
        >>> is_spatial_kernel(nn.Conv2d(2, 2, (1, 3))), is_spatial_kernel(nn.Conv2d(2, 2, 1))
        (True, False)
    """
    return tuple(module.kernel_size) != (1, 1)


Steer = Callable[[int], Tensor]
"""GuidedSteer's draw for one layer: ``n`` -> ``[n, h, w]`` kernels."""


def _kernels(
    method: str, current: Tensor, fan_in: int, generator: torch.Generator | None, steer: Steer | None
) -> Tensor:
    """``current``'s ``[n, h, w]`` kernels replaced per ``method`` (``unchanged``: themselves)."""
    if method == "unchanged":
        return current
    n, h, w = current.shape
    if steer is not None:
        return steer(n)
    return fixed_kernels(_SYMBOL[method], n, (h, w), fan_in=fan_in, generator=generator)


def _freeze(module: nn.Module) -> int:
    frozen = 0
    for p in module.parameters():
        if p.requires_grad:
            frozen += p.numel()
        p.requires_grad_(False)
    return frozen


@torch.no_grad()
def _fix_conv(conv: nn.Conv2d, method: str, generator: torch.Generator | None, steer: Steer | None) -> int:
    h, w = conv.kernel_size
    flat = conv.weight.view(-1, h, w)
    fan_in = conv.in_channels // conv.groups * h * w
    flat.copy_(_kernels(method, flat, fan_in, generator, steer))
    return _freeze(conv)


@torch.no_grad()
def _fix_acl(layer: AnalyticConv2d, method: str, generator: torch.Generator | None, steer: Steer | None) -> int:
    h, w = layer.kernel_size
    fan_in = layer.in_channels // layer.groups * h * w
    for sym, _start, _stop, tensor in layer.segment_params():
        if sym == "P":
            tensor.copy_(_kernels(method, tensor, fan_in, generator, steer))
    return _freeze(layer)


def _spatial(model: nn.Module) -> list[tuple[str, nn.Module]]:
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, AnalyticConv2d))]
    return [(n, m) for n, m in convs if is_spatial_kernel(m)]


def _steerers(
    model: nn.Module, method: str, guide: Mapping[str, Tensor] | None, generator: torch.Generator | None
) -> dict[str, Steer]:
    """GuidedSteer's draw per spatial layer (``{}`` for the other methods); checks ``guide`` before any kernel moves."""
    if (method == "guidedsteer") != (guide is not None):
        given = "no guide" if guide is None else "guide kernels"
        raise ValueError(f"fix_spatial {method!r} with {given}, expected guide kernels with 'guidedsteer' only")
    if guide is None:
        return {}
    from acl.guided import draw_guided, guide_bases, guide_problem

    layers = _spatial(model)
    found = guide_problem(guide, {n: tuple(m.kernel_size) for n, m in layers})
    if found:
        raise ValueError(found)
    bases = guide_bases(guide)  # one basis per kernel shape, over all the guide's layers (Algorithm 1's G)
    return {n: partial(draw_guided, guide[n], bases[tuple(m.kernel_size)], generator=generator) for n, m in layers}


def fix_spatial(
    model: nn.Module,
    method: str,
    *,
    generator: torch.Generator | None = None,
    guide: Mapping[str, Tensor] | None = None,
) -> FixSummary:
    """Fix every spatial convolution of ``model`` in place (module docstring): kernels per ``method``, then frozen.

    Args:
        model: any module (a plain CNN, an AnaNN, a bare convolution).
        method: one of ``METHODS``.
        generator: the random stream of the drawn kernels (every method but ``none`` and ``unchanged``);
            ``None``: the global one.
        guide: ``guidedsteer`` only (and required there): the guide network's spatial kernels by layer
            name, ``{layer: (..., h, w)}``; each spatial layer of ``model`` needs one of the same name and shape.

    Returns:
        A ``FixSummary``.

    Raises:
        ValueError: an unknown method; ``guide`` missing for ``guidedsteer`` or given for another method;
            a spatial layer the guide lacks or has with another kernel shape (nothing is changed then).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 8, 1))
        >>> s = fix_spatial(net, "dct2", generator=torch.Generator().manual_seed(0))
        >>> s.fixed, s.learning, net[0].weight.requires_grad, net[2].weight.requires_grad
        (('0',), ('2',), False, True)
        >>> guide = {"0": torch.randn(4, 1, 3, 3)}  # a trained net's kernels, in practice
        >>> fix_spatial(nn.Sequential(nn.Conv2d(1, 4, 3)), "guidedsteer", guide=guide).fixed
        ('0',)
    """
    if method not in METHODS:
        raise ValueError(f"unknown fix_spatial method {method!r}, expected one of {', '.join(METHODS)}")
    steer = _steerers(model, method, guide, generator)
    fixed, learning, frozen = [], [], 0
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, AnalyticConv2d)):
            continue
        if not is_spatial_kernel(module):
            learning.append(name)
        elif method != "none":
            fix = _fix_acl if isinstance(module, AnalyticConv2d) else _fix_conv
            frozen += fix(module, method, generator, steer.get(name))
            fixed.append(name)
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return FixSummary(method, tuple(fixed), tuple(learning), frozen, learnable)
