"""TensorRT parity rows: an engine per file and precision, built here; a failed build is a failed row, never a skipped one.

Backend ``trt``: ``trt:static``, ``trt:live``, ``trt:live-akp`` (built from the variant
whose AKPs are required inputs: TensorRT imports an input that has an initializer
as a constant) with ``trt:live-akp(fed)`` feeding new AKPs, ``trt:refit`` (a
refittable static engine refitted from the static file of new AKPs by TensorRT's
ONNX parser refitter, which also recomputes a fused BatchNorm) and, when the run has an INT8
file, ``trt:static-int8``. Backend ``trt-fp16``: ``trt-fp16:static`` and
``trt-fp16:live``.

``trt:static-int8`` is the Q/DQ file built by explicit quantization, judged at the
``int8`` precision. How each TensorRT major version builds it (and FP16, which
TensorRT 11 builds from the run's FP16 file) is ``deploy.tensorrt.versions``'
business. It is a mode of ``trt`` and not a ``trt-int8`` backend because the file,
not a builder setting, makes it INT8, as for ``ort-cpu:static-int8``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from pipeline.rows import Row

__all__ = ["INT8_MODE", "trt_modes", "trt_rows"]

INT8_MODE = "static-int8"


@dataclass(frozen=True)
class _Build:
    """What every engine of one ``trt_rows`` call is built with."""

    folder: Path
    batches: list[int]
    feeds: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # the AKPs of the model, new AKPs
    log: Callable[[str], None]
    fp16_file: Path | None

    def engine(self, src: Path, name: str, precision: str = "fp32", **kw: Any) -> Any:
        from deploy.tensorrt.build import build_engine

        return build_engine(
            src,
            self.folder / name,
            precision=precision,
            batch_sizes=self.batches,
            timing_cache=self.folder / "timing.cache",
            **kw,
        )


def trt_modes(backend: str, paths: Mapping[str, Path], int8_file: Path | None) -> list[str]:
    """The modes ``backend`` has rows for (every one listed as not available when the backend is not)."""
    if backend == "trt-fp16":
        return [m for m in paths if m in ("static", "live")]
    return [*paths, "refit", *([INT8_MODE] if int8_file is not None else [])]


def trt_rows(
    backend: str,
    moved_model: Any,
    paths: Mapping[str, Path],
    staging: Path,
    batches: Sequence[int],
    feeds: tuple[dict[str, np.ndarray], dict[str, np.ndarray]],
    log: Callable[[str], None],
    *,
    fp16_file: Path | None = None,
    int8_file: Path | None = None,
) -> list[Row]:
    """The rows of ``backend`` (``trt`` or ``trt-fp16``), engines in ``staging/trt``, one profile over ``batches``.

    ``feeds``: the model's own AKPs (fed to the live-akp engine) and the new ones
    that ``moved_model`` holds (the ``(fed)`` and ``refit`` rows). ``fp16_file``: the
    run's FP16 file; ``int8_file``: its Q/DQ file (adds ``trt:static-int8``).
    """
    folder = staging / "trt"
    folder.mkdir(exist_ok=True)
    build = _Build(folder, list(batches), feeds, log, fp16_file)
    rows = []
    for mode, src, precision in _sources(backend, paths, folder, int8_file):
        rows += _engine_rows(build, f"{backend}:{mode}", mode, src, precision)
    if backend == "trt":
        rows.append(_refit_row(build, f"{backend}:refit", paths["static"], moved_model))
    return rows


def _sources(
    backend: str, paths: Mapping[str, Path], folder: Path, int8_file: Path | None
) -> list[tuple[str, Path, str]]:
    """``(mode, file the engine is built from, precision)`` per engine of ``backend``."""
    modes = [m for m in trt_modes(backend, paths, int8_file) if m not in ("refit", "live-akp", INT8_MODE)]
    precision = "fp16" if backend == "trt-fp16" else "fp32"
    sources = [(m, Path(paths[m]), precision) for m in modes]
    if backend == "trt" and "live-akp" in paths:
        sources.append(("live-akp", _akps_required(Path(paths["live-akp"]), folder), "fp32"))
    if backend == "trt" and int8_file is not None:
        sources.append((INT8_MODE, Path(int8_file), "int8"))
    return sources


def _akps_required(live_akp: Path, folder: Path) -> Path:
    """The live-akp file with its AKPs as required inputs (no initializers), the form TensorRT takes AKPs in."""
    import onnx

    from export.passes import require_akp_inputs, save

    return save(require_akp_inputs(onnx.load(str(live_akp))), folder / "model.live-akp.required.onnx")


def _engine_rows(build: _Build, key: str, mode: str, src: Path, precision: str) -> list[Row]:
    """The row of one engine (and its ``(fed)`` row for the live-akp engine), or one failed row."""
    try:
        build.log(f"      building {key} engine")
        fp16 = {"fp16_onnx": build.fp16_file} if mode == "static" else {}
        info = build.engine(src, f"{mode}.{precision}.engine", precision, **fp16)
    except Exception as e:  # a build failure is reported as a failed check
        return [Row(key, None, precision, error=f"engine build failed: {e}")]
    run = partial(_runner, info.engine)
    default, moved = build.feeds
    rows = [Row(key, run, precision, default if mode == "live-akp" else {})]
    if mode == "live-akp":
        rows.append(Row(f"{key}(fed)", run, precision, moved, "moved", timed=False))
    return rows


REFIT_FILE = "model.static.refit.onnx"
"""The static file of the model holding the new AKPs, which the refit row's engine is refitted from."""


def _refit_row(build: _Build, key: str, static: Path, moved_model: Any) -> Row:
    """A refittable static engine, refitted from the static file of the new AKPs when its runner is made.

    Through the parser's refitter (``refit_from_onnx``): a BatchNorm after an ACL is
    fused into the convolution, and only the parser's refitter recomputes it.
    """
    from deploy.tensorrt.refit import refit_weights, with_weights

    try:
        info = build.engine(static, "static.refit.engine", refittable=True)
        new_static = with_weights(static, refit_weights(moved_model), build.folder / REFIT_FILE)
    except Exception as e:
        return Row(key, None, error=f"refittable engine build failed: {e}")
    return Row(key, partial(_refitted, info.engine, new_static), reference="moved", timed=False)


def _runner(engine: str) -> Any:
    from deploy.tensorrt.runner import TrtRunner, engine_loader

    return TrtRunner(engine_loader(engine))


def _refitted(engine: str, new_static: Path) -> Any:
    from polygraphy.backend.trt import EngineFromBytes

    from deploy.tensorrt.refit import refit_from_onnx
    from deploy.tensorrt.runner import TrtRunner

    return TrtRunner(lambda: refit_from_onnx(EngineFromBytes(Path(engine).read_bytes())(), new_static))
