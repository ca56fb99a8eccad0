"""TensorRT version detection and the choices that depend on it. Pure Python.

TensorRT 10.x is weakly typed by default: reduced precision is enabled with builder
flags (``BuilderFlag.FP16``) and the builder picks per-layer precisions. TensorRT
11.x removed those flags: every network is strongly typed, so an FP16 engine is
built from an ONNX file whose tensors already are FP16 (inputs and outputs kept
FP32, as NVIDIA's migration guide does with ModelOpt AutoCast's
``keep_io_types=True``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from deploy.devices import cuda_device_present

__all__ = ["BuildPlan", "available", "build_plan", "parse_version", "profile_shapes", "trt_version"]


def parse_version(text: str) -> tuple[int, int]:
    """``"10.15.1.29"`` -> ``(10, 15)``.

    Examples:
        >>> parse_version("11.4.0.106"), parse_version("10.0")
        ((11, 4), (10, 0))
    """
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise ValueError(f"cannot read a TensorRT version from {text!r}") from None


def trt_version() -> tuple[tuple[int, int] | None, str]:
    """``((major, minor), version string)`` of the importable TensorRT, or ``(None, reason)``.

    Importing ``tensorrt`` loads its native libraries; a wheel whose libraries are
    missing fails here, and the reason says so.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return None, "TensorRT is not installed (the tensorrt Python package is missing)"
    try:
        import tensorrt as trt
    except Exception as e:  # the bindings raise OSError/ImportError for missing libnvinfer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return None, f"TensorRT's libraries cannot be loaded ({first})"
    return parse_version(trt.__version__), trt.__version__


def available() -> tuple[bool, str]:
    """``(True, version)`` when TensorRT and a CUDA device are usable, else ``(False, reason)``."""
    version, text = trt_version()
    if version is None:
        return False, text
    if version[0] < 10:
        return False, f"TensorRT {text} is older than 10, the oldest release this code targets"
    gpu, why = cuda_device_present()
    if not gpu:
        return False, why
    return True, f"TensorRT {text}"


@dataclass(frozen=True)
class BuildPlan:
    """How to build an engine of a precision on a TensorRT version."""

    precision: str  # "fp32" | "fp16"
    fp16_flag: bool  # set BuilderFlag.FP16 (TensorRT 10 only)
    strongly_typed: bool  # create the network STRONGLY_TYPED
    fp16_onnx: bool  # build from an FP16 ONNX file made beforehand (I/O kept FP32)


def build_plan(version: tuple[int, int], precision: str) -> BuildPlan:
    """The build choices for ``precision`` on TensorRT ``version``.

    Examples:
        >>> build_plan((10, 8), "fp16")
        BuildPlan(precision='fp16', fp16_flag=True, strongly_typed=False, fp16_onnx=False)
        >>> build_plan((11, 0), "fp16")
        BuildPlan(precision='fp16', fp16_flag=False, strongly_typed=True, fp16_onnx=True)
        >>> build_plan((11, 4), "fp32").fp16_flag
        False
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    if version[0] < 10:
        raise ValueError(f"TensorRT {version[0]}.{version[1]} is not supported; need 10.x or 11.x")
    if version[0] == 10:
        return BuildPlan(precision, fp16_flag=precision == "fp16", strongly_typed=False, fp16_onnx=False)
    return BuildPlan(precision, fp16_flag=False, strongly_typed=True, fp16_onnx=precision == "fp16")


def profile_shapes(
    input_shape: tuple[int, ...], batch_sizes: list[int] | tuple[int, ...]
) -> tuple[tuple[int, ...], ...]:
    """``(min, opt, max)`` shapes of one optimization profile covering ``batch_sizes``.

    ``min`` and ``max`` are the smallest and largest sizes; ``opt`` (the shape
    TensorRT tunes its kernels for) is the median size.

    Examples:
        >>> profile_shapes((1, 32, 32), [1, 8, 64])
        ((1, 1, 32, 32), (8, 1, 32, 32), (64, 1, 32, 32))
        >>> profile_shapes((1, 32, 32), [1, 8, 64, 360])[1]
        (8, 1, 32, 32)
        >>> profile_shapes((1, 32, 32), [16])
        ((16, 1, 32, 32), (16, 1, 32, 32), (16, 1, 32, 32))
    """
    sizes = sorted({int(b) for b in batch_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    opt = sizes[(len(sizes) - 1) // 2]
    return tuple((b, *input_shape) for b in (sizes[0], opt, sizes[-1]))
