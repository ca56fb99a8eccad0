"""Model-level conversion: Conv2d -> ACL (training form) and ACL -> Conv2d (deploy form)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from torch import nn

from acl.analytic_conv import AnalyticConv2d
from acl.selection import LayerSelector, select
from acl.spec import Spec

__all__ = ["acl_layers", "bake", "convert", "from_conv"]


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at ``name`` and at every other name the module there is registered under.

    ``named_modules`` lists a module held under several names (a weight-tied pair)
    once; replacing only that name would untie the pair, leaving the old module at
    the other names.
    """
    old = root.get_submodule(name)
    _carry_hooks(old, new)
    aliases = [alias for alias, module in root.named_modules(remove_duplicate=False) if module is old]
    for alias in aliases:
        parent_name, _, child = alias.rpartition(".")
        setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def _carry_hooks(old: nn.Module, new: nn.Module) -> nn.Module:
    """``old``'s forward and forward-pre hooks registered on ``new`` (as ``torch.ao.quantization``'s module swap does).

    A hook on a convolution (feature extraction, logging, a shape check) keeps firing
    once the layer is converted or baked, instead of going silent. Handles returned for
    ``old`` do not remove them from ``new``.
    """
    for key, hook in old._forward_pre_hooks.items():
        new.register_forward_pre_hook(hook, with_kwargs=key in old._forward_pre_hooks_with_kwargs)
    for key, hook in old._forward_hooks.items():
        new.register_forward_hook(
            hook, with_kwargs=key in old._forward_hooks_with_kwargs, always_call=key in old._forward_hooks_always_called
        )
    return new


def from_conv(
    conv: nn.Conv2d, spec: str | Spec, *, init: Literal["random", "fit"] = "random", **fit_options: Any
) -> AnalyticConv2d:
    """An ACL in place of ``conv``: same hyper-parameters, bias, and plain kernels at their positions.

    Args:
        conv: the convolution to replace (left untouched).
        spec: the arrangement.
        init: how the analytic kernels start: ``"random"``, random AKPs
            (``acl.init_akps``); ``"fit"``, the AKPs that best reproduce ``conv``'s own
            kernels at their positions (``acl.fit``, least squares without gain).
        **fit_options: for ``init="fit"``: ``acl.fit``'s solver options (``seed``,
            ``steps``, ``time_limit``...).

    Examples:
        >>> import torch
        >>> from acl import generate
        >>> conv = nn.Conv2d(1, 2, 5)
        >>> with torch.no_grad():
        ...     conv.weight[0, 0] = generate("Lg", torch.tensor([[1.3]]), 5)[0]
        >>> layer = from_conv(conv, "Lg1P1", init="fit")
        >>> round(layer.akp0_Lg.item(), 4), torch.allclose(layer.weight, conv.weight, atol=1e-5)
        (1.3, True)
    """
    if init not in ("random", "fit"):
        raise ValueError(f"init must be 'random' or 'fit', got {init!r}")
    layer = AnalyticConv2d.from_conv(conv, spec)
    if init == "fit":
        from acl.fitting import fit_into  # the solver is needed only here

        fit_into(layer, conv.weight.detach(), **fit_options)
    elif fit_options:
        raise TypeError(f"options {sorted(fit_options)} apply to init='fit' only")
    return layer


def convert(
    model: nn.Module,
    spec: str | Spec | Mapping[str, str | Spec],
    *,
    layers: LayerSelector,
    inplace: bool = False,
    init: Literal["random", "fit"] = "random",
    allow_pointwise: bool = False,
) -> nn.Module:
    """Replace chosen ``nn.Conv2d`` layers with ``AnalyticConv2d`` (``from_conv``).

    Converting only the first layer gives the paper's ACL-X, several give AnaNN-X.
    Only *spatial* convolutions (kernels at least 2x2) are chosen: ``"all"`` and
    ``"first"`` pass over 1x1, 1xk and kx1 ones (``acl.selection.skipped_convs``
    names them) and a name choosing one is refused (``acl.selection``).

    Args:
        model: any module (a bare ``nn.Conv2d`` included).
        spec: one spec for every chosen layer (a ratio spec fits layers of any
            shape; a count spec only layers whose kernel total it matches), or a
            mapping from layer name to spec.
        layers: ``"first"`` (the first spatial convolution), ``"all"`` (every
            spatial one), a layer name, an iterable of names (as in
            ``named_modules()``), or a predicate ``(name, conv) -> bool``.
        inplace: modify ``model`` instead of a deep copy.
        init: ``"random"`` AKPs, or ``"fit"``: fitted to each replaced conv's kernels (``from_conv``).
        allow_pointwise: convert 1-pixel-wide convolutions chosen by name or
            predicate; only to rebuild models made when ``"all"`` converted them
            (their LoT and TGD1st kernels are zero at 1x1).

    Returns:
        The converted model (``model`` itself when ``inplace``).

    Raises:
        ValueError: unknown, non-Conv2d or 1-pixel-wide layer names, a chosen
            ``nn.Conv2d`` subclass with its own forward, a model without a spatial
            convolution, or a spec that does not fit a layer (the message names the layer).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Conv2d(6, 16, 5))
        >>> ana = convert(net, "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5", layers="all")
        >>> [str(m.spec) for m in ana.modules() if isinstance(m, AnalyticConv2d)]
        ['(1x6)G1Lg1Tf1P3', '(6x16)G15Lg8Lt7Tf18P48']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    names = select(model, layers, allow_pointwise=allow_pointwise).names
    _check_every_layer_has_a_spec(names, spec)
    out = model if inplace else copy.deepcopy(model)
    for name in _one_name_per_module(model, names):
        acl = _converted_layer(out, name, spec, init)
        if not name:
            return _carry_hooks(out, acl)
        _set_submodule(out, name, acl)
    return out


def _one_name_per_module(model: nn.Module, names: list[str]) -> list[str]:
    """``names`` without later names of a module already named: ``_set_submodule`` converts it at all its names."""
    seen: set[int] = set()
    out = []
    for name in names:
        module = model.get_submodule(name) if name else model
        if id(module) not in seen:
            seen.add(id(module))
            out.append(name)
    return out


def _check_every_layer_has_a_spec(names: list[str], spec: str | Spec | Mapping[str, str | Spec]) -> None:
    if isinstance(spec, Mapping):
        missing = [n for n in names if n not in spec]
        if missing:
            raise ValueError(f"no spec given for layer(s) {missing}")
        extra = [k for k in spec if k not in names]  # a misspelt name would otherwise be ignored silently
        if extra:
            raise ValueError(f"spec given for layer(s) {extra} that are not converted, expected specs for {names}")


def _converted_layer(model: nn.Module, name: str, spec, init: str) -> AnalyticConv2d:
    """The ACL replacing conv ``name`` of ``model`` (``""``: the model itself); errors name the layer."""
    conv = model.get_submodule(name) if name else model
    layer_spec = spec[name] if isinstance(spec, Mapping) else spec
    try:
        return from_conv(conv, layer_spec, init=init)
    except ValueError as e:
        raise ValueError(f"layer {name or '<root>'!r}: {e}") from None


def acl_layers(model: nn.Module) -> list[tuple[str, AnalyticConv2d]]:
    """``(name, layer)`` of every ``AnalyticConv2d`` in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AnalyticConv2d)]


def bake(model: nn.Module) -> nn.Module:
    """Deploy form: a deep copy with every ACL replaced by an ``nn.Conv2d``.

    Each Conv2d holds its ACL's generated kernels and bias, same hyper-parameters,
    device, dtype and train/eval mode. The input model is untouched. Idempotent:
    baking a baked model returns an equal copy.

    Examples:
        >>> import torch
        >>> acl = AnalyticConv2d(3, 8, 3, spec="Lg8P16", padding=1).eval()
        >>> conv = bake(acl)
        >>> type(conv).__name__, torch.allclose(conv(torch.ones(1, 3, 4, 4)), acl(torch.ones(1, 3, 4, 4)))
        ('Conv2d', True)
    """
    if isinstance(model, AnalyticConv2d):
        return _carry_hooks(model, model.to_conv())
    if not isinstance(model, nn.Module):  # as convert: a TypeError naming the type, not an AttributeError
        raise TypeError(f"bake expects an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    for name, layer in acl_layers(out):
        _set_submodule(out, name, layer.to_conv())
    return out
