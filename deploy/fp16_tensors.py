"""Every intermediate tensor of an ONNX file on real data, in FP32 on ONNX Runtime's CPU provider.

The FP16 analysis reads what the file computes, not the PyTorch module it came
from: an exporter may have folded BatchNorm into a convolution, and only the file
knows. Every float node output is made a graph output (polygraphy's
``ModifyOutputs``, ``MARK_ALL``), and the file is run in chunks of images so that
a deep net's activations for a thousand images never sit in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

__all__ = ["CHUNK", "initializer_arrays", "max_abs", "run_exposed"]

CHUNK = 32  # images per ONNX Runtime call


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The float initializers of ``model`` as arrays."""
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}


def _session(model: onnx.ModelProto, threads: int | None):
    from polygraphy import constants
    from polygraphy.backend.onnx import modify_outputs

    from export.sessions import open_session

    exposed = modify_outputs(onnx.ModelProto.FromString(model.SerializeToString()), outputs=constants.MARK_ALL)
    return open_session(exposed, threads=threads)


def run_exposed(model: onnx.ModelProto, inputs: Any, *, threads: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Per chunk of ``inputs``: ``{tensor: FP32 value}`` for the graph input and every float tensor."""
    sess = _session(model, threads)
    name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    x = np.ascontiguousarray(np.asarray(inputs, dtype=np.float32))
    for start in range(0, len(x), CHUNK):
        chunk = x[start : start + CHUNK]
        values = dict(zip(names, sess.run(None, {name: chunk})))
        yield {name: chunk, **{k: v for k, v in values.items() if v.dtype == np.float32}}


def max_abs(
    model: onnx.ModelProto,
    inputs: Any,
    *,
    threads: int | None = None,
    visit: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> dict[str, float]:
    """``{tensor: max |value|}`` over ``inputs`` for every float tensor; ``visit`` sees each chunk's values."""
    top: dict[str, float] = {}
    for values in run_exposed(model, inputs, threads=threads):
        for k, v in values.items():
            m = float(np.abs(v).max(initial=0.0))
            top[k] = m if k not in top else float(np.maximum(top[k], m))  # NaN propagates: it is not "small"
        if visit is not None:
            visit(values)
    return top
