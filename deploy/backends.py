"""Which backends this machine can run, and why not when it cannot.

Backend names used across the CLI and the report:

==========  ==========================================================
torch       the source model in eager PyTorch (the reference)
ort-cpu     ONNX Runtime, CPU execution provider
ort-cuda    ONNX Runtime, CUDA execution provider
ort-trt     ONNX Runtime, TensorRT execution provider
trt         TensorRT engines, FP32 (``deploy.tensorrt``)
trt-fp16    TensorRT engines, FP16
openvino    OpenVINO on the CPU (``deploy.openvino``; live files inlined),
            in FP32 (asked for: a CPU with native bf16 would otherwise
            compute in bf16), and in bf16 on the static file where the
            CPU has native bf16 (``deploy.openvino.bf16_available``)
==========  ==========================================================
"""

from __future__ import annotations

import importlib.util

from deploy.devices import cuda_device_present

__all__ = ["ALL_BACKENDS", "availability", "cuda_device_present"]

ALL_BACKENDS = ("torch", "ort-cpu", "ort-cuda", "ort-trt", "trt", "trt-fp16", "openvino")


def _ort_provider(provider: str) -> tuple[bool, str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return False, "onnxruntime is not installed"
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        return False, f"the installed onnxruntime {ort.__version__} has no {provider} (install onnxruntime-gpu)"
    return True, provider


def availability(backend: str) -> tuple[bool, str]:
    """``(available, reason)``; ``reason`` says why not when unavailable."""
    if backend == "torch":
        return True, "PyTorch eager"
    if backend == "ort-cpu":
        return _ort_provider("CPUExecutionProvider")
    if backend in ("trt", "trt-fp16"):
        from deploy.tensorrt.versions import available

        return available()
    if backend == "openvino":
        from deploy.openvino import openvino_available

        return openvino_available()
    if backend in ("ort-cuda", "ort-trt"):
        provider = "CUDAExecutionProvider" if backend == "ort-cuda" else "TensorrtExecutionProvider"
        ok, why = _ort_provider(provider)
        if not ok:
            return ok, why
        return cuda_device_present()
    raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(ALL_BACKENDS)}")
