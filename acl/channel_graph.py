"""Which channels of a CNN must be removed together: a channel dependency graph on ``torch.fx``.

Every tensor value of the traced graph has channels (dimension 1). Channels that
are *the same channel* seen through a shape-keeping op (BatchNorm, activations,
pooling, dropout, a depthwise convolution, a residual addition) are joined in one
class (union-find); a concatenation maps each output channel to one input's
channel, a flatten maps each feature to the channel it came from. Removing a
channel means removing its whole class, so a removal is consistent everywhere by
construction (across an addition every member agrees, since they are one class).

A class is *pinned* (never removed) when it touches what cannot shrink: the model
input or output, an op this module does not know (``reason`` says which), a
grouped convolution other than depthwise, or a module called more than once.

*Readers* are the ops that mix channels: a convolution with ``groups=1`` and a
Linear layer. They are where a removal must be exact: a reader whose weights
for a channel are all zero ignores it; a channel holding a constant can be folded
into the reader's bias when the reader has no zero padding.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from acl.analytic_conv import AnalyticConv2d

__all__ = ["ChannelGraph", "Reader", "trace_channels"]

_SAME_CHANNEL_MODULES = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
_SAME_CHANNEL_FUNCTIONS = {
    torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.nn.functional.silu,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
    torch.nn.functional.dropout,
}  # fmt: skip
_SAME_CHANNEL_METHODS = {"relu", "relu_", "contiguous"}
_ADD = {operator.add, operator.iadd, torch.add}
_FLATTEN = {torch.flatten}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, AnalyticConv2d) or super().is_leaf_module(m, qualname)


@dataclass
class Reader:
    """A channel-mixing op reading one value: a conv (``groups=1``) or a Linear (through a flatten)."""

    module: str
    value: str  # the node it reads
    foldable: bool  # no zero padding: a constant input channel can move into its bias exactly


@dataclass
class ChannelGraph:
    """Channels of every traced value, their classes, pins, readers and (for the zeroed model) constants.

    Attributes:
        channels: node name -> number of channels (dim 1) of its value.
        shapes: node name -> the value's shape on the example input.
        pins: class root -> why it cannot be removed.
        readers: node name -> the readers of that value.
        calls: module name -> the node that calls it (conv, BN, Linear).
        inputs: node name -> the name of its first tensor input.
    """

    channels: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    offset: dict[str, int] = field(default_factory=dict)
    parent: list[int] = field(default_factory=list)
    pins: dict[int, str] = field(default_factory=dict)
    readers: dict[str, list[Reader]] = field(default_factory=dict)
    calls: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    def add(self, node: str, shape: tuple[int, ...]) -> None:
        self.shapes[node] = shape
        self.channels[node] = shape[1]
        self.offset[node] = len(self.parent)
        self.parent.extend(range(len(self.parent), len(self.parent) + shape[1]))

    def find(self, i: int) -> int:
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
            why = self.pins.pop(max(ra, rb), None)
            if why and min(ra, rb) not in self.pins:
                self.pins[min(ra, rb)] = why

    def element(self, node: str, c: int) -> int:
        return self.offset[node] + c

    def cls(self, node: str, c: int) -> int:
        return self.find(self.element(node, c))

    def pin_value(self, node: str, why: str) -> None:
        for c in range(self.channels.get(node, 0)):
            root = self.cls(node, c)
            self.pins.setdefault(root, why)

    def pinned(self, root: int) -> str | None:
        return self.pins.get(self.find(root))


def trace_channels(model: nn.Module, example: torch.Tensor) -> tuple[ChannelGraph, fx.GraphModule]:
    """The channel graph of ``model`` (ACLs as leaves), with shapes from one run on ``example``."""
    from torch.fx.passes.shape_prop import ShapeProp

    graph = _Tracer().trace(model)
    gm = fx.GraphModule(model, graph)
    ShapeProp(gm).propagate(example)
    g = ChannelGraph()
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        if isinstance(meta, fx.passes.shape_prop.TensorMetadata) and len(meta.shape) >= 2:
            g.add(node.name, tuple(meta.shape))
    seen: set[str] = set()
    for node in gm.graph.nodes:
        _link(g, gm, node, seen)
    return g, gm


def _tensor_args(g: ChannelGraph, node: fx.Node) -> list[fx.Node]:
    flat = [a for a in node.args if isinstance(a, fx.Node)]
    for a in node.args:
        if isinstance(a, (list, tuple)):
            flat += [b for b in a if isinstance(b, fx.Node)]
    return [a for a in flat if a.name in g.channels]


def _link(g: ChannelGraph, gm: fx.GraphModule, node: fx.Node, seen: set[str]) -> None:
    """Join or pin the channels ``node`` touches, and record readers."""
    args = _tensor_args(g, node)
    if args:
        g.inputs[node.name] = args[0].name
    if node.op == "placeholder":
        g.pin_value(node.name, "model input")
    elif node.op == "output":
        for a in args:
            g.pin_value(a.name, "model output")
    elif node.op == "call_module":
        _link_module(g, gm.get_submodule(node.target), node, args, seen)
    elif node.op in ("call_function", "call_method"):
        _link_function(g, node, args)


def _same(g: ChannelGraph, a: str, b: str) -> bool:
    if g.channels.get(a) != g.channels.get(b):
        return False
    for c in range(g.channels[a]):
        g.union(g.element(a, c), g.element(b, c))
    return True


def _pin_all(g: ChannelGraph, node: fx.Node, args: list[fx.Node], why: str) -> None:
    for a in [*args, node]:
        g.pin_value(a.name, why)


def _link_module(g: ChannelGraph, m: nn.Module, node: fx.Node, args: list[fx.Node], seen: set[str]) -> None:
    name = str(node.target)
    if name in seen and isinstance(m, (nn.Conv2d, AnalyticConv2d, nn.BatchNorm2d, nn.Linear)):
        return _pin_all(g, node, args, f"module {name} is called more than once")
    seen.add(name)
    if isinstance(m, (nn.Conv2d, AnalyticConv2d)):
        g.calls[name] = node.name
        if m.groups == 1:
            foldable = all(p == 0 for p in m.padding) if not isinstance(m.padding, str) else m.padding == "valid"
            g.readers.setdefault(args[0].name, []).append(Reader(name, args[0].name, foldable))
        elif m.groups == m.in_channels == m.out_channels:
            _same(g, args[0].name, node.name)  # depthwise: input c and output c stand or fall together
        else:
            _pin_all(g, node, args, f"grouped convolution {name} (groups={m.groups}, not depthwise)")
    elif isinstance(m, nn.Linear):
        g.calls[name] = node.name
        g.readers.setdefault(args[0].name, []).append(Reader(name, args[0].name, True))
    elif isinstance(m, nn.Flatten):
        _flatten(g, node, args)
    elif isinstance(m, _SAME_CHANNEL_MODULES):
        if isinstance(m, nn.BatchNorm2d):
            g.calls[name] = node.name
        if not (args and _same(g, args[0].name, node.name)):
            _pin_all(g, node, args, f"{type(m).__name__} {name} changes the channel count")
    else:
        _pin_all(g, node, args, f"{type(m).__name__} {name} is not a layer channel pruning knows")


def _link_function(g: ChannelGraph, node: fx.Node, args: list[fx.Node]) -> None:
    target = node.target
    if node.name not in g.channels and not any(a.name in g.channels for a in args):
        return
    if target in _ADD or (node.op == "call_method" and target in ("add", "add_")):
        if not all(_same(g, a.name, node.name) for a in args):
            _pin_all(g, node, args, f"addition {node.name} broadcasts over channels")
    elif target in _SAME_CHANNEL_FUNCTIONS or (node.op == "call_method" and target in _SAME_CHANNEL_METHODS):
        if not (args and _same(g, args[0].name, node.name)):
            _pin_all(g, node, args, f"{node.name} changes the channel count")
    elif target is torch.cat and node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0) in (1, -3):
        _concat(g, node, args)
    elif target in _FLATTEN or (node.op == "call_method" and target == "flatten"):
        _flatten(g, node, args)
    elif node.op == "call_method" and target in ("size", "dim"):
        return
    else:
        _pin_all(g, node, args, f"{node.op} {getattr(target, '__name__', target)} ({node.name}) is not an op "
                                "channel pruning knows")  # fmt: skip


def _concat(g: ChannelGraph, node: fx.Node, args: list[fx.Node]) -> None:
    start = 0
    for a in args:
        for c in range(g.channels[a.name]):
            g.union(g.element(a.name, c), g.element(node.name, start + c))
        start += g.channels[a.name]


def _flatten(g: ChannelGraph, node: fx.Node, args: list[fx.Node]) -> None:
    src = g.shapes[args[0].name]
    dst = g.shapes.get(node.name)
    if len(src) != 4 or dst is None or len(dst) != 2:
        return _pin_all(g, node, args, f"flatten {node.name} is not [B, C, H, W] -> [B, CHW]")
    hw = src[2] * src[3]
    for f in range(dst[1]):
        g.union(g.element(node.name, f), g.element(args[0].name, f // hw))
