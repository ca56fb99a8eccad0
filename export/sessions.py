"""The one way this project opens an ONNX Runtime session: ``open_session``.

Every session of ``acl``'s files (export checks, runners, hot-swap, benchmarks)
is opened here, so its options are chosen once and for the reasons below:

- **providers**: ``["CPUExecutionProvider"]`` unless given. ONNX Runtime would
  otherwise take every provider its build has, so the same check could run on a
  GPU on one machine and a CPU on another; the CPU answer is the reference every
  tolerance in ``export.compare`` was set against. ``deploy.runners.ort_providers``
  builds the CUDA and TensorRT lists.
- **threads**: intra-op threads; ``None`` takes ``default_threads()``: the
  environment variable ``ACL_ORT_THREADS`` if set (the test suite sets ``1`` in
  each pytest-xdist worker, whose one core a second, spinning thread would only
  contend for), else ONNX Runtime's default (one per physical core). The
  executor is sequential (ONNX Runtime's default), so no inter-op pool exists and
  only the intra-op count matters.
- **log severity**: ``3`` (errors) unless given. A live-akp file declares its
  AKP initializers as graph inputs, and ONNX Runtime warns once per AKP that it
  cannot be constant-folded: hundreds of lines on a ResNet for what is intended.
- **optimization**: ``"all"`` (``ORT_ENABLE_ALL``, ONNX Runtime's default, named
  so it is visible): the static file's BatchNorm folds into its Conv and Conv
  weights are pre-packed when the session is created. That is why a hot-swap
  gives new weights at creation (``external_initializers``), never afterwards.
- **external initializers**: ``{name: array}`` for initializers the model keeps
  as external data; ONNX Runtime reads them from these arrays instead of files
  while it builds the graph, so folding and pre-packing see them
  (``SessionOptions.add_external_initializers``). It refuses them for
  initializers stored in the file (``add_initializer`` would be silently ignored
  for pre-packed and folded weights, ONNX Runtime 1.32). The arrays are kept
  alive with the session, as ONNX Runtime requires.

>>> import numpy as np, onnx
>>> from onnx import helper
>>> graph = helper.make_graph(
...     [helper.make_node("Relu", ["x"], ["y"])], "g",
...     [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
...     [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
>>> session = open_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads=1)
>>> session.run(None, {"x": np.array([-1.0, 2.0], np.float32)})[0].tolist()
[0.0, 2.0]
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["CPU", "LOG_SEVERITY", "OPTIMIZATION", "THREADS_ENV", "default_threads", "open_session", "session_options"]

CPU = ("CPUExecutionProvider",)
LOG_SEVERITY = 3
"""ONNX Runtime's scale: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal."""
OPTIMIZATION = "all"
THREADS_ENV = "ACL_ORT_THREADS"
_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def default_threads() -> int | None:
    """Intra-op threads when a caller asks for none: ``$ACL_ORT_THREADS`` (a positive integer) or ``None``."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{THREADS_ENV}={value!r}; expected a positive integer")
    return int(value)


def _level(ort: Any, optimization: Any) -> Any:
    if not isinstance(optimization, str):
        return optimization
    if optimization not in _LEVELS:
        raise ValueError(f"unknown optimization {optimization!r}; expected one of {sorted(_LEVELS)}")
    return getattr(ort.GraphOptimizationLevel, _LEVELS[optimization])


def session_options(
    *,
    threads: int | None = None,
    log_severity: int = LOG_SEVERITY,
    optimization: Any = OPTIMIZATION,
    config: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """``onnxruntime.SessionOptions`` with this project's choices (see the module docstring).

    Args:
        threads: intra-op threads; ``None``: ``default_threads()``; ``0``: ONNX Runtime's default.
        log_severity: ONNX Runtime's minimum severity logged (``LOG_SEVERITY``).
        optimization: ``"disable"``, ``"basic"``, ``"extended"``, ``"all"`` or a
            ``GraphOptimizationLevel``.
        config: session configuration entries (``add_session_config_entry``), such
            as ``{"session.qdqisint8allowed": "1"}``; none unless given.
        overrides: further ``SessionOptions`` attributes by name (a misspelt one raises).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    for key, value in (config or {}).items():
        opts.add_session_config_entry(str(key), str(value))
    opts.graph_optimization_level = _level(ort, optimization)
    opts.log_severity_level = int(log_severity)
    if threads is None:
        threads = default_threads()
    if threads:
        opts.intra_op_num_threads = int(threads)
    for name, value in overrides.items():
        if not hasattr(opts, name):
            raise AttributeError(f"onnxruntime.SessionOptions has no option {name!r}")
        setattr(opts, name, value)
    return opts


def _source(model: Any) -> bytes | str:
    """What ``InferenceSession`` takes: a file path (so its external data is found beside it) or bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString()
    raise TypeError(f"expected an onnx.ModelProto, serialized bytes or a path, got {type(model).__name__}")


def open_session(
    model: Any,
    *,
    providers: Sequence[Any] | None = None,
    threads: int | None = None,
    log_severity: int = LOG_SEVERITY,
    optimization: Any = OPTIMIZATION,
    external_initializers: Mapping[str, np.ndarray] | None = None,
    config: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``model`` (``onnx.ModelProto``, bytes or a path).

    Args:
        providers: ONNX Runtime providers (default CPU only; ``deploy.runners.ort_providers``).
        threads, log_severity, optimization, config, overrides: as ``session_options``.
        external_initializers: ``{name: array}`` for initializers the model stores as
            external data (``onnx.external_data_helper``); used instead of reading files.
    """
    import onnxruntime as ort

    opts = session_options(
        threads=threads, log_severity=log_severity, optimization=optimization, config=config, **overrides
    )
    values = []
    if external_initializers:
        names = list(external_initializers)
        values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(external_initializers[n])) for n in names]
        opts.add_external_initializers(names, values)
    session = ort.InferenceSession(_source(model), opts, providers=list(providers or CPU))
    # ONNX Runtime reads external initializers from these buffers; they must live as long as the session.
    session._acl_external_initializers = values
    return session
