"""Triton model configurations: generated from the ONNX file, parsed with Triton's protobuf, checked against it.

Generation needs nothing beyond ``onnx``: ``config.pbtxt`` text is written by a
small emitter (``to_pbtxt``). Checking parses that text with Triton's own
``model_config.proto`` (``inference.ModelConfig``, shipped as
``tritonclient.grpc.model_config_pb2``; ``pip install tritonclient`` is enough,
the grpc extra is not needed), so a field Triton does not know, a bad enum or a
syntax error fails with its line and column, and then compares the parsed
message with the ONNX file's inputs and outputs (``check_config``).

Batching rule (``batching_plan``), from a measured latency curve ``{batch: p50_ms}``:

1. ``max_batch_size`` is the largest measured batch whose p50 is within
   ``latency_budget_ms`` (every measured batch when no budget is given).
2. A measured batch ``b <= max_batch_size`` becomes a *preferred* batch size when
   its throughput ``b / p50(b)`` beats every smaller measured batch by at least
   ``min_gain`` (default 10 %); of those, the ``max_preferred`` largest are kept.
   Triton's batcher guide says preferred sizes should be set only where a size is
   significantly faster than the others, so a flat curve (usual on a CPU) gives
   none and the batcher simply forms the largest batch it can.
3. ``max_queue_delay_microseconds`` is 0 (Triton's default: no waiting for a
   batch to fill) unless given.

Examples:
    >>> plan = batching_plan({1: 1.0, 8: 5.0, 64: 38.0})
    >>> plan.max_batch_size, plan.preferred  # 8: 1600/s vs 1000/s (+60 %); 64: 1684/s vs 1600/s (+5 %)
    (64, [8])
    >>> batching_plan({1: 1.0, 8: 5.0, 64: 38.0}, latency_budget_ms=10).max_batch_size
    8
    >>> print(to_pbtxt({"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": Enum("TYPE_FP32"), "dims": [3, 4]}]}))
    name: "m"
    max_batch_size: 8
    input [
      {
        name: "x"
        data_type: TYPE_FP32
        dims: [ 3, 4 ]
      }
    ]
    <BLANKLINE>
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import onnx

__all__ = [
    "BatchingPlan",
    "Enum",
    "OnnxIO",
    "TensorSpec",
    "TritonConfigError",
    "batching_plan",
    "check_config",
    "model_config_pb2",
    "onnx_io",
    "parse_config",
    "to_pbtxt",
]

TRITON_TYPE = {
    onnx.TensorProto.BOOL: "TYPE_BOOL",
    onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32",
    onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.INT8: "TYPE_INT8",
    onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.FLOAT: "TYPE_FP32",
    onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.STRING: "TYPE_STRING",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16",
}
"""ONNX element type -> Triton ``DataType`` name (Triton's datatype table)."""


class TritonConfigError(ValueError):
    """A model configuration that Triton would refuse, or that does not match its ONNX file."""


class Enum(str):
    """A protobuf enum value: written unquoted by ``to_pbtxt``."""


# ---------------------------------------------------------------- ONNX side


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # Triton name, e.g. TYPE_FP32
    dims: tuple[int, ...]  # without the batch dimension when the model batches; -1 = any size


@dataclass(frozen=True)
class OnnxIO:
    """The inputs and outputs Triton sees of an ONNX file."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batching: bool  # every input and output has a dynamic first (batch) dimension
    optional_inputs: tuple[str, ...] = ()  # graph inputs with an initializer (e.g. AKPs): not served

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dims(vi: onnx.ValueInfoProto) -> list[int] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim]


def onnx_io(model: onnx.ModelProto | str | Path) -> OnnxIO:
    """Inputs (graph inputs without an initializer) and outputs of an ONNX file, in Triton's terms.

    Graph inputs that also have an initializer (the AKPs of a ``live-akp`` file)
    are listed as ``optional_inputs`` and left out: Triton batches every input
    along its first dimension, and AKPs have none, so a served file keeps its
    stored AKPs (new AKPs reach a server as a new model version instead).
    """
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)
    inits = {t.name for t in proto.graph.initializer}
    outputs = list(proto.graph.output)
    if any(_dims(o) is None for o in outputs):
        inferred = onnx.shape_inference.infer_shapes(proto)
        outputs = list(inferred.graph.output)
    specs: dict[str, list[tuple[str, str, list[int]]]] = {"inputs": [], "outputs": []}
    for kind, values in (("inputs", [i for i in proto.graph.input if i.name not in inits]), ("outputs", outputs)):
        for vi in values:
            elem = vi.type.tensor_type.elem_type
            if elem not in TRITON_TYPE:
                raise TritonConfigError(
                    f"{kind[:-1]} {vi.name!r} has ONNX element type {elem}, which Triton has no type for"
                )
            dims = _dims(vi)
            if dims is None or not dims:
                raise TritonConfigError(f"{kind[:-1]} {vi.name!r} has no known shape (rank >= 1 needed by Triton)")
            specs[kind].append((vi.name, TRITON_TYPE[elem], dims))
    if not specs["inputs"]:
        raise TritonConfigError("the ONNX file has no graph input without an initializer")
    batching = all(dims[0] == -1 and len(dims) >= 2 for _, _, dims in specs["inputs"] + specs["outputs"])

    def spec(name: str, dtype: str, dims: list[int]) -> TensorSpec:
        return TensorSpec(name, dtype, tuple(dims[1:] if batching else dims))

    return OnnxIO(
        inputs=tuple(spec(*s) for s in specs["inputs"]),
        outputs=tuple(spec(*s) for s in specs["outputs"]),
        batching=batching,
        optional_inputs=tuple(i.name for i in proto.graph.input if i.name in inits),
    )


# ---------------------------------------------------------------- batching


@dataclass(frozen=True)
class BatchingPlan:
    """``max_batch_size`` and ``dynamic_batching`` settings, and the curve and rule they came from."""

    max_batch_size: int
    preferred: list[int] = field(default_factory=list)
    max_queue_delay_us: int = 0
    curve: dict[int, float] = field(default_factory=dict)  # batch -> p50 ms, as measured
    throughput: dict[int, float] = field(default_factory=dict)  # batch -> samples/s
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def batching_plan(
    latency: Mapping[int, float] | None,
    *,
    max_batch_size: int | None = None,
    latency_budget_ms: float | None = None,
    min_gain: float = 0.10,
    max_preferred: int = 2,
    max_queue_delay_us: int = 0,
) -> BatchingPlan:
    """Batching settings from a latency curve ``{batch: p50_ms}`` (rule in the module docstring).

    ``max_batch_size`` given explicitly caps the measured choice; with no curve it is
    used as is (default 64) and no preferred size is set.
    """
    rule = (
        f"max_batch_size: largest measured batch with p50 <= {latency_budget_ms} ms"
        if latency_budget_ms is not None
        else "max_batch_size: largest measured batch"
    ) + (
        f"; preferred: batches whose throughput beats every smaller batch by >= {min_gain:.0%}, "
        f"the {max_preferred} largest; max_queue_delay_microseconds {max_queue_delay_us}"
    )
    if not latency:
        mbs = int(max_batch_size or 64)
        return BatchingPlan(
            mbs, [], int(max_queue_delay_us), rule="no latency curve: max_batch_size as given, no preferred size"
        )
    curve = {int(b): float(ms) for b, ms in sorted(latency.items())}
    bad = [b for b, ms in curve.items() if b < 1 or not ms > 0]
    if bad:
        raise ValueError(f"latency curve needs positive batch sizes and p50 values; bad entries for batch {bad}")
    within = [b for b, ms in curve.items() if latency_budget_ms is None or ms <= latency_budget_ms]
    mbs = max(within) if within else min(curve)
    if max_batch_size is not None:
        mbs = min(mbs, int(max_batch_size))
    throughput = {b: b / ms * 1e3 for b, ms in curve.items()}
    preferred, best = [], 0.0
    for b in sorted(curve):
        if b > mbs:
            break
        if best and throughput[b] >= (1 + min_gain) * best:
            preferred.append(b)
        best = max(best, throughput[b])
    preferred = preferred[-max_preferred:] if max_preferred > 0 else []
    return BatchingPlan(mbs, preferred, int(max_queue_delay_us), curve, throughput, rule)


# ---------------------------------------------------------------- pbtxt text


def _scalar(v: Any) -> str:
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string literal is a valid text-format string literal
    raise TypeError(f"cannot write {type(v).__name__} {v!r} to pbtxt")


def _emit(obj: Mapping[str, Any], indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for key, value in obj.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            out.append(f"{pad}{key} {{")
            _emit(value, indent + 1, out)
            out.append(f"{pad}}}")
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, Mapping) for v in value):
                out.append(f"{pad}{key} [")
                for k, item in enumerate(value):
                    out.append(f"{pad}  {{")
                    _emit(item, indent + 2, out)
                    out.append(f"{pad}  }}" + ("," if k < len(value) - 1 else ""))
                out.append(f"{pad}]")
            elif value:
                out.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")


def to_pbtxt(config: Mapping[str, Any]) -> str:
    """Protobuf text format of a nested dict (``Enum`` for enum values; ``None`` entries skipped)."""
    out: list[str] = []
    _emit(config, 0, out)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- parsing and checking


def model_config_pb2() -> Any:
    """Triton's ``model_config_pb2`` module (``inference.ModelConfig``), from an installed ``tritonclient``.

    Loaded from its file when ``tritonclient`` was installed without the grpc
    extra (its ``tritonclient.grpc`` package then refuses to import, but the
    generated module only needs ``protobuf``).

    Raises:
        ImportError: ``tritonclient`` is not installed.
    """
    try:
        from tritonclient.grpc import model_config_pb2 as module

        return module
    except (ImportError, RuntimeError):
        pass
    import sys

    name = "tritonclient.grpc.model_config_pb2"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "checking Triton configs needs Triton's model_config.proto from the tritonclient package: "
            "pip install tritonclient (or the project's 'serve' extra)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        raise ImportError(f"tritonclient is installed but has no {path}")
    file_spec = importlib.util.spec_from_file_location(name, path)
    assert file_spec is not None and file_spec.loader is not None
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def parse_config(text: str, source: str = "config.pbtxt") -> Any:
    """``config.pbtxt`` text -> ``inference.ModelConfig``; syntax and schema errors name ``source:line:column``."""
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    message = pb2.ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        where = f"{source}:{e.GetLine()}:{e.GetColumn()}" if e.GetLine() else source
        raise TritonConfigError(f"{where}: {e}") from None
    return message


def _dtype_name(pb2: Any, value: int) -> str:
    return pb2.DataType.Name(value)


def check_config(config: Any, io: OnnxIO | None, *, model_dir: str | Path | None = None) -> list[str]:
    """Problems of a parsed ``ModelConfig`` (empty when none), against ``io`` (the ONNX file) when given.

    Checked: name vs directory, backend/platform known, ``max_batch_size`` vs the
    file's batch dimension, every input and output (name, type, dims) against the
    ONNX file both ways, preferred batch sizes within ``max_batch_size``, warmup
    inputs against the inputs, TensorRT instances on GPUs, and (with
    ``model_dir``) that every version directory holds the model file.
    """
    pb2 = model_config_pb2()
    problems: list[str] = []
    where = f"model {config.name or '?'}"
    if model_dir is not None and config.name and config.name != Path(model_dir).name:
        problems.append(f"{where}: name differs from its directory {Path(model_dir).name!r}")
    backend = config.backend or {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(
        config.platform, ""
    )
    if backend not in ("onnxruntime", "python", "tensorrt"):
        problems.append(f"{where}: unknown backend {config.backend!r} / platform {config.platform!r}")
    mbs = config.max_batch_size
    if mbs < 0:
        problems.append(f"{where}: max_batch_size {mbs} < 0")
    if io is not None:
        problems += _io_problems(config, io, pb2, where)
    if config.HasField("dynamic_batching"):
        if mbs == 0:
            problems.append(f"{where}: dynamic_batching needs max_batch_size > 0")
        bad = [b for b in config.dynamic_batching.preferred_batch_size if not 1 <= b <= mbs]
        if bad:
            problems.append(f"{where}: preferred_batch_size {bad} outside 1..max_batch_size ({mbs})")
    problems += _warmup_problems(config, where)
    kinds = {pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group}
    if backend == "tensorrt" and kinds - {"KIND_GPU"}:
        problems.append(f"{where}: TensorRT instances must be KIND_GPU, got {sorted(kinds)}")
    if model_dir is not None:
        problems += _check_versions(config, backend, Path(model_dir), where)
    return problems


def _io_problems(config: Any, io: OnnxIO, pb2: Any, where: str) -> list[str]:
    """The config's batching, inputs and outputs against the ONNX file's, both ways."""
    problems = []
    mbs = config.max_batch_size
    if mbs > 0 and not io.batching:
        problems.append(f"{where}: max_batch_size {mbs} > 0 but the ONNX file has no dynamic batch dimension")
    for kind, declared, actual in (("input", config.input, io.inputs), ("output", config.output, io.outputs)):
        want = {t.name: t for t in actual}
        got = {t.name: t for t in declared}
        for name in sorted(set(want) - set(got)):
            problems.append(f"{where}: ONNX {kind} {name!r} is missing from the config")
        for name in sorted(set(got) - set(want)):
            extra = " (an initializer: not servable)" if name in io.optional_inputs else ""
            problems.append(f"{where}: config {kind} {name!r} is not an ONNX {kind}{extra}")
        for name in sorted(set(got) & set(want)):
            problems += _tensor_problems(got[name], want[name], kind, pb2, where)
    return problems


def _tensor_problems(declared: Any, actual: TensorSpec, kind: str, pb2: Any, where: str) -> list[str]:
    problems = []
    dtype = _dtype_name(pb2, declared.data_type)
    if dtype != actual.data_type:
        problems.append(
            f"{where}: {kind} {declared.name!r} is {dtype} in the config, {actual.data_type} in the ONNX file"
        )
    dims = tuple(declared.dims)
    ok = len(dims) == len(actual.dims) and all(wd == -1 or gd == wd for gd, wd in zip(dims, actual.dims))
    if not ok:
        problems.append(
            f"{where}: {kind} {declared.name!r} dims {list(dims)} in the config, {list(actual.dims)} in the ONNX file"
        )
    return problems


def _warmup_problems(config: Any, where: str) -> list[str]:
    """Each warmup request against the batch limit and the declared inputs."""
    problems = []
    mbs = config.max_batch_size
    inputs = {t.name: t for t in config.input}
    for w in config.model_warmup:
        if mbs > 0 and not 1 <= w.batch_size <= mbs:
            problems.append(f"{where}: warmup {w.name!r} batch_size {w.batch_size} outside 1..{mbs}")
        for name, spec in w.inputs.items():
            if name not in inputs:
                problems.append(f"{where}: warmup {w.name!r} feeds {name!r}, which is not an input")
            elif spec.data_type != inputs[name].data_type or list(spec.dims) != list(inputs[name].dims):
                problems.append(f"{where}: warmup {w.name!r} input {name!r} differs from its declaration")
        missing = sorted(set(inputs) - set(w.inputs))
        if missing:
            problems.append(f"{where}: warmup {w.name!r} does not feed {missing}")
    return problems


def _check_versions(config: Any, backend: str, model_dir: Path, where: str) -> list[str]:
    default = config.default_model_filename or {
        "onnxruntime": "model.onnx",
        "tensorrt": "model.plan",
        "python": "model.py",
    }.get(backend, "")
    versions = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if not versions:
        return [f"{where}: no version directory (<model>/1/...) in {model_dir}"]
    problems = []
    onnx_file = config.parameters["onnx_file"].string_value if "onnx_file" in config.parameters else None
    for v in versions:
        for needed in filter(None, [default, onnx_file if backend == "python" else None]):
            if not (model_dir / str(v) / needed).is_file():
                problems.append(f"{where}: version {v} has no {needed}")
    if backend == "python" and not onnx_file:
        problems.append(f"{where}: python model without parameter onnx_file")
    return problems
