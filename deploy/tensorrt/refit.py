"""Refit: new AKPs into a built engine without a rebuild.

The ONNX parser names every weight after its ONNX initializer, so an ACL's Conv
kernel is the refittable weight ``<layer>.weight`` of an engine built from
``model.static.onnx`` with ``refittable=True``. ``refit_weights`` recomputes those
kernels from AKPs (PyTorch's generators, the same that produced the static file)
and ``refit`` hands them to ``trt.Refitter``.

TensorRT 11.3 documents a known issue: building with ``REFIT`` may change a GEMM's
numerics even without refitting; the parity check after a refit is what tells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["refill_stripped", "refit", "refit_weights"]


def refit_weights(model: Any) -> dict[str, np.ndarray]:
    """``{"<layer>.weight": kernels}`` for every ACL of ``model`` (an ``nn.Module``).

    The kernels are generated from its AKPs and plain kernels exactly as the static
    export stores them (raw ACL kernels; a following BatchNorm stays a separate
    layer that TensorRT fuses, and refits, itself). To refit from a checkpoint,
    load the model first (``pipeline.checkpoint.load``).
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
    """Refit ``engine`` (a deserialized ``ICudaEngine`` built refittable) in place; returns it.

    ``weights`` is a name -> array mapping, or a model ``refit_weights`` accepts.

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


def refill_stripped(engine: Any, onnx_path: str | Path) -> Any:
    """Fill a weight-stripped engine with the weights of the ONNX file it was built from."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    refitter = trt.Refitter(engine, logger)
    parser_refitter = trt.OnnxParserRefitter(refitter, logger)
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = [str(parser_refitter.get_error(i)) for i in range(parser_refitter.num_errors)]
        raise ValueError(f"refilling the stripped engine from {onnx_path} failed: {errors}")
    if not refitter.refit_cuda_engine():
        raise ValueError("refit_cuda_engine() failed while refilling a stripped engine")
    return engine
