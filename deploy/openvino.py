"""OpenVINO, behind the same runner contract as every other backend (Polygraphy's ``BaseRunner``).

Polygraphy has no OpenVINO runner, so this is one: an ONNX file read and compiled
by ``openvino.Core`` for a device (``CPU`` here), fed and answered by tensor name.
OpenVINO does not read model-local functions of a custom domain: a live file is
given to it inlined (``export.inline``). ``openvino`` is imported when a runner is
activated, never on import.

Precision is always asked for, never left to the plugin: on a CPU with native
bfloat16 (AVX512_BF16 or AMX) OpenVINO's CPU plugin computes in bf16 unless told
``INFERENCE_PRECISION_HINT=f32``, and where a precision is not supported it
silently computes in another one. So the runner asks for the row's precision
and reads back the one the compiled model uses (``inference_precision``); a bf16
row is offered only where the device lists ``BF16`` among its capabilities
(``bf16_available``).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from polygraphy.datatype import DataType

from export.sessions import default_threads

__all__ = ["PRECISIONS", "OpenVinoRunner", "bf16_available", "openvino_available"]

# The project's precision names (export.compare.TOLERANCES) -> OpenVINO's element type names.
PRECISIONS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: a Q/DQ file; f32 for its float layers
_INT8_KERNELS = {"Convolution", "FullyConnected", "MatMul"}
_PROJECT_NAME = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def _version() -> str:
    """The release (``2026.4.1``), not the build string ``ov.__version__`` carries."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:  # a source build
        import openvino as ov

        return ov.__version__


def _runs_int8(compiled) -> bool:
    """Whether a convolution or matrix product of the compiled model runs on 8-bit integers (OpenVINO's own record)."""
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in _INT8_KERNELS and info["runtimePrecision"].astype(str) in ("i8", "u8"):
            return True
    return False


def openvino_available() -> tuple[bool, str]:
    """``(available, reason)``, as ``deploy.backends.availability``."""
    if importlib.util.find_spec("openvino") is None:
        return False, "OpenVINO is not installed (pip install openvino; the project's 'test' extra has it)"
    return True, f"OpenVINO {_version()}"


def bf16_available(device: str = "CPU") -> tuple[bool, str]:
    """``(available, reason)`` for a bf16 row: the device computes bfloat16 natively.

    OpenVINO's documented test: ``BF16`` among the device's capabilities
    (``ov.properties.device.capabilities``). Elsewhere a bf16 hint is ignored
    (the plugin computes in f32), so a bf16 row would only repeat the f32 one.
    """
    ok, reason = openvino_available()
    if not ok:
        return ok, reason
    import openvino as ov
    import openvino.properties.device as device_props

    caps = list(ov.Core().get_property(device, device_props.capabilities))
    if "BF16" in caps:
        return True, f"OpenVINO {_version()}: {device} computes bf16 natively"
    return False, (
        f"this {device} has no native bf16 (OpenVINO {_version()} lists its capabilities as "
        f"{', '.join(caps)}; it would compute in f32)"
    )


class OpenVinoRunner(BaseRunner):
    """An ONNX file compiled by OpenVINO.

    Args:
        path: the ``.onnx`` file (standard ops only: inline a live file first).
        device: OpenVINO device name.
        threads: inference threads (default: ``export.sessions.default_threads()``, else all cores).
        precision: ``"fp32"`` or ``"bf16"``, asked of OpenVINO as its inference precision hint; ``"int8"``
            for a Q/DQ file (hint f32 for its float layers; ``inference_precision`` is ``int8`` when
            OpenVINO runs its convolutions or matrix products on 8-bit integers).
        name: runner name.

    After activation ``inference_precision`` is the precision the compiled model
    reports it computes in (``"fp32"``, ``"bf16"``, ``"fp16"``), which may differ
    from the one asked for where the device does not support it.
    """

    def __init__(
        self,
        path: str | Path,
        device: str = "CPU",
        threads: int | None = None,
        name: str | None = None,
        precision: str = "fp32",
    ):
        super().__init__(name=name, prefix="openvino-runner")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
        self.path = Path(path)
        self.device = device
        self.threads = threads or default_threads() or (os.cpu_count() or 1)
        self.precision = precision
        self.inference_precision: str | None = None

    def activate_impl(self) -> None:
        import openvino as ov
        import openvino.properties as props
        import openvino.properties.hint as hints

        core = ov.Core()
        config = {
            props.inference_num_threads: self.threads,
            hints.inference_precision: getattr(ov.Type, PRECISIONS[self.precision]),
        }
        self.compiled = core.compile_model(core.read_model(str(self.path)), self.device, config)
        ran = self.compiled.get_property(hints.inference_precision).get_type_name()
        self.inference_precision = _PROJECT_NAME.get(ran, ran)
        if self.precision == "int8" and _runs_int8(self.compiled):
            self.inference_precision = "int8"
        self.request = self.compiled.create_infer_request()
        self._meta = TensorMetadata()
        for port in self.compiled.inputs:
            shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
            dtype = DataType.from_dtype(np.dtype(port.get_element_type().to_dtype()))
            self._meta.add(port.get_any_name(), dtype=dtype, shape=shape)
        self.output_names = [port.get_any_name() for port in self.compiled.outputs]

    def get_input_metadata_impl(self) -> TensorMetadata:
        return self._meta

    def infer_impl(self, feed_dict: Mapping[str, Any]) -> OrderedDict:
        start = time.perf_counter()
        results = self.request.infer({k: np.ascontiguousarray(v) for k, v in feed_dict.items()})
        self.inference_time = time.perf_counter() - start
        by_name = {port.get_any_name(): value for port, value in results.items()}
        # The request owns its output buffers: copy before the next call overwrites them.
        return OrderedDict((n, np.array(by_name[n], copy=True)) for n in self.output_names)

    def deactivate_impl(self) -> None:
        del self.request, self.compiled, self._meta
