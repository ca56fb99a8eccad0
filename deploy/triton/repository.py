"""Write a Triton model repository for an exported ACL model, add model versions, check a repository.

Layout written by ``write_repository(out_dir, files, name="acl")``::

    out_dir/
      .acl-deploy-triton.json         what was written (models, batching plan, ONNX I/O); marks the folder as ours
      acl_onnxruntime/                Triton's C++ onnxruntime backend (GPU or CPU)
        config.pbtxt                  instance_group KIND_GPU
        configs/cpu.pbtxt             the same with KIND_CPU (tritonserver --model-config-name=cpu)
        1/model.onnx                  the static file
      acl_python/                     python backend hosting ONNX Runtime (CPU-only servers, live AKPs)
        config.pbtxt                  instance_group KIND_CPU
        1/model.py                    deploy/triton/python_model.py, standalone
        1/model.onnx                  the static file (or the live one: python_source="live")
      acl_tensorrt/                   only when an engine file is given
        config.pbtxt                  platform tensorrt_plan, KIND_GPU
        1/model.plan
      acl_int8_onnxruntime/           only with an INT8 (Q/DQ) file: files["static-int8"]
      acl_int8_python/                the same two models serving the Q/DQ file
      acl_int8_tensorrt/              only when an INT8 engine file is given (int8_engine=)

The INT8 file is served as models of its own, beside the FP32 ones, not as a new
version of them: Triton serves one version of a model by default (the latest), so
a version would replace the FP32 model, while models of their own let a client
pick either precision per request, and keep ``deploy.hotswap.triton_version``'s new
AKPs (FP32 only) away from the INT8 models (``MARKER`` records their ``precision``).

Every config is generated from the ONNX file's inputs and outputs, then, where
``tritonclient`` is installed, parsed with Triton's ``model_config.proto`` and
checked against that file (``check_repository``) before the repository is moved
into place; ``RepositoryInfo.validated`` says whether that ran. New AKPs reach
a running server as a new version directory (``add_version``; ``deploy.hotswap``
computes the new file), which Triton loads beside the old one and switches to
without downtime (``model-control-mode=explicit`` + a load request, or ``poll``).

What runs here and what does not: the python-backend model is served by a real
Triton 2.51 server in the tests (``tests/deploy/triton``, serve environment).
The ``onnxruntime`` and ``tensorrt_plan`` models are generated (and checked as
above where ``tritonclient`` is installed), but no machine of this project has
Triton's C++ onnxruntime or TensorRT backends (nvidia-pytriton ships only the
python backend) or a GPU, so they have never been loaded by a server here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import onnx

from deploy.triton.config import (
    BatchingPlan,
    Enum,
    OnnxIO,
    TritonConfigError,
    batching_plan,
    check_config,
    model_config_pb2,
    onnx_io,
    parse_config,
    to_pbtxt,
)

__all__ = [
    "MARKER",
    "RepositoryInfo",
    "add_version",
    "check_repository",
    "foreign_files",
    "model_configs",
    "move_repository",
    "validate_repository",
    "write_repository",
]

MARKER = ".acl-deploy-triton.json"
SCHEMA = "acl-deploy/triton-repository/1"
PYTHON_MODEL = Path(__file__).with_name("python_model.py")
UNVERIFIED = (
    "onnxruntime and tensorrt_plan models: never loaded by a server here (nvidia-pytriton's Triton has only the "
    "python backend; no GPU, no TensorRT)"
)
"""What no run here can check. Whether the configs were parsed with Triton's protobuf is
``RepositoryInfo.validated`` (with ``validation``), not part of this sentence: it depends on the run."""


@dataclass
class RepositoryInfo:
    """What ``write_repository`` wrote."""

    path: Path
    models: dict[str, dict[str, Any]]  # name -> backend, instance kinds, config files, versions
    io: OnnxIO
    batching: BatchingPlan
    validated: bool
    validation: str  # "Triton's model_config.proto" or why not validated
    unverified: str = UNVERIFIED
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256 of the model files

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _io_entries(specs) -> list[dict[str, Any]]:
    return [{"name": t.name, "data_type": Enum(t.data_type), "dims": list(t.dims)} for t in specs]


def _warmup(io: OnnxIO, batches: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        inputs = [
            {
                "key": t.name,
                "value": {
                    "data_type": Enum(t.data_type),
                    "dims": [d if d > 0 else 1 for d in t.dims],
                    "zero_data": True,
                },
            }
            for t in io.inputs
        ]
        out.append({"name": f"batch_{b}", "batch_size": b, "inputs": inputs, "count": 1})
    return out


def _config(
    name: str,
    io: OnnxIO,
    plan: BatchingPlan,
    *,
    backend: str | None = None,
    platform: str | None = None,
    kind: str,
    count: int,
    parameters: Mapping[str, str] | None = None,
    warmup: bool,
) -> dict[str, Any]:
    batching = io.batching and plan.max_batch_size > 0
    warm = sorted({1, *plan.preferred}) if batching else [0]
    cfg: dict[str, Any] = {
        "name": name,
        "backend": backend,
        "platform": platform,
        "max_batch_size": plan.max_batch_size if batching else 0,
        "input": _io_entries(io.inputs),
        "output": _io_entries(io.outputs),
        "instance_group": [{"kind": Enum(kind), "count": count}],
    }
    if batching:
        db: dict[str, Any] = {}
        if plan.preferred:
            db["preferred_batch_size"] = list(plan.preferred)
        if plan.max_queue_delay_us:
            db["max_queue_delay_microseconds"] = plan.max_queue_delay_us
        cfg["dynamic_batching"] = db
    if parameters:
        cfg["parameters"] = [{"key": k, "value": {"string_value": str(v)}} for k, v in parameters.items()]
    if warmup:
        cfg["model_warmup"] = _warmup(io, warm)
    return cfg


def _write_config(model_dir: Path, cfg: dict[str, Any], filename: str = "config.pbtxt") -> Path:
    text = to_pbtxt(cfg)
    path = model_dir / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _resolve_files(files: Any, staging: Path, input_shape: Sequence[int] | None) -> dict[str, Path]:
    """``{kind: path}`` from a mapping, a single static file, or an ``nn.Module`` (exported into ``staging``)."""
    if isinstance(files, (str, os.PathLike)):
        return {"static": Path(files)}
    if isinstance(files, Mapping):
        out = {str(k): Path(v) for k, v in files.items()}
        if "static" not in out:
            raise ValueError(f"files must include the 'static' ONNX file; got kinds {sorted(out)}")
        return out
    try:
        from torch import nn
    except ImportError:  # pragma: no cover - torch is a dependency
        nn = None
    if nn is not None and isinstance(files, nn.Module):
        if input_shape is None:
            raise ValueError("input_shape (N, C, H, W) is needed to export a model")
        import export

        d = staging / ".export"
        return dict(
            export.export_files(files, {"static": d / "model.static.onnx", "live": d / "model.live.onnx"}, input_shape)
        )
    raise TypeError(f"files must be {{kind: path}}, a static ONNX path or an nn.Module, got {type(files).__name__}")


def _can_validate() -> tuple[bool, str]:
    try:
        model_config_pb2()
    except ImportError as e:
        return False, f"not validated: {e}"
    return True, "Triton's model_config.proto (tritonclient.grpc.model_config_pb2)"


def write_repository(
    out_dir: str | Path,
    files: Any,
    *,
    name: str = "acl",
    input_shape: Sequence[int] | None = None,
    latency: Mapping[int, float] | None = None,
    max_batch_size: int | None = None,
    latency_budget_ms: float | None = None,
    max_queue_delay_us: int = 0,
    engine: str | Path | None = None,
    int8_engine: str | Path | None = None,
    python_source: str = "static",
    instances: int = 1,
    gpu_default: bool = True,
    intra_op_threads: int = 0,
    warmup: bool = True,
    overwrite: bool = False,
    validate: bool | None = None,
) -> RepositoryInfo:
    """Write a Triton model repository for one exported model (layout in the module docstring).

    Args:
        out_dir: the repository folder, filled beside it and renamed into place when
            complete and checked; an existing non-empty folder is replaced only with
            ``overwrite`` and when it holds an earlier repository of ours (``MARKER``).
        files: ``{kind: path}`` as ``export.export_files`` returns (needs ``"static"``,
            ``"live"`` for ``python_source="live"``; ``"static-int8"``, the Q/DQ file, adds the
            INT8 models), one static ONNX path, or an ``nn.Module`` (needs ``input_shape``).
        name: model name prefix (``<name>_onnxruntime``, ``<name>_int8_python``... as in the layout).
        latency, max_batch_size, latency_budget_ms, max_queue_delay_us: ``config.batching_plan``'s;
            ``latency`` is the measured ``{batch: p50_ms}``.
        engine, int8_engine: TensorRT plans of the static and ``"static-int8"`` files, each adding a
            ``tensorrt_plan`` model (``max_batch_size`` capped by the profile in ``<engine>.json``).
        python_source: which file the python model serves: ``"static"`` or ``"live"``.
        instances: instances per group; intra_op_threads: the python model's ONNX Runtime threads (0: all).
        gpu_default: the onnxruntime model's ``config.pbtxt`` uses ``KIND_GPU`` and ``configs/cpu.pbtxt``
            ``KIND_CPU``; ``False`` swaps them (``configs/gpu.pbtxt``).
        warmup: add ``model_warmup`` (zero inputs at batch 1 and each preferred size).
        validate: ``True`` requires the protobuf check (``tritonclient``), ``False`` skips it, ``None``
            checks when ``tritonclient`` is importable and says in ``RepositoryInfo.validation`` when not.

    Returns a ``RepositoryInfo``. Raises ``FileExistsError`` when ``out_dir`` exists and may not be
    replaced, ``TritonConfigError`` when a generated config fails the check (nothing is written).
    """
    out, do_validate, validation = _precheck(out_dir, python_source, overwrite, validate)
    with _staging(out) as tmp:
        paths, io = _exported_files(files, tmp, input_shape, python_source)
        plan = batching_plan(
            latency,
            max_batch_size=max_batch_size,
            latency_budget_ms=latency_budget_ms,
            max_queue_delay_us=max_queue_delay_us,
        )
        engines, common = {"static": engine, "static-int8": int8_engine}, {"count": instances, "warmup": warmup}
        models = _write_models(
            tmp, name, paths, io, plan, python_source, engines, gpu_default, intra_op_threads, common
        )
        model_files = _finish_repository(tmp, models, io, plan, do_validate)
    return RepositoryInfo(out, models, io, plan, do_validate, validation, files=model_files)


def _finish_repository(tmp: Path, models: dict, io: OnnxIO, plan: BatchingPlan, do_validate: bool) -> dict[str, str]:
    """Drop the export's scratch files, write ``MARKER``, check the configs; the model files' hashes."""
    shutil.rmtree(tmp / ".export", ignore_errors=True)
    model_files = _model_file_hashes(tmp)
    _write_marker(tmp, models, io, plan, model_files)
    if do_validate:
        validate_repository(tmp, names=list(models))
    return model_files


def _precheck(
    out_dir: str | Path, python_source: str, overwrite: bool, validate: bool | None
) -> tuple[Path, bool, str]:
    """The checks before anything is written: the repository folder, and ``_validation_choice``'s answer."""
    # Absolute: ``.`` has no name and is its own parent, so the staging folder would be made inside it.
    out = Path(os.path.abspath(out_dir))
    if python_source not in ("static", "live"):
        raise ValueError(f"python_source must be 'static' or 'live', got {python_source!r}")
    if out.exists():
        _check_replaceable(out, overwrite)
    return (out, *_validation_choice(validate))


@contextmanager
def _staging(out: Path):
    """A temporary folder beside ``out``, renamed to ``out`` when the block completes, removed when anything fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        _place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _exported_files(
    files: Any, staging: Path, input_shape: Sequence[int] | None, python_source: str
) -> tuple[dict[str, Path], OnnxIO]:
    """The files to serve (``_resolve_files``) and the static file's inputs and outputs."""
    paths = _resolve_files(files, staging, input_shape)
    if python_source == "live" and "live" not in paths:
        raise ValueError("python_source='live' needs files['live']")
    return paths, onnx_io(onnx.load(str(paths["static"]), load_external_data=False))


def _validation_choice(validate: bool | None) -> tuple[bool, str]:
    """Whether to check the configs with Triton's protobuf, and what ``RepositoryInfo.validation`` says about it."""
    can, how = _can_validate()
    if validate and not can:
        raise ImportError(how.removeprefix("not validated: "))
    do_validate = can if validate is None else bool(validate)
    return do_validate, how if do_validate else ("not validated: validate=False" if can else how)


def _write_models(
    tmp: Path,
    name: str,
    paths: dict[str, Path],
    io: OnnxIO,
    plan: BatchingPlan,
    python_source: str,
    engines: dict[str, str | Path | None],
    gpu_default: bool,
    threads: int,
    common: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Every model folder of the repository in ``tmp``: ``{model name: what the marker records of it}``."""
    ort_name, py_name = f"{name}_onnxruntime", f"{name}_python"
    models = {
        ort_name: _write_onnxruntime_model(tmp / ort_name, paths["static"], io, plan, gpu_default, common),
        py_name: _write_python_model(tmp / py_name, paths[python_source], python_source, io, plan, threads, common),
    }
    if engines.get("static") is not None:
        io_from = f"{ort_name}/1/model.onnx"
        models[f"{name}_tensorrt"] = _write_tensorrt_model(
            tmp / f"{name}_tensorrt", Path(engines["static"]), io_from, io, plan, common
        )
    if "static-int8" in paths:
        models.update(
            _write_int8_models(tmp, f"{name}_int8", paths["static-int8"], engines, plan, gpu_default, threads, common)
        )
    return models


def _write_int8_models(
    tmp: Path,
    prefix: str,
    int8: Path,
    engines: dict[str, str | Path | None],
    plan: BatchingPlan,
    gpu_default: bool,
    threads: int,
    common: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """The INT8 (Q/DQ) file's own models, ``<prefix>_onnxruntime`` and ``<prefix>_python`` (and ``_tensorrt``)."""
    io = onnx_io(onnx.load(str(int8), load_external_data=False))
    ort_name, py_name = f"{prefix}_onnxruntime", f"{prefix}_python"
    models = {
        ort_name: _write_onnxruntime_model(tmp / ort_name, int8, io, plan, gpu_default, common),
        py_name: _write_python_model(tmp / py_name, int8, "static-int8", io, plan, threads, common),
    }
    if engines.get("static-int8") is not None:
        models[f"{prefix}_tensorrt"] = _write_tensorrt_model(
            tmp / f"{prefix}_tensorrt", Path(engines["static-int8"]), f"{ort_name}/1/model.onnx", io, plan, common
        )
    for entry in models.values():
        entry.update(source="static-int8", precision="int8")
    return models


def _write_onnxruntime_model(
    d: Path, static: Path, io: OnnxIO, plan: BatchingPlan, gpu_default: bool, common: dict[str, Any]
) -> dict[str, Any]:
    """The C++ onnxruntime-backend model: a GPU and a CPU config (one of them under ``configs/``), the static file."""
    kinds = ("KIND_GPU", "KIND_CPU") if gpu_default else ("KIND_CPU", "KIND_GPU")
    alt = "cpu" if gpu_default else "gpu"
    _write_config(d, _config(d.name, io, plan, backend="onnxruntime", kind=kinds[0], **common))
    _write_config(d, _config(d.name, io, plan, backend="onnxruntime", kind=kinds[1], **common), f"configs/{alt}.pbtxt")
    (d / "1").mkdir()
    shutil.copyfile(static, d / "1" / "model.onnx")
    return {
        "backend": "onnxruntime",
        "instance_kind": kinds[0],
        "configs": {"config.pbtxt": kinds[0], f"configs/{alt}.pbtxt": kinds[1]},
        "source": "static",
        "served_by_a_server_here": False,
    }


def _write_python_model(
    d: Path, onnx_file: Path, source: str, io: OnnxIO, plan: BatchingPlan, threads: int, common: dict[str, Any]
) -> dict[str, Any]:
    """The python-backend model: ``python_model.py`` hosting ONNX Runtime on ``onnx_file``, on the CPU."""
    params = {"onnx_file": "model.onnx", "intra_op_threads": str(threads)}
    _write_config(d, _config(d.name, io, plan, backend="python", kind="KIND_CPU", parameters=params, **common))
    (d / "1").mkdir()
    shutil.copyfile(PYTHON_MODEL, d / "1" / "model.py")
    shutil.copyfile(onnx_file, d / "1" / "model.onnx")
    return {
        "backend": "python",
        "instance_kind": "KIND_CPU",
        "configs": {"config.pbtxt": "KIND_CPU"},
        "source": source,
        "served_by_a_server_here": True,
    }


def _write_tensorrt_model(
    d: Path, engine: Path, io_from: str, io: OnnxIO, plan: BatchingPlan, common: dict[str, Any]
) -> dict[str, Any]:
    """The ``tensorrt_plan`` model; its inputs and outputs are checked against ``io_from``, the ONNX it was built from."""
    trt_plan = _engine_plan(engine, plan)
    _write_config(d, _config(d.name, io, trt_plan, platform="tensorrt_plan", kind="KIND_GPU", **common))
    (d / "1").mkdir()
    shutil.copyfile(engine, d / "1" / "model.plan")
    return {
        "backend": "tensorrt",
        "instance_kind": "KIND_GPU",
        "configs": {"config.pbtxt": "KIND_GPU"},
        "source": str(engine.name),
        "io_from": io_from,
        "served_by_a_server_here": False,
    }


def _model_file_hashes(tmp: Path) -> dict[str, str]:
    return {
        str(p.relative_to(tmp)): _sha256(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.suffix in (".onnx", ".plan")
    }


def _write_marker(
    tmp: Path, models: dict[str, Any], io: OnnxIO, plan: BatchingPlan, model_files: dict[str, str]
) -> None:
    marker = {
        "schema": SCHEMA,
        "models": models,
        "io": io.to_dict(),
        "batching": plan.to_dict(),
        "files": model_files,
        "unverified": UNVERIFIED,
    }
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def _engine_plan(engine: Path, plan: BatchingPlan) -> BatchingPlan:
    meta = engine.with_suffix(engine.suffix + ".json")
    if not meta.is_file():
        return plan
    profile = json.loads(meta.read_text()).get("profile") or {}
    top = profile.get("max")
    if not top:
        return plan
    mbs = min(plan.max_batch_size, int(top[0]))
    return BatchingPlan(
        mbs, [b for b in plan.preferred if b <= mbs], plan.max_queue_delay_us, plan.curve, plan.throughput, plan.rule
    )


def foreign_files(repo: str | Path) -> list[str]:
    """Files of ``repo`` that no repository of this tool holds: what replacing it would delete of a user's.

    Ours: ``MARKER``, and in each model folder it lists ``config.pbtxt``, ``configs/`` and the
    version folders (``write_repository``, ``add_version``). Anything else (a model of the
    user's, notes beside a config) is named, relative to ``repo``.

    Examples:
        >>> import tempfile
        >>> repo = Path(tempfile.mkdtemp())
        >>> _ = (repo / MARKER).write_text('{"models": {"acl_python": {}}}')
        >>> (repo / "acl_python" / "1").mkdir(parents=True)
        >>> _ = (repo / "acl_python" / "1" / "model.py").write_text("")
        >>> _ = (repo / "acl_python" / "NOTES.txt").write_text("mine")
        >>> foreign_files(repo)
        ['acl_python/NOTES.txt']
    """
    repo = Path(repo)
    models = set(_marker(repo).get("models", {}))

    def ours(rel: Path) -> bool:
        parts = rel.parts
        if parts == (MARKER,):
            return True
        if len(parts) < 2 or parts[0] not in models:
            return False
        return parts[1] in ("config.pbtxt", "configs") or parts[1].isdigit()

    return sorted(str(f.relative_to(repo)) for f in repo.rglob("*") if not f.is_dir() and not ours(f.relative_to(repo)))


def _check_replaceable(out: Path, overwrite: bool) -> None:
    if not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if not any(out.iterdir()):
        return
    ours = (out / MARKER).is_file()
    if ours and overwrite:
        foreign = foreign_files(out)
        if foreign:
            raise FileExistsError(
                f"{out} holds files this tool did not write ({', '.join(foreign[:3])}); refusing to replace it"
            )
        return
    if ours:
        raise FileExistsError(f"{out} holds a Triton repository written earlier; pass overwrite=True to replace it")
    raise FileExistsError(f"{out} is not empty and is not a repository written by acl-deploy; refusing to replace it")


def move_repository(src: str | Path, dest: str | Path, *, overwrite: bool = False) -> Path:
    """Put the finished repository ``src`` at ``dest`` (``write_repository``'s rules for ``dest``); ``dest``.

    For a repository written ahead and put in place later (``pipeline``'s external
    ``--triton-repo``, placed when the run commits). An earlier repository at ``dest`` is
    replaced only after the new one is in place.

    Raises:
        FileExistsError: ``dest`` is a file, or is not empty and not a repository of ours
            (``overwrite`` False, or it holds files this tool did not write: ``foreign_files``).
    """
    src, dest = Path(src), Path(dest)
    if dest.exists():
        _check_replaceable(dest, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _place(src, dest)
    return dest


def _place(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``; an old repository there is replaced only after the new one is in place."""
    os.chmod(tmp, 0o777 & ~_umask())
    if not out.exists():
        os.rename(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- reading and checking


def _marker(repo: Path) -> dict[str, Any]:
    path = repo / MARKER
    return json.loads(path.read_text()) if path.is_file() else {}


def _versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def model_configs(repo: str | Path) -> dict[str, Path]:
    """``{model: config.pbtxt}`` of every model folder in ``repo``."""
    repo = Path(repo)
    return {p.name: p / "config.pbtxt" for p in sorted(repo.iterdir()) if p.is_dir() and (p / "config.pbtxt").is_file()}


def _io_file(repo: Path, model: str, config: Any, meta: dict[str, Any]) -> Path | None:
    model_dir = repo / model
    versions = _versions(model_dir)
    if not versions:
        return None
    latest = model_dir / str(versions[-1])
    backend = config.backend or {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(
        config.platform, ""
    )
    if backend == "onnxruntime":
        return latest / (config.default_model_filename or "model.onnx")
    if backend == "python" and "onnx_file" in config.parameters:
        return latest / config.parameters["onnx_file"].string_value
    io_from = meta.get("models", {}).get(model, {}).get("io_from")
    return repo / io_from if io_from else None


def check_repository(repo: str | Path) -> dict[str, list[str]]:
    """``{model or config file: problems}`` for every model of ``repo`` (empty lists when all is well).

    Each ``config.pbtxt`` and ``configs/*.pbtxt`` is parsed with Triton's
    ``model_config.proto`` and checked (``config.check_config``) against the
    ONNX file it serves (the latest version's), or, for a TensorRT plan, the ONNX
    file it was built from as recorded in the marker.
    """
    repo = Path(repo)
    meta = _marker(repo)
    result: dict[str, list[str]] = {}
    for model, cfg_path in model_configs(repo).items():
        for path in [cfg_path, *sorted((repo / model / "configs").glob("*.pbtxt"))]:
            key = str(path.relative_to(repo))
            try:
                config = parse_config(path.read_text(), key)
            except TritonConfigError as e:
                result[key] = [str(e)]
                continue
            io_path = _io_file(repo, model, config, meta)
            problems: list[str] = []
            io = None
            if io_path is None:
                problems.append(f"model {model}: no ONNX file to check its inputs and outputs against")
            elif not io_path.is_file():
                problems.append(f"model {model}: {io_path.relative_to(repo)} is missing")
            else:
                try:
                    io = onnx_io(io_path)
                except Exception as e:  # unreadable or unservable file: reported, not raised
                    problems.append(f"model {model}: cannot read {io_path.relative_to(repo)}: {e}")
            problems += check_config(config, io, model_dir=repo / model)
            result[key] = problems
    if not result:
        result["(repository)"] = [f"{repo} holds no model folder with a config.pbtxt"]
    return result


def validate_repository(repo: str | Path, *, names: Sequence[str] = ()) -> dict[str, list[str]]:
    """``check_repository``, raising ``TritonConfigError`` with every problem when there is one.

    ``names``: models that must be present.
    """
    result = check_repository(repo)
    problems = [p for ps in result.values() for p in ps]
    present = set(model_configs(repo))
    problems += [f"model {n} is missing from {repo}" for n in names if n not in present]
    if problems:
        raise TritonConfigError(f"Triton repository {repo} has {len(problems)} problem(s):\n- " + "\n- ".join(problems))
    return result


def _check_precision(model: str, meta: dict[str, Any], onnx_file: str | Path | onnx.ModelProto) -> None:
    """A new version computes in its model's precision: an INT8 model gets Q/DQ files, an FP32 model none."""
    from deploy.int8.tensorrt import is_qdq

    int8_model, qdq = meta.get("precision") == "int8", is_qdq(onnx_file)
    if int8_model and not qdq:
        raise ValueError(
            f"model {model!r} serves an INT8 (Q/DQ) file and the new version has no Q/DQ nodes, expected an INT8 "
            "file (new AKPs for an INT8 model: re-run the job with --int8)"
        )
    if qdq and not int8_model:
        raise ValueError(
            f"model {model!r} serves an FP32 file and the new version is an INT8 (Q/DQ) file, expected an FP32 file "
            "(the INT8 file is served as models of its own: write_repository with files['static-int8'])"
        )


def add_version(
    repo: str | Path,
    model: str,
    onnx_file: str | Path | onnx.ModelProto,
    *,
    version: int | None = None,
    validate: bool | None = None,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Add ``<repo>/<model>/<version>/`` serving ``onnx_file`` (default version: latest + 1).

    The version folder is filled under a hidden temporary name and renamed, so a
    server polling the repository never sees it half written. A python-backend
    model gets ``model.py`` copied from its latest version. The new file must
    have the same inputs and outputs as the config (checked when Triton's
    protobuf is available). TensorRT plans are refused (build or refit an engine
    instead: ``deploy.tensorrt``), and so is a file of another precision than the
    model's (an FP32 file for an INT8 model, or a Q/DQ file for an FP32 one).
    ``extra_files`` (``{name: bytes}``) are written into the folder with it.

    Returns:
        The new version folder.
    """
    repo = Path(repo)
    model_dir = repo / model
    cfg_path = model_dir / "config.pbtxt"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{cfg_path} not found: {model!r} is not a model of {repo}")
    versions = _versions(model_dir)
    new = int(version) if version is not None else (versions[-1] + 1 if versions else 1)
    if new < 1 or new in versions:
        raise FileExistsError(f"version {new} of {model!r} exists already (versions {versions})")
    meta = _marker(repo).get("models", {}).get(model, {})
    text = cfg_path.read_text()
    backend = _onnx_backend(model, meta, text)
    _check_precision(model, meta, onnx_file)
    tmp = Path(tempfile.mkdtemp(prefix=f".{new}.", suffix=".tmp", dir=model_dir))
    try:
        _fill_version(tmp, onnx_file, backend, model_dir, versions)
        for name, data in (extra_files or {}).items():  # before the rename: a version appears whole
            (tmp / name).write_bytes(data)
        _check_new_version(tmp / "model.onnx", model, text, cfg_path, validate)
        os.chmod(tmp, 0o777 & ~_umask())
        os.rename(tmp, model_dir / str(new))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return model_dir / str(new)


def _onnx_backend(model: str, meta: dict[str, Any], config_text: str) -> str:
    """The backend of ``model`` (its marker's record, else its config), refused unless it serves ONNX files."""
    backend = meta.get("backend") or (
        "python" if 'backend: "python"' in config_text else "onnxruntime" if "onnxruntime" in config_text else ""
    )
    if backend not in ("onnxruntime", "python"):
        raise ValueError(
            f"model {model!r} has backend {backend or 'unknown'!r}; only ONNX-serving models get new versions here"
        )
    return backend


def _fill_version(
    tmp: Path, onnx_file: str | Path | onnx.ModelProto, backend: str, model_dir: Path, versions: list[int]
) -> None:
    """``model.onnx`` (and a python model's ``model.py``, from its latest version) in the version folder ``tmp``."""
    target = tmp / "model.onnx"
    if isinstance(onnx_file, onnx.ModelProto):
        target.write_bytes(onnx_file.SerializeToString())
    else:
        shutil.copyfile(onnx_file, target)
    if backend == "python":
        src = model_dir / str(versions[-1]) / "model.py" if versions else PYTHON_MODEL
        shutil.copyfile(src if src.is_file() else PYTHON_MODEL, tmp / "model.py")


def _check_new_version(target: Path, model: str, config_text: str, cfg_path: Path, validate: bool | None) -> None:
    """The new file has the inputs and outputs of the model's config (with Triton's protobuf, as ``validate`` asks)."""
    can, how = _can_validate()
    if validate and not can:
        raise ImportError(how)
    if can if validate is None else validate:
        config = parse_config(config_text, str(cfg_path))
        problems = [p for p in check_config(config, onnx_io(target)) if "version" not in p]
        if problems:
            raise TritonConfigError(f"new version of {model!r} does not fit its config:\n- " + "\n- ".join(problems))
