"""The INT8 Q/DQ file in the form ONNX Runtime's x86 CPU kernels run fast: uint8 activations, 7-bit weights without VNNI.

``model.static-int8.onnx`` has symmetric INT8 activations (zero point 0), because
TensorRT's explicit quantization accepts no other. ONNX Runtime's x86 CPU kernels
multiply uint8 activations by int8 weights (U8S8), so on x86 it rewrites each
int8 QuantizeLinear -> DequantizeLinear pair to uint8 (zero point 128) at session
creation, but only where the Q feeds exactly one DequantizeLinear. In a residual
network every block input feeds a convolution and the addition, so about half the
convolutions stay float between Q/DQ nodes and the INT8 file runs no faster than
FP32 (``benchmarks/bench_int8.py``; ``session.qdqisint8allowed`` = 1 keeps them int8,
but MLAS's int8 x int8 kernels without VNNI are several times slower still).

``u8_activations`` makes that rewrite for every pair. It is exact: a uint8 value
``q + 128`` with zero point ``z + 128`` dequantizes to what ``q`` with ``z`` did, over
the same 256 levels, so the file computes the same numbers.

Without VNNI, ONNX Runtime's U8S8 kernels add pairs of uint8 x int8 products in
16-bit registers (``vpmaddubsw``), which saturate when both activations are large
(``255 * 127 * 2 > 32767``); zero point 128 puts every activation there. ONNX
Runtime's own advice is 7-bit weights (``reduce_range``), which ``seven_bit_weights``
makes from the file's int8 weights (and int32 biases, whose scale follows): one
bit of weight resolution less, no saturation, the same speed.
``session.x64quantprecision`` = 1 avoids the saturation too, with slower uint8 x
uint8 kernels.

``ort_cpu_form`` applies both where they apply (7-bit weights on x86 without
VNNI). The file itself is unchanged: TensorRT and OpenVINO read it as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SEVEN_BIT", "has_vnni", "ort_cpu_form", "seven_bit_weights", "u8_activations"]

SEVEN_BIT = 63
"""Largest magnitude of a 7-bit weight: ``2 * 255 * 63`` fits a 16-bit register."""
_WEIGHTED = ("Conv", "Gemm", "MatMul")
_VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def has_vnni(cpuinfo: str | None = None) -> bool | None:
    """Whether this x86 CPU has 8-bit dot products in 32-bit lanes (VNNI or AMX); None where unknown.

    Read from ``/proc/cpuinfo``'s flags (``cpuinfo``: its text, for tests); other systems: None.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            return None
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return None if flags is None else any(f in flags for f in _VNNI_FLAGS)


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def u8_activations(model: Any) -> Any:
    """A copy of ``model`` (a Q/DQ ``ModelProto``) whose int8 activation Q/DQ nodes are uint8, zero points + 128.

    Activation nodes: every QuantizeLinear, and every DequantizeLinear that does not
    read an initializer (weights and biases keep their int8/int32 types).
    """
    from onnx import TensorProto, numpy_helper

    out = _copy(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    shifted: dict[str, str] = {}
    for node in graph.node:
        weight_dq = node.op_type == "DequantizeLinear" and node.input[0] in inits
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") or weight_dq or len(node.input) < 3:
            continue
        zero = inits.get(node.input[2])
        if zero is None or zero.data_type != TensorProto.INT8:
            continue
        if zero.name not in shifted:
            value = numpy_helper.to_array(zero).astype(np.int16) + 128
            name = f"{zero.name}_u8"
            graph.initializer.append(numpy_helper.from_array(value.astype(np.uint8), name))
            shifted[zero.name] = name
        node.input[2] = shifted[zero.name]
    graph.ClearField("value_info")  # the Q outputs' element type changed; ONNX Runtime infers it again
    return out


def seven_bit_weights(model: Any) -> Any:
    """A copy of ``model`` whose int8 Conv/Gemm/MatMul weights span -63..63, scales (and int32 biases') rescaled."""
    from onnx import numpy_helper

    out = _copy(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    done: set[str] = set()
    for node in graph.node:
        if node.op_type not in _WEIGHTED or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits or dq.input[0] in done:
            continue
        if numpy_helper.to_array(inits[dq.input[0]]).dtype != np.int8:
            continue
        factor = _requantize(inits, dq, SEVEN_BIT, np.int8)
        bias = producers.get(node.input[2]) if len(node.input) > 2 else None
        if bias is not None and bias.op_type == "DequantizeLinear" and bias.input[0] in inits:
            _rescale(inits, bias, factor, np.int32)  # ONNX Runtime fuses only when bias scale = input x weight scale
        done.add(dq.input[0])
    return out


def _requantize(inits: dict[str, Any], dq: Any, limit: int, dtype: Any) -> np.ndarray:
    """Weights of ``dq`` to ``-limit..limit`` per channel (scale grows by the same factor); returns the factor."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    scale = numpy_helper.to_array(inits[dq.input[1]])
    peak = (
        np.abs(q).max(axis=tuple(i for i in range(q.ndim) if i != axis % q.ndim)) if scale.size > 1 else np.abs(q).max()
    )
    factor = np.maximum(np.asarray(peak, np.float64) / limit, 1.0)  # channels already within the limit stay
    shape = [1] * q.ndim
    if scale.size > 1:
        shape[axis % q.ndim] = -1
    new = np.clip(np.round(q / factor.reshape(shape)), -limit, limit).astype(dtype)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array((scale * factor).astype(scale.dtype), dq.input[1]))
    return factor


def _rescale(inits: dict[str, Any], dq: Any, factor: np.ndarray, dtype: Any) -> None:
    """Integers of ``dq`` divided by ``factor``, its scale multiplied: the same real values, rounded."""
    from onnx import numpy_helper

    q = numpy_helper.to_array(inits[dq.input[0]]).astype(np.float64)
    scale = numpy_helper.to_array(inits[dq.input[1]])
    new = np.round(q / factor).astype(dtype)
    inits[dq.input[0]].CopyFrom(numpy_helper.from_array(new, dq.input[0]))
    inits[dq.input[1]].CopyFrom(numpy_helper.from_array((scale * factor).astype(scale.dtype), dq.input[1]))


def ort_cpu_form(model: Any, seven_bit: bool | None = None) -> Any:
    """``u8_activations`` of ``model`` (a ``ModelProto`` or a path), with ``seven_bit_weights`` when ``seven_bit``.

    ``seven_bit=None``: on an x86 CPU without VNNI (or whose flags cannot be read).
    """
    import platform

    import onnx

    if not hasattr(model, "graph"):
        model = onnx.load(str(model))
    if seven_bit is None:
        seven_bit = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86") and not has_vnni()
    out = u8_activations(model)
    return seven_bit_weights(out) if seven_bit else out
