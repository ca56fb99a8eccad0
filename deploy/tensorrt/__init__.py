"""TensorRT: engines from exported ONNX files, FP16, refit from new AKPs.

Everything here imports TensorRT lazily, so a machine without it (every machine of
this project's CI) still checks ONNX files against TensorRT's parser support
(``check_onnx``), makes FP16 files and range reports, and plans builds; building,
running and refitting engines need TensorRT 10.x or 11.x and a CUDA device, and
``available()`` says why they are not there.

CLI: ``python -m deploy.tensorrt check FILE.onnx [FILE.onnx ...]`` (exit 1 when a
file has problems); ``python -m deploy.tensorrt selfcheck [--out DIR]`` verifies the
TensorRT path on a GPU machine (exit 3 where TensorRT or a GPU is missing). Nothing
here has run on a GPU yet.
"""

from __future__ import annotations

from typing import Any

from deploy.tensorrt.versions import BuildPlan, available, build_plan, parse_version, profile_shapes, trt_version

__all__ = [
    "BuildPlan",
    "EngineInfo",
    "TensorRTUnavailable",
    "TrtRunner",
    "available",
    "build_engine",
    "build_plan",
    "check_onnx",
    "parse_version",
    "profile_shapes",
    "refit",
    "refit_from_onnx",
    "refit_weights",
    "trt_version",
    "with_weights",
]

_LAZY = {  # onnx and TensorRT load on first use: `python -m deploy.tensorrt` checks its arguments first
    "check_onnx": "deploy.tensorrt.support",
    "EngineInfo": "deploy.tensorrt.build",
    "TensorRTUnavailable": "deploy.tensorrt.build",
    "build_engine": "deploy.tensorrt.build",
    "TrtRunner": "deploy.tensorrt.runner",
    "refit": "deploy.tensorrt.refit",
    "refit_weights": "deploy.tensorrt.refit",
    "refit_from_onnx": "deploy.tensorrt.refit",
    "with_weights": "deploy.tensorrt.refit",
}


def __getattr__(name: str) -> Any:  # PEP 562: heavy parts load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deploy.tensorrt' has no attribute {name!r}")
