"""Live-akp files: each ACL's ``Conv`` split by output channels into generated and constant kernels.

A live-akp file computes its Conv weights at every call, so ONNX Runtime can
neither pre-pack them nor use its blocked (NCHWc) convolution, which needs constant
weights. The plain (and fixed-family) kernels of an ACL are constants, but as part
of one weight with the generated ones they were copied into it at every call (a
``Concat``) and convolved as run-time weights too. ``split_convs`` gives them their
own ``Conv`` when they fill whole output channels (``DEFAULT_SPEC``: the last half
of every ACL): one ``Conv`` per run of generated or constant kernels, outputs
concatenated along channels. A Conv's output channels are independent, so the
outputs are the same; the constant part is pre-packed at session creation, as in
the static file.

Only live-akp files are split: in a live file ONNX Runtime folds the whole weight at
load, and one Conv with its BatchNorm folded in is faster than two and a ``Concat``.
A layer stays one Conv when its runs do not fall on whole output channels, its Conv
is grouped, or its bias is not a constant.

The pieces are named ``<layer>.weight.<k>`` in channel order (``<layer>.weight`` no
longer exists in the graph); ``join_split_weights`` adds the ``Concat`` that makes
``<layer>.weight`` again, for tools that read the whole kernels (``deploy.hotswap``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper

from export import passes

__all__ = ["join_split_weights", "split_convs"]


@dataclass
class _Run:
    """Consecutive segments of one kind: constant (plain, fixed) or generated at every call."""

    constant: bool
    parts: list[gs.Tensor] = field(default_factory=list)

    @property
    def kernels(self) -> int:
        return sum(int(p.shape[0]) for p in self.parts)


def split_convs(live: onnx.ModelProto) -> onnx.ModelProto:
    """``live`` with every splittable ACL Conv split into a Conv per run of generated or constant kernels."""
    graph = gs.import_onnx(live)
    tensors = graph.tensors()
    for layer in passes.layers_from_metadata(live):
        weight = tensors.get(f"{layer}.weight")
        runs = _runs(weight)
        if runs:
            _split(graph, layer, weight, runs)
    return passes.finish(graph, functions=list(live.functions), meta=passes.metadata(live))


def _runs(weight: gs.Tensor | None) -> list[_Run] | None:
    """The weight's parts as runs of whole output channels, or None when the Conv must stay whole."""
    if not (isinstance(weight, gs.Variable) and len(weight.inputs) == 1 and weight.inputs[0].op == "Reshape"):
        return None
    conv = weight.outputs[0] if len(weight.outputs) == 1 else None
    if conv is None or conv.op != "Conv" or conv.inputs[1] is not weight or conv.attrs.get("group", 1) != 1:
        return None
    if len(conv.inputs) > 2 and not isinstance(conv.inputs[2], gs.Constant):
        return None
    kernels = weight.inputs[0].inputs[0]
    if len(kernels.inputs) != 1 or kernels.inputs[0].op != "Concat":
        return None
    runs: list[_Run] = []
    for part in kernels.inputs[0].inputs:
        constant = isinstance(part, gs.Constant)
        if not runs or runs[-1].constant != constant:
            runs.append(_Run(constant))
        runs[-1].parts.append(part)
    in_channels = int(weight.inputs[0].inputs[1].values[1])
    if len(runs) < 2 or any(r.kernels % in_channels for r in runs):
        return None
    return runs


def _split(graph: gs.Graph, layer: str, weight: gs.Variable, runs: list[_Run]) -> None:
    """Replace the layer's Conv by one Conv per run and a ``Concat`` of their outputs."""
    conv = weight.outputs[0]
    shape = [int(v) for v in weight.inputs[0].inputs[1].values]
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    outputs, start = [], 0
    for k, run in enumerate(runs):
        end = start + run.kernels // shape[1]
        piece = _piece(graph, f"{layer}.weight.{k}", run, [end - start, *shape[1:]])
        inputs = [conv.inputs[0], piece]
        if bias is not None:
            inputs.append(gs.Constant(f"{bias.name}.{k}", np.ascontiguousarray(bias.values[start:end])))
        outputs.append(gs.Variable(f"{conv.outputs[0].name}.{k}", dtype=np.float32))
        graph.nodes.append(gs.Node("Conv", f"{layer}/acl/Conv{k}", dict(conv.attrs), inputs, [outputs[-1]]))
        start = end
    y = conv.outputs[0]
    conv.outputs.clear()
    graph.nodes.append(gs.Node("Concat", f"{layer}/acl/ConvConcat", {"axis": 1}, outputs, [y]))


def _piece(graph: gs.Graph, name: str, run: _Run, shape: list[int]) -> gs.Variable:
    """One run's weight: its parts concatenated and reshaped.

    A constant run stays a ``Reshape`` of its initializers, which keep their names
    (``<layer>.plain<i>``, ``<layer>.fixed<i>_<symbol>``): ONNX Runtime folds it at
    load, before it pre-packs the weight.
    """
    kernels = run.parts[0]
    if len(run.parts) > 1:
        kernels = gs.Variable(f"{name}.kernels", dtype=np.float32, shape=[run.kernels, *shape[2:]])
        graph.nodes.append(gs.Node("Concat", f"{name}/Concat", {"axis": 0}, list(run.parts), [kernels]))
    piece = gs.Variable(name, dtype=np.float32, shape=shape)
    dims = gs.Constant(f"{name}.shape", np.array(shape, dtype=np.int64))
    graph.nodes.append(gs.Node("Reshape", f"{name}/Reshape", inputs=[kernels, dims], outputs=[piece]))
    return piece


def join_split_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing ``<layer>.weight`` again (a ``Concat`` of its pieces) for every split ACL."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    produced = {o for n in out.graph.node for o in n.output} | {t.name for t in out.graph.initializer}
    for layer in passes.layers_from_metadata(out):
        name = f"{layer}.weight"
        pieces = []
        while f"{name}.{len(pieces)}" in produced:
            pieces.append(f"{name}.{len(pieces)}")
        if name not in produced and pieces:
            out.graph.node.append(helper.make_node("Concat", pieces, [name], name=f"{layer}/acl/WeightConcat", axis=0))
    return out
