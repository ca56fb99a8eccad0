"""The shapes of a pruned model's rebuilt layers, recorded in its checkpoint so that ``--checkpoint`` rebuilds them.

``describe(model, names)`` gives ``{module: {"kind", ...}}`` (JSON-able): ``conv``
(in, out, groups, bias), ``acl`` (the same and its spec), ``bn`` (features) or
``linear`` (in, out, bias). ``apply(net, record, path)`` replaces those modules of
a freshly built architecture by empty ones of the recorded shapes (the checkpoint's
tensors are loaded into them afterwards); a record that does not fit the
architecture (unknown module, another kind, more channels than the architecture
has) is a ``UserError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from acl import AnalyticConv2d
from pipeline.errors import UserError

__all__ = ["apply", "describe"]


def describe(model: nn.Module, names: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        m = model.get_submodule(name)
        if isinstance(m, (nn.Conv2d, AnalyticConv2d)):
            entry = {"kind": "conv", "in": m.in_channels, "out": m.out_channels, "groups": m.groups,
                     "bias": m.bias is not None}  # fmt: skip
            if isinstance(m, AnalyticConv2d):
                entry |= {"kind": "acl", "spec": str(m.spec)}
        elif isinstance(m, nn.BatchNorm2d):
            entry = {"kind": "bn", "features": m.num_features}
        else:
            entry = {"kind": "linear", "in": m.in_features, "out": m.out_features, "bias": m.bias is not None}
        out[name] = entry
    return out


def apply(net: nn.Module, record: dict[str, dict[str, Any]], path: Path) -> nn.Module:
    """``net`` with the recorded modules in their pruned shapes (in place)."""
    for name, entry in record.items():
        try:
            old = net.get_submodule(name)
            new = _module(old, entry)
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise UserError(
                f"checkpoint {path} pruned shapes do not match the architecture at {name!r} ({str(e)[:120]}), "
                "expected the architecture the checkpoint was pruned from"
            ) from None
        parent, _, leaf = name.rpartition(".")
        setattr(net.get_submodule(parent) if parent else net, leaf, new)
    return net


def _fits(entry: dict[str, Any], old: nn.Module, kind: str, *pairs: tuple[int, int]) -> None:
    if entry["kind"] != kind:
        raise TypeError(f"recorded {entry['kind']}, the architecture has {type(old).__name__}")
    for recorded, full in pairs:
        if not 1 <= int(recorded) <= full:
            raise ValueError(f"{recorded} channels recorded, the architecture has {full}")


def _module(old: nn.Module, entry: dict[str, Any]) -> nn.Module:
    if isinstance(old, (nn.Conv2d, AnalyticConv2d)):
        kind = entry["kind"] if entry["kind"] in ("acl", "conv") else "conv"  # an ACL baked by pruning is a conv
        _fits(entry, old, kind, (entry["in"], old.in_channels), (entry["out"], old.out_channels))
        geometry = dict(kernel_size=old.kernel_size, stride=old.stride, padding=old.padding, dilation=old.dilation,
                        groups=int(entry["groups"]), bias=bool(entry["bias"]), padding_mode=old.padding_mode)  # fmt: skip
        if kind == "acl":
            return AnalyticConv2d(int(entry["in"]), int(entry["out"]), spec=str(entry["spec"]), **geometry)
        return nn.Conv2d(int(entry["in"]), int(entry["out"]), **geometry)
    if isinstance(old, nn.BatchNorm2d):
        _fits(entry, old, "bn", (entry["features"], old.num_features))
        return nn.BatchNorm2d(int(entry["features"]), old.eps, old.momentum, old.affine, old.track_running_stats)
    if isinstance(old, nn.Linear):
        _fits(entry, old, "linear", (entry["in"], old.in_features))
        return nn.Linear(int(entry["in"]), int(entry["out"]), bias=bool(entry["bias"]))
    raise TypeError(f"a {type(old).__name__} cannot hold a pruned shape")
