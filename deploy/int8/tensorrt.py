"""The INT8 (Q/DQ) file as TensorRT's explicit quantization takes it, checked on the CPU.

TensorRT 10 and 11 build INT8 engines from QuantizeLinear/DequantizeLinear (Q/DQ)
nodes (``deploy.tensorrt.versions`` says how on each version). Its ONNX parser
(onnx-tensorrt's ``QuantDequantLinearHelper``, operators.md) takes a narrower set
of Q/DQ nodes than ONNX Runtime:

- ``DequantizeLinear`` inputs of INT8, FP8 or INT4 only. ONNX Runtime's
  ``quantize_static`` stores each Conv/Gemm bias as INT32 behind a
  ``DequantizeLinear`` (its ``QuantizeBias`` default), which TensorRT rejects
  (onnx-tensorrt issue 850, onnxruntime issue 17738). ``tensorrt_form`` replaces
  each such node by the float32 values it computes, ``(q - zero_point) * scale``:
  the same numbers ONNX Runtime computes, so the engine and the INT8 row of ONNX
  Runtime run one arithmetic, while the file ONNX Runtime serves keeps its INT32
  biases (its ``QLinearConv`` fusion takes them).
- zero points INT8 and all zero (symmetric; a UINT8 zero point is read as INT8,
  which changes the values), scales positive, per-channel scales only on constant
  tensors (weights): ``qdq_problems`` names every node that breaks one.

Pure ONNX and NumPy: nothing here needs TensorRT.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["QDQ_OPS", "TENSORRT_SUFFIX", "is_qdq", "qdq_problems", "tensorrt_form", "write_tensorrt_form"]

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
TENSORRT_SUFFIX = ".tensorrt.onnx"
"""``model.static-int8.onnx`` -> ``model.static-int8.tensorrt.onnx``: the form TensorRT builds from."""
DQ_INPUTS = (TensorProto.INT8, TensorProto.FLOAT8E4M3FN, TensorProto.INT4)


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))


def is_qdq(model: onnx.ModelProto | str | Path) -> bool:
    """Whether the graph holds Q/DQ nodes (an explicitly quantized file)."""
    return any(n.op_type in QDQ_OPS for n in _load(model).graph.node)


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every named tensor shape inference finds, initializers included."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def qdq_problems(model: onnx.ModelProto | str | Path) -> list[str]:
    """What TensorRT's parser would reject in the Q/DQ nodes of ``model``; empty when none.

    Checked per node: a ``DequantizeLinear`` input that is not INT8/FP8/INT4 (an
    INT32 bias: use ``tensorrt_form``), a zero point that is not INT8/FP8/INT4 or not
    all zeros, a constant scale that is not all positive, per-channel scales on a
    tensor that is not a constant (TensorRT quantizes activations per tensor).
    """
    model = _load(model)
    types = _types(model)
    inits = {t.name: t for t in model.graph.initializer}
    problems = []
    for i, node in enumerate(model.graph.node):
        if node.op_type in QDQ_OPS:
            where = f"node {i} {node.name!r} ({node.op_type})"
            problems += [f"{where}: {p}" for p in _node_problems(node, types, inits)]
    return problems


def _node_problems(node: onnx.NodeProto, types: dict[str, int], inits: dict[str, TensorProto]) -> list[str]:
    x, scale, zero = [*node.input, "", ""][:3]
    problems = []
    if node.op_type == "DequantizeLinear" and types.get(x) not in DQ_INPUTS:
        problems.append(
            f"input {x!r} is {_type_name(types.get(x))}; TensorRT dequantizes INT8, FP8 or INT4 only"
            + (" (an INT32 bias: tensorrt_form folds it into float32)" if types.get(x) == TensorProto.INT32 else "")
        )
    if zero:
        problems += _zero_point_problems(zero, types, inits)
    if scale in inits:
        values = numpy_helper.to_array(inits[scale])
        if not np.all(values > 0):
            problems.append(f"scale {scale!r} has values <= 0; TensorRT needs positive scales")
        if values.size > 1 and x not in inits:
            problems.append(
                f"per-channel scale {scale!r} on {x!r}, which is not a constant; TensorRT quantizes activations "
                "per tensor"
            )
    return problems


def _zero_point_problems(zero: str, types: dict[str, int], inits: dict[str, TensorProto]) -> list[str]:
    if types.get(zero) not in DQ_INPUTS:
        return [
            f"zero point {zero!r} is {_type_name(types.get(zero))}; TensorRT reads it as INT8 (symmetric "
            "quantization), which changes the values"
        ]
    if zero in inits and np.any(numpy_helper.to_array(inits[zero]).astype(np.float32) != 0):
        return [f"zero point {zero!r} is not all zeros; TensorRT supports symmetric quantization only"]
    return []


def _type_name(elem_type: int | None) -> str:
    return "of unknown type" if not elem_type else TensorProto.DataType.Name(elem_type)


def tensorrt_form(model: onnx.ModelProto | str | Path) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose INT32 ``DequantizeLinear`` constants are float32 initializers; the folded outputs.

    Each folded node's output becomes an initializer holding ``(q - zero_point) *
    scale`` along the node's ``axis``, computed in float32 as ``DequantizeLinear``
    does; nodes and initializers nothing else uses any more are dropped.

    Examples:
        >>> from onnx import helper
        >>> q = numpy_helper.from_array(np.array([3, -2], np.int32), "b_q")
        >>> s = numpy_helper.from_array(np.array([0.5, 0.25], np.float32), "b_s")
        >>> dq = helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], name="dq", axis=0)
        >>> add = helper.make_node("Add", ["x", "b"], ["y"], name="add")
        >>> g = helper.make_graph([dq, add], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        ...     [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], initializer=[q, s])
        >>> out, folded = tensorrt_form(helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)]))
        >>> folded, [n.op_type for n in out.graph.node], numpy_helper.to_array(out.graph.initializer[0]).tolist()
        (['b'], ['Add'], [1.5, -0.5])
    """
    src = _load(model)
    out = onnx.ModelProto()
    out.CopyFrom(src)
    inits = {t.name: t for t in out.graph.initializer}
    folded, keep = [], []
    for node in out.graph.node:
        x = node.input[0] if node.input else ""
        if node.op_type == "DequantizeLinear" and x in inits and inits[x].data_type == TensorProto.INT32:
            out.graph.initializer.append(numpy_helper.from_array(_dequantized(node, inits), node.output[0]))
            folded.append(node.output[0])
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    _drop_unused_initializers(out)
    return out, folded


def _dequantized(node: onnx.NodeProto, inits: dict[str, TensorProto]) -> np.ndarray:
    q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = (
        numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
        if len(node.input) > 2 and node.input[2]
        else np.zeros_like(scale)
    )
    if scale.size > 1:  # per axis: broadcast along the node's axis
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q - zero) * scale).astype(np.float32)


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def write_tensorrt_form(src: str | Path, dst: str | Path) -> Path:
    """Write ``tensorrt_form(src)`` to ``dst`` atomically.

    Raises:
        ValueError: ``src`` has no Q/DQ nodes, or its TensorRT form still breaks a
            rule of TensorRT's parser (``qdq_problems``, every problem named).
    """
    from export.atomic import write_bytes

    model = _load(src)
    if not is_qdq(model):
        raise ValueError(f"{src} has no QuantizeLinear/DequantizeLinear nodes, expected an INT8 (Q/DQ) file")
    out, _ = tensorrt_form(model)
    problems = qdq_problems(out)
    if problems:
        raise ValueError(f"{src} cannot be built by TensorRT: " + "; ".join(problems))
    return write_bytes(dst, out.SerializeToString())
