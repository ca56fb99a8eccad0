"""OpenVINO, behind the same runner contract as every other backend (Polygraphy's ``BaseRunner``).

Polygraphy has no OpenVINO runner, so this is one: an ONNX file read and compiled
by ``openvino.Core`` for a device (``CPU`` here), fed and answered by tensor name.
OpenVINO does not read model-local functions of a custom domain: a live file is
given to it inlined (``export.inline``). ``openvino`` is imported when a runner is
activated, never on import.
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

__all__ = ["OpenVinoRunner", "openvino_available"]


def openvino_available() -> tuple[bool, str]:
    """``(available, reason)``, as ``deploy.backends.availability``."""
    if importlib.util.find_spec("openvino") is None:
        return False, "OpenVINO is not installed (pip install openvino; the project's 'serve' extra has it)"
    import openvino as ov

    return True, f"OpenVINO {ov.__version__}"


class OpenVinoRunner(BaseRunner):
    """An ONNX file compiled by OpenVINO.

    Args:
        path: the ``.onnx`` file (standard ops only: inline a live file first).
        device: OpenVINO device name.
        threads: inference threads (default: all cores).
        name: runner name.
    """

    def __init__(self, path: str | Path, device: str = "CPU", threads: int | None = None, name: str | None = None):
        super().__init__(name=name, prefix="openvino-runner")
        self.path = Path(path)
        self.device = device
        self.threads = threads or (os.cpu_count() or 1)

    def activate_impl(self) -> None:
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(
            core.read_model(str(self.path)), self.device, {"INFERENCE_NUM_THREADS": self.threads}
        )
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
