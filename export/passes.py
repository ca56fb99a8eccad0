"""ONNX graph passes over exported ACL models, with onnx-graphsurgeon.

* ``make_live``: static -> live. Each ACL's baked ``Conv`` weight initializer is
  replaced by ``ai.acl`` kernel-generation nodes over AKP initializers (and the
  plain-kernel and fixed-kernel initializers, constants), concatenated in spec order
  and reshaped to the weight; one generator call per op and kernel size serves
  every ACL (``export.banks``).
* ``expose_akp_inputs``: every AKP initializer also becomes a graph input of the
  same name, so its stored value is the default and a caller may feed new AKPs.
* ``bake``: live -> static without PyTorch: every computed Conv weight is
  evaluated from the file's own function bodies (``onnx.reference``) and stored
  as an initializer again.

Every pass ends with ``cleanup().toposort()`` and a full ``onnx.checker`` check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from export.atomic import write_bytes
from export.banks import Generator, add_generators
from export.functions import DOMAIN, DOMAIN_VERSION, OP_OF_SYMBOL, OPSET, function_proto

IR_VERSION = 10
"""IR version written: onnx 1.23 writes 14 by default, onnxruntime 1.31 reads at most 13,
and TensorRT 10's parser reads 10."""

META_MODE = "acl_deploy.mode"
META_LAYERS = "acl_deploy.layers"


@dataclass
class LiveSegment:
    """One spec segment of an ACL as the live file stores it."""

    symbol: str
    count: int
    values: np.ndarray | None  # AKPs [n, p], plain or fixed-family kernels [n, h, w], or None for Mean
    name: str  # initializer name (module path + parameter name)


@dataclass
class LiveLayer:
    """What ``make_live`` needs to know about one ACL."""

    name: str  # module path, e.g. "conv1"
    spec: str  # canonical count form
    weight_shape: tuple[int, int, int, int]
    segments: list[LiveSegment] = field(default_factory=list)

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.weight_shape[2], self.weight_shape[3]


def grid_array(h: int, w: int) -> np.ndarray:
    """``float32[2, h, w]`` sampling grid of eq. 3 (``x`` rows, ``y`` columns)."""
    x = np.arange(h, dtype=np.float64) - (h - 1) / 2
    y = np.arange(w, dtype=np.float64) - (w - 1) / 2
    return np.stack(np.meshgrid(x, y, indexing="ij")).astype(np.float32)


def finish(graph: gs.Graph, *, functions: list[onnx.FunctionProto], meta: dict[str, str]) -> onnx.ModelProto:
    """cleanup, toposort, export with our IR/opsets, attach functions and metadata, full check."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    model = gs.export_onnx(graph, do_type_check=True)
    model.ir_version = IR_VERSION
    del model.opset_import[:]
    model.opset_import.append(helper.make_opsetid("", OPSET))
    if functions:
        model.opset_import.append(helper.make_opsetid(DOMAIN, DOMAIN_VERSION))
    del model.functions[:]
    model.functions.extend(functions)
    _set_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))


def _with_mode(model: onnx.ModelProto, mode: str) -> onnx.ModelProto:
    """Record the export mode, then run the full checker."""
    _set_metadata(model, {**metadata(model), META_MODE: mode})
    onnx.checker.check_model(model, full_check=True)
    return model


def strip_name_prefix(model: onnx.ModelProto, prefix: str) -> None:
    """Rename, in place, every initializer, value and node input/output ``prefix + rest`` to ``rest``."""

    def fix(name: str) -> str:
        return name[len(prefix) :] if name.startswith(prefix) else name

    for t in model.graph.initializer:
        t.name = fix(t.name)
    for vi in (*model.graph.input, *model.graph.output, *model.graph.value_info):
        vi.name = fix(vi.name)
    for node in model.graph.node:
        node.input[:] = [fix(n) for n in node.input]
        node.output[:] = [fix(n) for n in node.output]


def store_weights(exported: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """Turn the named weight graph inputs into initializers holding ``weights`` (the static file).

    The initializer ``<layer>.weight`` then holds exactly ``layer.weight`` of the
    PyTorch ACL, with nothing folded in, so that TensorRT refit and AKP hot-swap
    can replace it with newly generated kernels as they are.
    """
    graph = gs.import_onnx(exported)
    tensors = graph.tensors()
    for name, value in weights.items():
        var = tensors.get(name)
        if not (isinstance(var, gs.Variable) and var in graph.inputs):
            raise ValueError(f"exported model has no graph input {name!r} to store")
        const = gs.Constant(name, np.ascontiguousarray(value, dtype=np.float32))
        graph.inputs.remove(var)
        for consumer in list(var.outputs):
            for k, t in enumerate(consumer.inputs):
                if t is var:
                    consumer.inputs[k] = const
        var.name = f"{name}.input"
    return finish(graph, functions=[], meta=metadata(exported))


def _weight_input(graph: gs.Graph, tensors: dict, layer: str) -> gs.Variable:
    """The graph input ``<layer>.weight`` feeding a Conv weight; anything else is refused (``make_live``)."""
    wname = f"{layer}.weight"
    weight = tensors.get(wname)
    if weight is None:
        raise ValueError(f"exported model has no tensor {wname!r} for ACL layer {layer!r}")
    if not (isinstance(weight, gs.Variable) and weight in graph.inputs):
        raise ValueError(
            f"{wname!r} must be a graph input (export with the ACL weights as inputs); got a "
            f"{type(weight).__name__}, which may hold a folded BatchNorm and cannot be replaced by raw kernels"
        )
    if not [n for n in weight.outputs if n.op == "Conv" and n.inputs[1] is weight]:
        raise ValueError(f"graph input {wname!r} does not feed a Conv weight")
    return weight


def make_live(exported: onnx.ModelProto, layers: list[LiveLayer]) -> onnx.ModelProto:
    """Feed each ACL's Conv weight from kernel generation over AKPs.

    ``exported`` must have every ACL weight (``<layer>.weight``) as a graph *input*,
    as ``to_onnx`` exports it for live mode, so that nothing (a BatchNorm scale
    above all) was folded into it: the generated kernels are the raw ACL kernels.
    A weight stored as an initializer is refused, because it may hold such a fold.
    """
    graph = gs.import_onnx(exported)
    tensors = graph.tensors()
    grids: dict[tuple[int, int], gs.Constant] = {}
    used_ops: set[str] = set()
    generators: list[Generator] = []
    for layer in layers:
        weight = _weight_input(graph, tensors, layer.name)
        h, w = layer.kernel_size
        if (h, w) not in grids:
            grids[h, w] = gs.Constant(f"acl.grid.{h}x{w}", grid_array(h, w))
        grid = grids[h, w]

        parts: list[gs.Tensor] = []
        for i, seg in enumerate(layer.segments):
            if seg.symbol not in OP_OF_SYMBOL:  # Plain or a fixed family: the kernels themselves, a constant
                parts.append(gs.Constant(seg.name, np.ascontiguousarray(seg.values, dtype=np.float32)))
                continue
            op = OP_OF_SYMBOL[seg.symbol]
            used_ops.add(op)
            if seg.symbol == "M":
                first = gs.Constant(seg.name, np.array([seg.count], dtype=np.int64))
            else:
                first = gs.Constant(seg.name, np.ascontiguousarray(seg.values, dtype=np.float32))
            out = gs.Variable(f"{layer.name}.kernels{i}", dtype=np.float32, shape=[seg.count, h, w])
            generators.append(Generator(op, first, grid, out, f"{layer.name}/acl/{op}{i}"))
            parts.append(out)

        total = sum(s.count for s in layer.segments)
        cat = gs.Variable(f"{layer.name}.kernels", dtype=np.float32, shape=[total, h, w])
        graph.nodes.append(
            gs.Node(op="Concat", name=f"{layer.name}/acl/Concat", attrs={"axis": 0}, inputs=parts, outputs=[cat])
        )
        shape = gs.Constant(f"{layer.name}.weight_shape", np.array(layer.weight_shape, dtype=np.int64))
        graph.inputs.remove(weight)
        graph.nodes.append(
            gs.Node(op="Reshape", name=f"{layer.name}/acl/Reshape", inputs=[cat, shape], outputs=[weight])
        )

    add_generators(graph, generators)
    meta = metadata(exported)
    meta[META_MODE] = "live"
    functions = [function_proto(op) for op in OP_OF_SYMBOL.values() if op in used_ops]
    return finish(graph, functions=functions, meta=meta)


def akp_initializer_names(model: onnx.ModelProto) -> list[str]:
    """Names of the AKP initializers of a live model, layer by layer in spec order (Mean kernels excluded).

    An AKP initializer is the first input of an ``ai.acl`` node, or an input of the
    ``Concat`` feeding one (a bank of several ACLs, ``export.banks``). A Mean node's
    first input is its kernel count: ``MeanKernel``, or ``Mean`` in files written
    before the rename (``export.functions.LEGACY_OPS``).
    """
    inits = {t.name for t in model.graph.initializer}
    concats = {n.output[0]: list(n.input) for n in model.graph.node if n.op_type == "Concat"}
    found = []
    for node in model.graph.node:
        if node.domain == DOMAIN and node.op_type not in ("MeanKernel", "Mean"):
            first = node.input[0]
            found += [first] if first in inits or first not in concats else concats[first]
    layers = list(layers_from_metadata(model))
    return sorted(dict.fromkeys(found), key=lambda name: _layer_major(name, layers, found))


def _layer_major(name: str, layers: list[str], found: list[str]) -> tuple[int, int, int]:
    """Sort key: the layer's place in the metadata, then the spec segment (``<layer>.akp<i>_<symbol>``)."""
    layer, _, param = name.rpartition(".")
    segment = param[3:].partition("_")[0] if param.startswith("akp") else ""
    return (
        layers.index(layer) if layer in layers else len(layers),
        int(segment) if segment.isdigit() else -1,
        found.index(name),
    )


def expose_akp_inputs(live: onnx.ModelProto) -> onnx.ModelProto:
    """Make every AKP initializer also a graph input (its value becomes the default)."""
    model = onnx.ModelProto()
    model.CopyFrom(live)
    inits = {t.name: t for t in model.graph.initializer}
    existing = {i.name for i in model.graph.input}
    for name in akp_initializer_names(model):
        if name in existing:
            continue
        t = inits[name]
        model.graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(t.dims)))
    return _with_mode(model, "live+akp_inputs")


def require_akp_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """AKPs as required graph inputs with no stored default (for TensorRT).

    TensorRT's ONNX parser imports a graph input that also has an initializer as a
    constant weight; dropping the initializers makes the AKPs real network inputs,
    so the engine computes its Conv weights from the AKPs fed at each run.
    """
    out = onnx.ModelProto()
    out.CopyFrom(
        model
        if any(i.name in set(akp_initializer_names(model)) for i in model.graph.input)
        else expose_akp_inputs(model)
    )
    names = set(akp_initializer_names(out))
    kept = [t for t in out.graph.initializer if t.name not in names]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    return _with_mode(out, "live+required_akp_inputs")


def bake(live: onnx.ModelProto) -> onnx.ModelProto:
    """Live -> static: fold every computed Conv weight to an initializer, drop the ai.acl ops."""
    from onnx.reference import ReferenceEvaluator

    graph = gs.import_onnx(live)
    targets = [
        n.inputs[1]
        for n in graph.nodes
        if n.op == "Conv" and len(n.inputs) > 1 and isinstance(n.inputs[1], gs.Variable) and n.inputs[1].inputs
    ]
    if not targets:
        raise ValueError("model has no computed Conv weights to bake (is it already static?)")
    names = list(dict.fromkeys(t.name for t in targets))

    inits = {t.name for t in live.graph.initializer}
    # The weights are evaluated from initializers alone (AKP inputs at their defaults).
    values = ReferenceEvaluator(_weights_only(live, names)).run(None, {})

    tensors = graph.tensors()
    for name, value in zip(names, values):
        var = tensors[name]
        const = gs.Constant(name, np.asarray(value, dtype=np.float32))
        for consumer in list(var.outputs):
            for k, t in enumerate(consumer.inputs):
                if t is var:
                    consumer.inputs[k] = const
        var.name = f"{name}.computed"
    graph.inputs = [t for t in graph.inputs if not (isinstance(t, gs.Variable) and t.name in inits)]
    graph.cleanup(remove_unused_graph_inputs=True)
    meta = metadata(live)
    meta[META_MODE] = "static"
    return finish(graph, functions=[], meta=meta)


def _weights_only(model: onnx.ModelProto, outputs: list[str]) -> onnx.ModelProto:
    """A model of just the nodes and initializers computing ``outputs``, with no graph inputs.

    Raises ``ValueError`` when ``outputs`` depend on anything but initializers.
    """
    inits = {t.name for t in model.graph.initializer}
    needed: set[str] = set(outputs)
    keep = []
    for node in reversed(model.graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    missing = [n for n in needed if n not in inits and not any(n in nd.output for nd in keep)]
    if missing:
        raise ValueError(f"Conv weights depend on non-constant tensors {sorted(missing)}; cannot bake")
    graph = helper.make_graph(
        list(reversed(keep)),
        "weights",
        [],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        initializer=[t for t in model.graph.initializer if t.name in needed],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    sub.ir_version = model.ir_version
    return sub


def layers_from_metadata(model: onnx.ModelProto) -> dict[str, str]:
    """``{layer: spec}`` recorded at export."""
    raw = metadata(model).get(META_LAYERS)
    return json.loads(raw) if raw else {}


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically."""
    return write_bytes(path, model.SerializeToString())
