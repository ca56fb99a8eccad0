"""ChannelPrune's decision: which channel classes of the zeroed model go, which stay and why, what folds where.

A class (``acl.channel_graph``) goes when every channel-mixing reader of every
value in it either has all-zero weights for that channel, or reads a constant
(structurally: a zeroed output row's bias, through BatchNorm, activations,
max/adaptive pooling and additions of constants). Without zero padding the constant
times its weights moves into the reader's bias exactly. Through zero padding it is
not constant at the border, so it moves onto one kept constant channel of the same
value instead (``acl.pruning_carrier``), also exactly. A constant that is exactly
zero (a ReLU of a non-positive shift) just goes.
A module never loses every input or output channel: one class is kept for it.
"""

from __future__ import annotations

import operator
from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from acl.channel_graph import ChannelGraph
from acl.pruning_align import align_channels
from acl.pruning_carrier import choose_carriers, column_deltas

__all__ = ["Plan", "plan_removal"]

_CONSTANT_KEEPING = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_CONSTANT_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
                       torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.max_pool2d}  # fmt: skip


@dataclass
class Plan:
    removed: set[int] = field(default_factory=set)
    kept: dict[int, str] = field(default_factory=dict)  # class root -> why
    folds: list[tuple[str, str, int, bool]] = field(default_factory=list)  # (reader, value node, channel, padded)
    bias_delta: dict[str, Tensor] = field(default_factory=dict)
    carriers: dict[str, int] = field(default_factory=dict)  # value node -> its carrier channel (acl.pruning_carrier)
    column_delta: dict[str, dict[int, Tensor]] = field(default_factory=dict)

    def kept_reasons(self) -> dict[str, int]:
        return dict(Counter(self.kept.values()).most_common())

    def folded_counts(self) -> dict[str, int]:
        return dict(Counter(f[0] for f in self.folds))


def _values(gm: fx.GraphModule, example: Tensor) -> dict[str, Tensor]:
    """Every node's output on ``example``, cloned as it is made (a later in-place op would change it)."""
    found: dict[str, Tensor] = {}

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, Tensor):
                found[n.name] = out.detach().clone()
            return out

    _Recorder(gm).run(example)
    return found


def _constants(g: ChannelGraph, gm: fx.GraphModule) -> dict[str, Tensor]:
    """Per value, which channels are structurally constant in the zeroed model."""
    const: dict[str, Tensor] = {}
    for node in gm.graph.nodes:
        if node.name in g.channels:
            const[node.name] = _constant_of(g, gm, node, const)
    return const


def _constant_of(g: ChannelGraph, gm: fx.GraphModule, node: fx.Node, const: dict[str, Tensor]) -> Tensor:
    none = torch.zeros(g.channels[node.name], dtype=torch.bool)
    src = [a.name for a in node.all_input_nodes if a.name in const]
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            return m.weight.flatten(1).abs().sum(1) == 0  # a zero row emits its bias everywhere, padding or not
        keeps = isinstance(m, _CONSTANT_KEEPING) or (isinstance(m, nn.AvgPool2d) and _no_padding(m.padding))
        if keeps and src:
            return const[src[0]].clone()
        if isinstance(m, nn.Flatten) and src:
            return _flattened(g, src[0], node.name, const)
        return none
    if node.target in (operator.add, operator.iadd, torch.add) and src:
        same = [const[s] for s in src if len(const[s]) == len(none)]
        return torch.stack(same).all(0) if len(same) == len(src) else none
    if node.target in _CONSTANT_FUNCTIONS or node.target in ("relu", "relu_"):
        return const[src[0]].clone() if src else none
    if node.target is torch.cat and src:
        return torch.cat([const[s] for s in src]) if sum(len(const[s]) for s in src) == len(none) else none
    if (node.target is torch.flatten or node.target == "flatten") and src:
        return _flattened(g, src[0], node.name, const)
    return none


def _no_padding(padding) -> bool:
    return all(p == 0 for p in (padding if isinstance(padding, tuple) else (padding,)))


def _flattened(g: ChannelGraph, src: str, dst: str, const: dict[str, Tensor]) -> Tensor:
    shape = g.shapes[src]
    if len(shape) != 4:
        return torch.zeros(g.channels[dst], dtype=torch.bool)
    return const[src].repeat_interleave(shape[2] * shape[3])


def _members(g: ChannelGraph) -> dict[int, list[tuple[str, int]]]:
    out: dict[int, list[tuple[str, int]]] = {}
    for node, n in g.channels.items():
        for c in range(n):
            out.setdefault(g.cls(node, c), []).append((node, c))
    return out


def _reader_weights(g: ChannelGraph, gm: fx.GraphModule) -> dict[str, tuple[Tensor, Tensor]]:
    """Per reader: ``[out, in]`` weights a constant input meets (a kernel's sum), and which inputs it reads at all."""
    out = {}
    for name in {r.module for rs in g.readers.values() for r in rs}:
        w = gm.get_submodule(name).weight.detach()
        summed = w.flatten(2).sum(2) if w.dim() == 4 else w
        reads = (w.flatten(2).abs().sum((0, 2)) if w.dim() == 4 else w.abs().sum(0)) != 0
        out[name] = (summed, reads)
    return out


def _decide(g: ChannelGraph, gm: fx.GraphModule, members, const, weights, values) -> tuple[str | None, list]:
    """Why a class must stay (None: it can go), and the reads whose constant folds into a bias.

    A constant that is exactly zero (a ReLU of a non-positive BatchNorm shift) is what
    zero padding pads with, so it goes whatever the reader's padding, with nothing to fold.
    """
    folds = []
    for node, c in members:
        for r in g.readers.get(node, []):
            if bool(const[node][c]) and _is_zero(values[node], c):
                continue
            if bool(const[node][c]) and (r.foldable or bool(weights[r.module][1][c])):
                folds.append((r.module, node, c, not r.foldable))  # through padding: onto a carrier
            elif bool(weights[r.module][1][c]):
                return f"read by {_kind(gm, r.module)} with nonzero weights", []
    return None, folds


def _is_zero(value: Tensor, c: int) -> bool:
    return not bool(value[:, c].any())


def _kind(gm: fx.GraphModule, module: str) -> str:
    m = gm.get_submodule(module)
    if isinstance(m, nn.Linear):
        return "a Linear layer"
    return "a 1x1 convolution" if m.kernel_size == (1, 1) else "a spatial convolution"


@torch.no_grad()
def plan_removal(g: ChannelGraph, gm: fx.GraphModule, example: Tensor, multiple: int = 1) -> Plan:
    """The classes to remove from the zeroed model traced as ``gm``, with the bias corrections; every convolution
    keeps a multiple of ``multiple`` channels (``acl.pruning_align``)."""
    const = _constants(g, gm)
    members = _members(g)
    produced = {g.cls(node, c) for name, node in g.calls.items()
                if isinstance(gm.get_submodule(name), nn.Conv2d) for c in range(g.channels[node])}  # fmt: skip
    weights = _reader_weights(g, gm)
    values = _values(gm, example)
    plan = Plan()
    candidate_folds: dict[int, list] = {}
    for root in sorted(produced):
        why = g.pinned(root)
        folds: list = []
        if why is None:
            why, folds = _decide(g, gm, members[root], const, weights, values)
        if why is None:
            plan.removed.add(root)
            candidate_folds[root] = folds
        else:
            plan.kept[root] = why
    plan.carriers = choose_carriers(plan, candidate_folds, values, g.cls)
    _keep_every_module_alive(g, gm, plan)
    align_channels(g, gm, plan, multiple)
    plan.folds = [f for root in plan.removed for f in candidate_folds[root]]
    _bias_deltas(plan, values, weights)
    plan.column_delta = column_deltas(plan, gm, values)
    return plan


def _keep_every_module_alive(g: ChannelGraph, gm: fx.GraphModule, plan: Plan) -> None:
    for name, node in g.calls.items():
        if isinstance(gm.get_submodule(name), nn.BatchNorm2d):
            continue
        for value in (g.inputs[node], node):
            roots = [g.cls(value, c) for c in range(g.channels[value])]
            if all(r in plan.removed for r in roots):
                plan.removed.discard(roots[0])
                plan.kept[roots[0]] = "the last channel of a layer (a layer keeps at least one)"


def _bias_deltas(plan: Plan, values: dict[str, Tensor], weights) -> None:
    for module, node, c, through_padding in plan.folds:
        if through_padding:
            continue
        v = values[node][0, c].flatten()[0]
        delta = weights[module][0][:, c] * v
        plan.bias_delta[module] = plan.bias_delta.get(module, 0) + delta
