"""One layer of an ONNX file emulated in FP16, and BatchNorm folded into a convolution as TensorRT does.

``Emulation`` runs a single node in ONNX Runtime with its inputs and weights
rounded to FP16 and rounds its output to FP16: FP16 storage with FP32 sums, what
FP16 GPU convolution and GEMM kernels compute. A value beyond 65504 becomes Inf,
as it does on an FP16 device (ONNX Runtime's CPU provider would sum in FP32 and
hide it: ``deploy.fp16_computed``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

__all__ = ["Emulation", "fold_batchnorm", "round_fp16"]


def round_fp16(a: np.ndarray) -> np.ndarray:
    """``a`` as FP16 holds it (beyond 65504: Inf), back in FP32."""
    with np.errstate(over="ignore"):
        return a.astype(np.float16).astype(np.float32)


def fold_batchnorm(
    conv: onnx.NodeProto, bn: onnx.NodeProto, arrays: Mapping[str, np.ndarray]
) -> tuple[onnx.NodeProto, dict[str, np.ndarray]]:
    """The convolution with ``bn`` folded into its weight and bias: ``(node, {input: array})``."""
    scale, beta, mean, var = (arrays[i].astype(np.float64) for i in bn.input[1:5])
    eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
    s = scale / np.sqrt(var + eps)
    w = arrays[conv.input[1]].astype(np.float64)
    b = arrays[conv.input[2]].astype(np.float64) if len(conv.input) > 2 and conv.input[2] else 0.0
    names = (f"{conv.input[1]}:folded", f"{conv.input[1]}:folded_bias")
    node = onnx.NodeProto()
    node.CopyFrom(conv)
    del node.input[1:]
    node.input.extend(names)
    folded = {
        names[0]: (w * s.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32),
        names[1]: ((b - mean) * s + beta).astype(np.float32),
    }
    return node, folded


class Emulation:
    """``node`` in FP16 on the values of its inputs, compared with ``reference`` computed in FP32.

    Args:
        model: the file the node belongs to (for its opsets).
        node: the node, as the form computes it (a folded convolution, say).
        arrays: its weights, by input name; every other input is read from the values.
        reference: the tensor the FP16 output is compared with.
    """

    def __init__(self, model: onnx.ModelProto, node: onnx.NodeProto, arrays: Mapping[str, np.ndarray], reference: str):
        self.node, self.reference = node, reference
        self.consts = {i: round_fp16(arrays[i]) for i in node.input if i in arrays}
        self.err = 0.0
        self.scale = 0.0
        self.finite = True
        self._model = model
        self._sess = None

    def _session(self):

        inputs = [helper.make_tensor_value_info(i, TensorProto.FLOAT, None) for i in self.node.input if i]
        out = helper.make_tensor_value_info(self.node.output[0], TensorProto.FLOAT, None)
        node = onnx.NodeProto()
        node.CopyFrom(self.node)
        del node.output[1:]  # a second output (none for Conv/Gemm/MatMul) is not needed
        graph = helper.make_graph([node], "layer", inputs, [out])
        m = helper.make_model(graph, opset_imports=[o for o in self._model.opset_import if o.domain in ("", "ai.onnx")])
        m.ir_version = self._model.ir_version
        from export.sessions import open_session

        return open_session(m)

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Run on one chunk of values (``deploy.fp16_tensors.run_exposed``)."""
        if self._sess is None:
            self._sess = self._session()
        feed = {i: self.consts[i] if i in self.consts else round_fp16(values[i]) for i in self.node.input if i}
        y16 = round_fp16(self._sess.run(None, feed)[0])
        ref = values[self.reference]
        self.finite &= bool(np.isfinite(y16).all())
        with np.errstate(invalid="ignore", over="ignore"):
            self.err = max(self.err, float(np.abs(y16 - ref).max(initial=0.0)))
        self.scale = max(self.scale, float(np.abs(ref).max(initial=0.0)))

    @property
    def rel_error(self) -> float:
        if not self.finite:
            return float("inf")
        return self.err / (self.scale or 1.0)
