"""TensorRT engines from exported ONNX files, through Polygraphy's TensorRT loaders.

Written against the documented TensorRT 10.x and 11.x Python APIs; no machine
here has TensorRT's libraries or a GPU, so this module is imported lazily and its
GPU tests skip with the reason ``deploy.tensorrt.available()`` gives. Every
TensorRT name used here and in ``refit.py`` (``BuilderFlag.REFIT_IDENTICAL``,
``STRIP_PLAN``, ``MemoryPoolType.WORKSPACE``, ``Refitter.set_named_weights``,
``get_missing_weights``, ``refit_cuda_engine``, ``OnnxParserRefitter.refit_from_file``)
was found in the compiled bindings of TensorRT 10.0.1, 10.16.1 and 11.4.0 (the
``tensorrt-cu12-bindings`` wheels), and ``BuilderFlag.FP16`` only in the 10.x ones.
``BuilderFlag.INT8`` is set through Polygraphy's ``CreateConfig(int8=True)`` on
10.x only (TensorRT 10.x ``IBuilderConfig``; removed in 11.x per NVIDIA's
"Removed Python APIs" migration list, as are ``int8_calibrator`` and the
quantization flags); ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` through
``NetworkFromOnnxPath(strongly_typed=True)``. Unverified on a GPU: no machine here
has one.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import onnx

from deploy.tensorrt.support import check_onnx
from deploy.tensorrt.versions import build_plan, profile_shapes, trt_version

__all__ = ["EngineInfo", "TensorRTUnavailable", "build_engine"]


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or a CUDA device) is missing; the message is the reason."""


@dataclass
class EngineInfo:
    engine: str  # the serialized plan
    onnx: str  # the file the parser read (an FP16 copy on TensorRT 11 fp16)
    precision: str
    tensorrt: str
    strongly_typed: bool
    fp16_flag: bool
    int8_flag: bool
    profile: dict[str, list[int]]  # min/opt/max input shape
    workspace_bytes: int
    refittable: bool
    weight_stripped: bool
    timing_cache: str | None
    build_seconds: float
    log: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _input_meta(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    """The image input (the one with a dynamic batch dimension) and its non-batch dimensions.

    Other inputs (the AKPs of a file made by ``require_akp_inputs``) must be fully
    static: they need no optimization profile, so they are not returned.
    """
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    dynamic = [i for i in inputs if not _static(i)]
    if len(dynamic) != 1:
        raise ValueError(
            f"expected one image input with a dynamic batch dimension and static other inputs (AKPs), "
            f"the model has dynamic inputs {[i.name for i in dynamic]}"
        )
    dims = dynamic[0].type.tensor_type.shape.dim
    rest = tuple(d.dim_value for d in dims[1:])
    if any(v <= 0 for v in rest):
        raise ValueError(f"input {dynamic[0].name!r} must have static non-batch dimensions, got {rest}")
    return dynamic[0].name, rest


def _static(value_info: onnx.ValueInfoProto) -> bool:
    dims = value_info.type.tensor_type.shape.dim
    return all(d.HasField("dim_value") and d.dim_value > 0 for d in dims)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    precision: str = "fp32",
    batch_sizes: Sequence[int] = (1, 8, 64),
    workspace_bytes: int = 1 << 30,
    timing_cache: str | Path | None = None,
    refittable: bool = False,
    strip_weights: bool = False,
    fp16_onnx: str | Path | None = None,
) -> EngineInfo:
    """Build and save an engine; write ``<engine>.json`` (options, version) and ``<engine>.log`` beside it.

    Args:
        onnx_path: an exported file (static or live; live files parse through their
            model-local functions).
        engine_path: where the plan goes.
        precision: ``fp32``, ``fp16`` or ``int8``. FP16 on TensorRT 10 sets the FP16
            builder flag; on TensorRT 11 (strongly typed, no such flag) the engine is
            built from an FP16 file with FP32 inputs and outputs: ``fp16_onnx``, or a
            copy made here (``fp16.to_fp16_onnx``). INT8 needs a Q/DQ file
            (``onnx_path``): TensorRT 10 builds it weakly typed with the INT8 flag,
            TensorRT 11 strongly typed (``versions`` says why); INT32 bias
            ``DequantizeLinear`` nodes are folded first (``deploy.int8.tensorrt``).
        batch_sizes: one optimization profile covers them (``versions.profile_shapes``).
        workspace_bytes: the builder's workspace memory-pool limit.
        timing_cache: a timing-cache file, read if present and written after the build.
        refittable: ``BuilderFlag.REFIT``: weights can be replaced later (``refit``).
        strip_weights: a weight-stripped plan (``STRIP_PLAN`` with ``REFIT_IDENTICAL``),
            refilled from ``onnx_path`` at load by ``refit.load_stripped``.
        fp16_onnx: the FP16 file of ``onnx_path`` (the run's ``model.static-fp16.onnx``),
            parsed instead of ``onnx_path`` where the version builds FP16 from a file.

    Raises:
        TensorRTUnavailable: no usable TensorRT.
        ValueError: the ONNX file has problems TensorRT's parser would reject
            (``check_onnx``), or bad arguments.
    """
    version, text = trt_version()
    if version is None:
        raise TensorRTUnavailable(text)
    plan = build_plan(version, precision)
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    src, model = _onnx_for_parser(Path(onnx_path), engine_path, plan, fp16_onnx)
    name, rest = _input_meta(model)
    shapes = profile_shapes(rest, list(batch_sizes))
    return _build_and_save(
        src, engine_path, plan, name, shapes, text, precision, workspace_bytes, timing_cache, refittable, strip_weights
    )


def _build_and_save(
    src: Path,
    engine_path: Path,
    plan,
    name: str,
    shapes,
    text: str,
    precision: str,
    workspace_bytes: int,
    timing_cache,
    refittable: bool,
    strip_weights: bool,
) -> EngineInfo:
    """``build_engine`` once its parser input and profile are known: the plan, its ``.log`` and ``.json``."""
    from polygraphy.backend.trt import NetworkFromOnnxPath

    from export.atomic import atomic_output

    mn, opt, mx = shapes
    log_path = engine_path.with_suffix(engine_path.suffix + ".log")
    network = NetworkFromOnnxPath(str(src), strongly_typed=plan.strongly_typed)
    config = _builder_config(plan, name, (mn, opt, mx), workspace_bytes, timing_cache, refittable, strip_weights)
    engine_bytes, seconds = _build_logged(network, config, timing_cache, log_path)
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(engine_bytes)
    info = EngineInfo(
        engine=str(engine_path),
        onnx=str(src),
        precision=precision,
        tensorrt=text,
        strongly_typed=plan.strongly_typed,
        fp16_flag=plan.fp16_flag,
        int8_flag=plan.int8_flag,
        profile={"min": list(mn), "opt": list(opt), "max": list(mx)},
        workspace_bytes=int(workspace_bytes),
        refittable=refittable or strip_weights,
        weight_stripped=strip_weights,
        timing_cache=str(timing_cache) if timing_cache else None,
        build_seconds=seconds,
        log=str(log_path),
    )
    engine_path.with_suffix(engine_path.suffix + ".json").write_text(json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def _onnx_for_parser(src: Path, engine_path: Path, plan, fp16_onnx) -> tuple[Path, onnx.ModelProto]:
    """The file TensorRT's parser reads for ``plan`` (an FP16 or TensorRT-form copy where needed), checked."""
    from deploy.int8.tensorrt import is_qdq

    if plan.fp16_onnx:
        src = Path(fp16_onnx) if fp16_onnx is not None else _fp16_copy(src, engine_path)
    qdq = is_qdq(src)
    if plan.qdq_onnx and not qdq:
        raise ValueError(
            f"{src} has no QuantizeLinear/DequantizeLinear nodes, expected an INT8 (Q/DQ) file: TensorRT builds INT8 "
            "from Q/DQ nodes (TensorRT 11 has no INT8 calibration)"
        )
    if qdq and not plan.qdq_onnx:
        raise ValueError(f"{src} is an INT8 (Q/DQ) file, expected precision='int8' for it")
    if qdq:
        src = _tensorrt_form(src, engine_path)
    src = _upgraded(src, engine_path)
    model = onnx.load(str(src))
    problems = check_onnx(model)
    if problems:
        raise ValueError(f"{src} cannot be built by TensorRT: " + "; ".join(problems))
    return src, model


def _fp16_copy(src: Path, engine_path: Path) -> Path:
    from deploy.fp16 import to_fp16_onnx

    fp16_src = engine_path.with_suffix(".fp16.onnx")
    to_fp16_onnx(src, fp16_src)
    return fp16_src


def _upgraded(src: Path, engine_path: Path) -> Path:
    """``src``, or a copy beside the engine with today's ``ai.acl`` op names (``ai.acl.Mean`` -> ``MeanKernel``).

    TensorRT's parser would import an old file's ``ai.acl.Mean`` as the built-in Mean.
    """
    from export.legacy import legacy_ops, renamed
    from export.passes import save

    model = onnx.load(str(src))
    if not legacy_ops(model):
        return src
    return save(renamed(model)[0], engine_path.with_suffix(".renamed.onnx"))


def _tensorrt_form(src: Path, engine_path: Path) -> Path:
    """``src`` itself when TensorRT's parser takes its Q/DQ nodes, else its TensorRT form beside the engine."""
    from deploy.int8.tensorrt import qdq_problems, write_tensorrt_form

    if not qdq_problems(src):
        return src
    return write_tensorrt_form(src, engine_path.with_suffix(".int8.onnx"))


def _builder_config(plan, name: str, shapes, workspace_bytes: int, timing_cache, refittable: bool, strip_weights: bool):
    """Polygraphy's builder config: precision flags, one profile over ``shapes`` (min, opt, max), refit options.

    ``int8=True`` on TensorRT 10 only: with Q/DQ layers in the network Polygraphy
    sets ``BuilderFlag.INT8`` and no calibrator (explicit quantization).
    """
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, PostprocessConfig, Profile

    mn, opt, mx = shapes
    config = CreateConfig(
        fp16=plan.fp16_flag,
        int8=plan.int8_flag,
        profiles=[Profile().add(name, min=mn, opt=opt, max=mx)],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_bytes)},
        load_timing_cache=str(timing_cache) if timing_cache and Path(timing_cache).exists() else None,
        refittable=refittable and not strip_weights,
        strip_plan=strip_weights,
    )
    if strip_weights:
        # A stripped plan is refilled with the very weights it was built from.
        config = PostprocessConfig(
            config, lambda _builder, _network, cfg: cfg.set_flag(trt.BuilderFlag.REFIT_IDENTICAL)
        )
    return config


def _build_logged(network, config, timing_cache, log_path: Path) -> tuple[bytes, float]:
    """The serialized plan and the seconds the build took; TensorRT's log goes to ``log_path``."""
    from polygraphy.backend.trt import EngineBytesFromNetwork
    from polygraphy.logger import G_LOGGER

    G_LOGGER.log_file = str(log_path)
    start = time.perf_counter()
    try:
        engine_bytes = EngineBytesFromNetwork(
            network, config=config, save_timing_cache=str(timing_cache) if timing_cache else None
        )()
    finally:
        G_LOGGER.log_file = None
    return bytes(engine_bytes), time.perf_counter() - start
