"""TensorRT version detection and the choices that depend on it. Pure Python.

TensorRT 10.x is weakly typed by default: reduced precision is enabled with builder
flags (``BuilderFlag.FP16``, ``BuilderFlag.INT8``) and the builder picks per-layer
precisions. TensorRT 11.x removed those flags and the INT8 calibrators: every
network is strongly typed, so an FP16 engine is built from an ONNX file whose
tensors already are FP16 (inputs and outputs kept FP32, as NVIDIA's migration
guide does with ModelOpt AutoCast's ``keep_io_types=True``), and an INT8 engine
from a file with QuantizeLinear/DequantizeLinear (Q/DQ) nodes.

INT8 (explicit quantization from the Q/DQ file) on each version:

- 10.x: weakly typed with ``BuilderFlag.INT8`` set (``trtexec --int8``). A network
  with Q/DQ layers is built with explicit-quantization logic, and TensorRT 10's
  guide requires the INT8 flag for a weakly typed Q/DQ network; Polygraphy's
  ``CreateConfig(int8=True)`` sets it and skips calibration when the network has
  Q/DQ layers. Strong typing (``--stronglyTyped``) would also build it on 10.x;
  weak typing is kept so that the 10.x INT8 row differs from the FP32 row only by
  the file and the flag. No FP16 flag: layers outside Q/DQ stay FP32 as in the
  file, which is what the ONNX Runtime INT8 row computes too.
- 11.x: strongly typed, no precision flag (none exists); the Q/DQ nodes alone set
  INT8. ``trtexec --stronglyTyped`` is a no-op there (11.1), so the 11.x commands
  carry no precision flag at all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from deploy.devices import cuda_device_present

__all__ = [
    "PRECISIONS",
    "BuildPlan",
    "available",
    "build_plan",
    "build_table",
    "parse_version",
    "profile_shapes",
    "trt_version",
    "trtexec_flags",
    "trtexec_variants",
    "version_rules",
]

PRECISIONS = ("fp32", "fp16", "int8")
MAJORS = (10, 11)
"""The TensorRT major versions this code follows (their documented Python APIs)."""


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

    precision: str  # "fp32" | "fp16" | "int8"
    fp16_flag: bool  # set BuilderFlag.FP16 (TensorRT 10 only)
    strongly_typed: bool  # create the network STRONGLY_TYPED
    fp16_onnx: bool  # build from an FP16 ONNX file made beforehand (I/O kept FP32)
    int8_flag: bool = False  # set BuilderFlag.INT8 for the Q/DQ file (TensorRT 10 only)
    qdq_onnx: bool = False  # build from a Q/DQ file (explicit quantization; INT8 on both versions)


def build_plan(version: tuple[int, int], precision: str) -> BuildPlan:
    """The build choices for ``precision`` on TensorRT ``version``.

    Examples:
        >>> build_plan((10, 8), "fp16")
        BuildPlan(precision='fp16', fp16_flag=True, strongly_typed=False, fp16_onnx=False, int8_flag=False, qdq_onnx=False)
        >>> build_plan((11, 0), "fp16")
        BuildPlan(precision='fp16', fp16_flag=False, strongly_typed=True, fp16_onnx=True, int8_flag=False, qdq_onnx=False)
        >>> build_plan((11, 4), "fp32").fp16_flag
        False
        >>> p10, p11 = build_plan((10, 15), "int8"), build_plan((11, 1), "int8")
        >>> (p10.int8_flag, p10.strongly_typed, p10.qdq_onnx), (p11.int8_flag, p11.strongly_typed, p11.qdq_onnx)
        ((True, False, True), (False, True, True))
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if version[0] < 10:
        raise ValueError(f"TensorRT {version[0]}.{version[1]} is not supported; need 10.x or 11.x")
    int8 = precision == "int8"
    if version[0] == 10:
        return BuildPlan(precision, precision == "fp16", False, False, int8_flag=int8, qdq_onnx=int8)
    return BuildPlan(precision, False, True, precision == "fp16", int8_flag=False, qdq_onnx=int8)


def build_table() -> dict[str, dict[str, str]]:
    """``{precision: {"TensorRT <major>": how its engine is built}}``, from ``build_plan``, for the report.

    Examples:
        >>> build_table()["int8"]
        {'TensorRT 10': 'weakly typed, BuilderFlag.INT8, from the Q/DQ file', 'TensorRT 11': 'strongly typed, no precision flag, from the Q/DQ file'}
    """
    return {p: {f"TensorRT {m}": _plan_text(build_plan((m, 0), p)) for m in MAJORS} for p in PRECISIONS}


def _plan_text(plan: BuildPlan) -> str:
    flags = [f"BuilderFlag.{f}" for f, on in (("FP16", plan.fp16_flag), ("INT8", plan.int8_flag)) if on]
    source = ["from the FP16 file"] if plan.fp16_onnx else ["from the Q/DQ file"] if plan.qdq_onnx else []
    typing = "strongly typed" if plan.strongly_typed else "weakly typed"
    return ", ".join([typing, *(flags or ["no precision flag"]), *source])


def trtexec_flags(major: int, file_precision: str) -> list[str]:
    """The ``trtexec`` precision flags that build a file of ``file_precision`` as written, on TensorRT ``major``.

    ``file_precision`` is what the file itself computes in: ``fp32`` (the static and
    live files), ``fp16`` (the FP16 file: FP16 tensors, some nodes kept FP32 for
    range) or ``int8`` (the Q/DQ file). TensorRT 11 takes every file without flags
    (strongly typed; ``--fp16``/``--int8``/``--best`` are gone and ``--stronglyTyped``
    is a no-op). TensorRT 10: ``--int8`` for the Q/DQ file (explicit quantization in
    a weakly typed network needs the flag) and ``--stronglyTyped`` for the FP16
    file (``--fp16`` would let the builder run in FP16 the nodes the file keeps in
    FP32 because their range exceeds FP16).

    Examples:
        >>> [trtexec_flags(10, p) for p in ("fp32", "fp16", "int8")]
        [[], ['--stronglyTyped'], ['--int8']]
        >>> [trtexec_flags(11, p) for p in ("fp32", "fp16", "int8")]
        [[], [], []]
    """
    if file_precision not in PRECISIONS:
        raise ValueError(f"file precision must be one of {', '.join(map(repr, PRECISIONS))}, got {file_precision!r}")
    if major not in MAJORS:
        raise ValueError(f"TensorRT {major} is not followed here; expected one of {MAJORS}")
    if major >= 11:
        return []
    return {"fp32": [], "fp16": ["--stronglyTyped"], "int8": ["--int8"]}[file_precision]


def trtexec_variants(file_precision: str) -> dict[str, list[str]]:
    """``{"trtexec (TensorRT <majors>)": flags}``: one command per distinct set of flags of the major versions followed here.

    Examples:
        >>> trtexec_variants("int8")
        {'trtexec (TensorRT 10)': ['--int8'], 'trtexec (TensorRT 11)': []}
        >>> trtexec_variants("fp32")  # the same command for both: written once
        {'trtexec (TensorRT 10, 11)': []}
    """
    majors_of: dict[tuple[str, ...], list[int]] = {}
    for major in MAJORS:
        majors_of.setdefault(tuple(trtexec_flags(major, file_precision)), []).append(major)
    return {f"trtexec (TensorRT {', '.join(map(str, m))})": list(flags) for flags, m in majors_of.items()}


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


_COMMON_RULES = {
    "refit": "BuilderFlag.REFIT at build; trt.Refitter + OnnxParserRefitter.refit_from_file(new static file) "
    "+ Refitter.refit_cuda_engine (recomputes a BatchNorm fused into a convolution; the parser's refitter does "
    "not walk model-local function bodies, so live files are not refitted)",
    "weight_stripped": "BuilderFlag.STRIP_PLAN + BuilderFlag.REFIT_IDENTICAL at build; refilled at load from the "
    "file it was built from with OnnxParserRefitter.refit_from_file",
    "timing_cache": "IBuilderConfig.create_timing_cache/set_timing_cache (Polygraphy load_timing_cache, "
    "save_timing_cache); a cache is valid for one TensorRT version and GPU, one per engine folder",
}
_MAJOR_RULES = {
    10: {
        "typing": "weakly typed by default; NetworkDefinitionCreationFlag.STRONGLY_TYPED optional",
        "precision": "BuilderFlag.FP16 for FP16, BuilderFlag.INT8 with Q/DQ nodes (explicit quantization); "
        "INT8 calibrators exist but are not used",
        "trtexec": "--stronglyTyped for the FP16 file, --int8 for the Q/DQ file",
    },
    11: {
        "typing": "always strongly typed; NetworkDefinitionCreationFlag.STRONGLY_TYPED deprecated and ignored",
        "precision": "no precision builder flags (BuilderFlag.FP16/INT8 removed) and no INT8 calibrators: FP16 "
        "from the FP16 ONNX file, INT8 from Q/DQ nodes",
        "trtexec": "no precision flag (--fp16/--int8/--best/--calib removed; --stronglyTyped a no-op)",
    },
}


def version_rules(major: int) -> dict[str, str]:
    """What this code does on TensorRT ``major``, rule by rule (the report, the docs and the self-check show it).

    Examples:
        >>> version_rules(11)["trtexec"]
        'no precision flag (--fp16/--int8/--best/--calib removed; --stronglyTyped a no-op)'
        >>> sorted(version_rules(10)) == sorted(version_rules(11))
        True
    """
    if major not in MAJORS:
        raise ValueError(f"TensorRT {major} is not followed here; expected one of {MAJORS}")
    return {**_MAJOR_RULES[major], **_COMMON_RULES}
