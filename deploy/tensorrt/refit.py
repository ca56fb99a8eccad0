"""Refit: new AKPs into a built engine without a rebuild.

``refit_weights`` recomputes an ACL model's Conv kernels from its AKPs (PyTorch's
generators, the same that produced the static file); ``with_weights`` writes the
static file holding them; ``refit_from_onnx`` refits an engine built from
``model.static.onnx`` with ``refittable=True`` from that file through
``trt.OnnxParserRefitter.refit_from_file``, TensorRT's own answer to a Conv followed
by BatchNorm: its builder fuses the BatchNorm into the convolution, the parser
imports the BatchNorm as a scale layer with generated weight names, and the
parser's refitter (onnx-tensorrt ``ModelRefitter::refitOnnxBatchNormNode``)
recomputes those weights from the file, which setting ``<layer>.weight`` by name
(``refit``) cannot. ``refit`` stays for engines whose ACLs feed no BatchNorm.

The parser's refitter walks the main graph (and If/Loop/Scan bodies), not the
bodies of model-local functions: refitting an engine built from a live file is
unconfirmed; refit the static file's engine.

TensorRT 11.3 documents a known issue: building with ``REFIT`` may change a GEMM's
numerics even without refitting; the parity check after a refit is what tells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["refill_stripped", "refit", "refit_from_onnx", "refit_weights", "with_weights"]


def refit_weights(model: Any) -> dict[str, np.ndarray]:
    """``{"<layer>.weight": kernels}`` for every ACL of ``model`` (an ``nn.Module``).

    The kernels are generated from its AKPs and plain kernels exactly as the static
    export stores them (raw ACL kernels, a following BatchNorm a separate node):
    ``with_weights`` puts them into the static file for ``refit_from_onnx``. To
    refit from a checkpoint, load the model first (``pipeline.checkpoint.load``).
    """
    import torch

    import acl

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"refit_weights expects an nn.Module holding ACL layers, got {type(model).__name__}")
    source = model
    with torch.no_grad():
        return {
            f"{name}.weight": layer.weight.detach().float().cpu().numpy().copy()
            for name, layer in acl.acl_layers(source)
        }


def refit(engine: Any, weights: Mapping[str, np.ndarray] | Any) -> Any:
    """Refit ``engine`` (a deserialized ``ICudaEngine`` built refittable) in place by weight names; returns it.

    ``weights`` is a name -> array mapping, or a model ``refit_weights`` accepts.
    Only for ACLs that feed no BatchNorm (the builder fuses a BatchNorm into the
    convolution's weights): otherwise ``refit_from_onnx`` on ``with_weights``' file.

    Raises:
        ValueError: a weight name the engine does not know, a shape or count change,
            or weights TensorRT still misses after setting them.
    """
    import tensorrt as trt

    if not isinstance(weights, Mapping):
        weights = refit_weights(weights)
    logger = trt.Logger(trt.Logger.WARNING)
    refitter = trt.Refitter(engine, logger)
    known = set(refitter.get_all_weights())
    unknown = sorted(set(weights) - known)
    if unknown:
        raise ValueError(f"engine has no refittable weights named {unknown}; it has {sorted(known)[:8]} ...")
    keep = []  # TensorRT reads host weights during refit_cuda_engine: keep them alive
    for name, value in weights.items():
        arr = np.ascontiguousarray(value, dtype=np.float32)
        keep.append(arr)
        if not refitter.set_named_weights(name, trt.Weights(arr)):
            raise ValueError(f"TensorRT refused new weights for {name!r} (shape {arr.shape}): count or type changed?")
    missing = refitter.get_missing_weights()
    if missing:
        raise ValueError(f"refit needs these weights too: {list(missing)}")
    if not refitter.refit_cuda_engine():
        raise ValueError("refit_cuda_engine() failed; see TensorRT's log")
    return engine


def with_weights(static: str | Path, weights: Mapping[str, np.ndarray], dst: str | Path) -> Path:
    """A copy of the static file ``static`` whose initializers named in ``weights`` hold the new values.

    With ``refit_weights(moved_model)`` it is the static file of the moved model
    (what ``export.to_onnx`` would write), made without tracing it again.
    """
    import onnx
    from onnx import numpy_helper

    from export.passes import save

    model = onnx.load(str(static))
    inits = {t.name: t for t in model.graph.initializer}
    missing = sorted(set(weights) - set(inits))
    if missing:
        raise ValueError(f"{static} has no initializers named {missing}, expected the static file of the model")
    for name, value in weights.items():
        old = numpy_helper.to_array(inits[name])
        if old.shape != value.shape:
            raise ValueError(f"{name}: new weights of shape {value.shape}, expected {old.shape}")
        inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, dtype=old.dtype), name))
    return save(model, dst)


def refit_from_onnx(engine: Any, onnx_path: str | Path) -> Any:
    """Refit ``engine`` in place with every weight of ``onnx_path`` (the file it was built from, new values).

    ``trt.Refitter`` and ``trt.OnnxParserRefitter(refitter, logger).refit_from_file``,
    then ``refit_cuda_engine`` (TensorRT 10.x and 11.x Python API; the flow of
    TensorRT's ``sample_weight_stripping``). Unverified on a GPU here.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = [str(parser_refitter.get_error(i)) for i in range(parser_refitter.num_errors)]
        raise ValueError(f"refitting the engine from {onnx_path} failed: {errors}")
    if not refitter.refit_cuda_engine():
        raise ValueError(f"refit_cuda_engine() failed after reading {onnx_path}")
    return engine


def refill_stripped(engine: Any, onnx_path: str | Path) -> Any:
    """Fill a weight-stripped engine with the weights of the ONNX file it was built from."""
    return refit_from_onnx(engine, onnx_path)
