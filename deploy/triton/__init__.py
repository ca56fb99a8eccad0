"""Triton Inference Server: model repositories for exported ACL models, config checks, a real server, load tests.

- ``write_repository(out_dir, files, ...)``: onnxruntime-backend, python-backend
  (ONNX Runtime inside) and, given an engine, tensorrt_plan models, with configs
  generated from the ONNX file (``repository``).
- ``check_repository`` / ``validate_repository``: every ``config.pbtxt`` parsed with
  Triton's ``model_config.proto`` and checked against its ONNX file (``config``).
- ``add_version``: a new ``<model>/<n>/`` (new AKPs: ``deploy.hotswap.triton_version``).
- ``batching_plan``: ``max_batch_size`` and preferred batch sizes from ``{batch: p50_ms}``.
- ``start_server``: nvidia-pytriton's ``tritonserver`` on free loopback ports (``server``).
- ``load_test``: concurrent clients over HTTP or gRPC; throughput, p50, p99 and the
  server-side batch sizes from Triton's statistics (``load``).

Only ``onnx`` is needed to write a repository; checking configs needs
``tritonclient`` (base package), serving needs the ``serve`` extra (its own
environment: nvidia-pytriton pins numpy<2).

>>> from deploy.triton import batching_plan
>>> batching_plan({1: 2.0, 4: 2.5, 16: 10.0}).preferred
[4]
"""

from __future__ import annotations

from deploy.triton.config import (
    BatchingPlan,
    OnnxIO,
    TensorSpec,
    TritonConfigError,
    batching_plan,
    check_config,
    onnx_io,
    parse_config,
)
from deploy.triton.repository import (
    MARKER,
    RepositoryInfo,
    add_version,
    check_repository,
    foreign_files,
    model_configs,
    move_repository,
    validate_repository,
    write_repository,
)

__all__ = [
    "MARKER",
    "BatchingPlan",
    "OnnxIO",
    "RepositoryInfo",
    "ServerUnavailable",
    "TensorSpec",
    "TritonConfigError",
    "TritonServer",
    "add_version",
    "batching_plan",
    "check_config",
    "check_repository",
    "find_triton",
    "foreign_files",
    "load_test",
    "model_configs",
    "move_repository",
    "onnx_io",
    "parse_config",
    "start_server",
    "validate_repository",
    "write_repository",
]

_LAZY = {
    "ServerUnavailable": "deploy.triton.server",
    "TritonServer": "deploy.triton.server",
    "find_triton": "deploy.triton.server",
    "start_server": "deploy.triton.server",
    "load_test": "deploy.triton.load",
}


def __getattr__(name: str):  # PEP 562: the server and client parts load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deploy.triton' has no attribute {name!r}")
