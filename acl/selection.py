"""Which convolutions of a model become ACLs: only *spatial* ones.

An analytic kernel is a 2-D function sampled on the kernel grid (eqs. 2-3); it
needs a grid at least 2 pixels wide in both directions. On a 1-pixel-wide kernel
(1x1, 1xk, kx1) the families degenerate: at 1x1 every LoT and TGD1st kernel is
zero, and since the initial AKP ranges follow the kernel's smaller side, LoG
kernels start near 197 at 1x1, 1x3 and 3x1 alike (a plain initialisation stays
below 0.13), while the compact factor is negative at 1x1 (-0.84 for the paper's
exp3 arrangement: more parameters than the plain convolution) and 0.05 at 1x3.

So ``"all"`` means every spatial ``nn.Conv2d`` and ``"first"`` the first spatial
one; the 1-pixel-wide ones they pass over are returned as ``skipped``. A
1-pixel-wide convolution chosen explicitly (by name or predicate) is refused,
unless ``allow_pointwise`` asks for it: only to rebuild models made before this
rule, whose checkpoints hold such ACLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from torch import nn

from acl.analytic_conv import AnalyticConv2d
from acl.families import pair

__all__ = ["LayerSelector", "Selection", "is_spatial", "select", "skipped_convs"]

LayerSelector = str | Iterable[str] | Callable[[str, nn.Conv2d], bool]

EXPECTED_SPATIAL = "expected a convolution with a spatial kernel (at least 2x2)"


class Selection(NamedTuple):
    """The result of ``select``.

    Attributes:
        names: the convolutions to convert, in module order for ``"all"`` (as given otherwise).
        skipped: the 1-pixel-wide convolutions ``"all"`` or ``"first"`` passed over, in module order.
    """

    names: list[str]
    skipped: list[str]


def is_spatial(conv: nn.Module) -> bool:
    """True when ``conv``'s kernel is at least 2 pixels wide in both directions (see the module docstring)."""
    h, w = pair(conv.kernel_size)
    return h > 1 and w > 1


def _size(conv: nn.Module) -> str:
    h, w = pair(conv.kernel_size)
    return f"{h}x{w}"


def _refusal(name: str, conv: nn.Module) -> ValueError:
    return ValueError(
        f"layer {name or '<root>'!r} is a {_size(conv)} convolution (an analytic kernel needs a spatial extent), "
        f"{EXPECTED_SPATIAL}"
    )


def _custom_forward(conv: nn.Module) -> bool:
    """A subclass of ``nn.Conv2d`` that computes otherwise: its own ``forward`` or ``_conv_forward``.

    Weight standardisation (BiT's StdConv2d), QAT fake quantisation or a fused
    Conv-BN: an ACL computes a plain convolution, so it would drop that silently.
    Parametrized convolutions (``torch.nn.utils.parametrize``) keep ``nn.Conv2d``'s forward.
    """
    cls = type(conv)
    return cls.forward is not nn.Conv2d.forward or cls._conv_forward is not nn.Conv2d._conv_forward


def _check_plain_forward(name: str, conv: nn.Module) -> None:
    if isinstance(conv, nn.modules.lazy.LazyModuleMixin) and conv.has_uninitialized_params():
        raise ValueError(
            f"layer {name or '<root>'!r} is a {type(conv).__name__} whose in_channels are not known yet, expected a "
            "model run once on an input first (a lazy module takes its shape from its first input)"
        )
    if isinstance(conv, nn.Conv2d) and _custom_forward(conv):
        raise ValueError(
            f"layer {name or '<root>'!r} is a {type(conv).__name__}, a subclass of nn.Conv2d with its own forward, "
            "which an AnalyticConv2d would not keep; expected an nn.Conv2d (leave it out by choosing layers by name "
            "or predicate)"
        )


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _by_rule(model: nn.Module, rule: str) -> Selection:
    convs = _convs(model)
    spatial = [n for n, m in convs if is_spatial(m)]
    acls = [n for n, m in model.named_modules() if isinstance(m, AnalyticConv2d)]
    if acls and not spatial:  # converted before: say so, not that the convolutions left are 1x1 or missing
        raise ValueError(
            f"layers {rule!r}: the model's spatial convolutions are already ACLs ({', '.join(acls[:4])}"
            f"{' ...' if len(acls) > 4 else ''}), expected a model with nn.Conv2d layers to convert"
        )
    if not convs:
        raise ValueError(f"model has no nn.Conv2d layer to convert, {EXPECTED_SPATIAL}")
    if not spatial:
        sizes = sorted({_size(m) for _, m in convs})
        raise ValueError(
            f"layers {rule!r} converts spatial convolutions only, and the model's {len(convs)} convolution(s) have "
            f"1-pixel-wide kernels ({', '.join(sizes)}); {EXPECTED_SPATIAL}"
        )
    chosen = spatial[:1] if rule == "first" else spatial
    modules = dict(convs)
    for name in chosen:
        _check_plain_forward(name, modules[name])
    return Selection(chosen, skipped_convs(model, rule))


def _by_names(model: nn.Module, layers: str | Iterable[str], allow_pointwise: bool) -> list[str]:
    names = [layers] if isinstance(layers, str) else list(layers)
    modules = dict(model.named_modules(remove_duplicate=False))  # every name of a module held under several
    for name in names:
        if name not in modules:
            raise ValueError(
                f"layer {name!r} not found in the model; expected one of its nn.Conv2d layers: "
                f"{[n for n, _ in _convs(model)]}"
            )
        module = modules[name]
        if isinstance(module, AnalyticConv2d):
            raise ValueError(f"layer {name!r} is already an AnalyticConv2d")
        if not isinstance(module, nn.Conv2d):
            raise ValueError(f"layer {name!r} is a {type(module).__name__}, expected an nn.Conv2d")
        if not allow_pointwise and not is_spatial(module):
            raise _refusal(name, module)
        _check_plain_forward(name, module)
    return names


def select(model: nn.Module, layers: LayerSelector, *, allow_pointwise: bool = False) -> Selection:
    """The convolutions ``layers`` chooses in ``model``.

    Args:
        model: any module.
        layers: ``"first"`` (the first spatial convolution), ``"all"`` (every
            spatial one), a name, an iterable of names, or a predicate
            ``(name, conv) -> bool`` over every ``nn.Conv2d``.
        allow_pointwise: accept 1-pixel-wide convolutions chosen by name or
            predicate (``"all"``/``"first"`` skip them regardless).

    Raises:
        ValueError: no convolution (or no spatial one) for ``"all"``/``"first"``; a
            name not found, already an ACL, not an ``nn.Conv2d``, or 1 pixel wide.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 1))
        >>> select(net, "all"), select(net, "first").names
        (Selection(names=['1'], skipped=['0', '2']), ['1'])
    """
    if isinstance(layers, str) and layers in ("first", "all"):
        return _by_rule(model, layers)
    if callable(layers):
        chosen = [n for n, m in _convs(model) if layers(n, m)]
        return Selection(_by_names(model, chosen, allow_pointwise), [])
    return Selection(_by_names(model, layers, allow_pointwise), [])


def skipped_convs(model: nn.Module, layers: LayerSelector) -> list[str]:
    """The plain 1-pixel-wide convolutions ``"all"`` or ``"first"`` leaves in ``model``; ``[]`` for names or predicates.

    Works on the model before or after conversion: ``"first"`` skips those that
    come before the first spatial convolution (an ACL once converted); an ACL made
    from a 1x1 convolution (an older checkpoint) was converted, not skipped.
    """
    if not (isinstance(layers, str) and layers in ("first", "all")):
        return []
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, AnalyticConv2d))]
    if layers == "first":
        first = next((i for i, (_, m) in enumerate(convs) if is_spatial(m)), len(convs))
        convs = convs[:first]
    return [n for n, m in convs if isinstance(m, nn.Conv2d) and not is_spatial(m)]
