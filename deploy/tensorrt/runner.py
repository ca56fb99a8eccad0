"""TensorRT runner in the common contract, with GPU compute time from CUDA events.

Built on Polygraphy's ``TrtRunner`` (device buffers, one CUDA stream, input checks,
dynamic shapes). ``infer`` reports host wall time like every runner;
``gpu_compute_ms`` times the engine alone with CUDA events recorded on the runner's
stream around an execution whose inputs already sit on the device and whose
outputs stay there, so copies are not counted.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from polygraphy.backend.trt import TrtRunner as _PolygraphyTrtRunner

__all__ = ["CudaEvents", "TrtRunner", "engine_loader"]


class CudaEvents:
    """A pair of CUDA events through the CUDA runtime Polygraphy already loaded."""

    def __init__(self) -> None:
        from polygraphy import cuda

        self._rt = cuda.wrapper().handle
        self.start, self.stop = ctypes.c_void_p(), ctypes.c_void_p()
        for ev in (self.start, self.stop):
            self._check(self._rt.cudaEventCreate(ctypes.byref(ev)), "cudaEventCreate")

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed with CUDA error {status}")

    def elapsed_ms(self, stream_ptr: int, fn: Any) -> float:
        stream = ctypes.c_void_p(stream_ptr)
        self._check(self._rt.cudaEventRecord(self.start, stream), "cudaEventRecord")
        fn()
        self._check(self._rt.cudaEventRecord(self.stop, stream), "cudaEventRecord")
        self._check(self._rt.cudaEventSynchronize(self.stop), "cudaEventSynchronize")
        ms = ctypes.c_float()
        self._check(self._rt.cudaEventElapsedTime(ctypes.byref(ms), self.start, self.stop), "cudaEventElapsedTime")
        return float(ms.value)

    def close(self) -> None:
        for ev in (self.start, self.stop):
            if ev.value:
                self._rt.cudaEventDestroy(ev)
                ev.value = None


def engine_loader(engine_path: str | Path, *, stripped_from_onnx: str | Path | None = None) -> Any:
    """A Polygraphy loader of a saved plan; a weight-stripped plan is refilled from its ONNX first."""
    from polygraphy.backend.trt import EngineFromBytes

    from deploy.tensorrt.refit import refill_stripped

    data = Path(engine_path).read_bytes()
    if stripped_from_onnx is None:
        return EngineFromBytes(data)
    return lambda: refill_stripped(EngineFromBytes(data)(), stripped_from_onnx)


class TrtRunner(_PolygraphyTrtRunner):
    """Polygraphy's TensorRT runner plus ``gpu_compute_ms``.

    Args:
        engine: an engine or a loader returning one (``engine_loader``).
        name: runner name.
    """

    def __init__(self, engine: Any, name: str | None = None) -> None:
        super().__init__(engine, name=name)

    def gpu_compute_ms(self, feed: Mapping[str, np.ndarray], iterations: int = 50) -> list[float]:
        """CUDA-event time of the engine alone per run, inputs resident on the device."""
        from polygraphy import cuda

        device_feed = {}
        for name, arr in feed.items():
            buf = cuda.DeviceArray(shape=arr.shape, dtype=arr.dtype)
            buf.copy_from(np.ascontiguousarray(arr), stream=self.stream)
            device_feed[name] = buf
        self.stream.synchronize()
        events = CudaEvents()
        try:
            self.infer(device_feed, copy_outputs_to_host=False)  # warm-up, shapes set
            return [
                events.elapsed_ms(
                    self.stream.ptr, lambda: self.infer(device_feed, check_inputs=False, copy_outputs_to_host=False)
                )
                for _ in range(iterations)
            ]
        finally:
            events.close()
            for buf in device_feed.values():
                buf.free()
