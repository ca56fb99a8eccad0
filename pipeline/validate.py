"""Parity of every backend against the source PyTorch model, and latency.

Tolerances and the comparator: ``export.compare`` (one table for the whole project).

A *row* is one backend and export mode (``backend_rows``): ``torch:eager`` (the
reference), ``torch:baked``, ``ort-<ep>:<static|live|live-akp|static-fp16>``,
``<...>:live-akp(fed)`` (new AKPs fed, compared with the PyTorch model holding
them), ``trt[-fp16]:<static|live|live-akp|refit>`` and ``trt:static-int8``
(``pipeline.trt_rows``), ``openvino:<static|live>``
(FP32, asked for explicitly), ``openvino:static-bf16`` (where the CPU has
native bf16) and, with ``--int8``, ``ort-<ep>:static-int8`` and
``openvino:static-int8`` (the INT8 Q/DQ file, precision ``int8``). A runner that reports the precision it computed in
(``inference_precision``) has it recorded as ``runtime_precision``, and fails
its row when that is not the row's precision. ``run_parity`` and
``run_latency`` run them one at a time; an unavailable row carries its reason, a
row whose engine failed to build carries the error and fails. The FP16 file
(``write_fp16_file``) keeps FP32 whatever exceeds FP16 on the test images, and
``fp16_summary`` analyses it and the TensorRT form (``pipeline.fp16_verdict``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

import acl
from deploy.ep_check import ProviderFallback
from export.compare import TOLERANCES, Tolerance, compare_outputs, tolerance_table
from export.verify import akp_feed, perturbed_akps
from pipeline.rows import Row as _Row
from pipeline.trt_rows import INT8_MODE  # the INT8 Q/DQ file's mode (pipeline.stages.int8)

__all__ = [
    "TOLERANCES",
    "Tolerance",
    "backend_rows",
    "compare_outputs",
    "fp16_summary",
    "perturbed_akps",
    "run_latency",
    "run_parity",
    "tolerance_table",
    "trt_check",
    "write_fp16_file",
]

FP16_FILE = "model.static-fp16.onnx"
INLINED_FILE = "model.live.inlined.onnx"  # the live file for tools that cannot read model-local functions
OPENVINO_BF16 = "static-bf16"  # the bf16 mode: the static file, OpenVINO computing in bfloat16
ORT_PROVIDER = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}  # backend -> deploy.runners.ort_providers


def backend_rows(model, moved, data, paths, backends, threads, staging, batch_sizes, log, int8=None) -> list[_Row]:
    """A row per backend and export mode (unavailable ones carry the reason).

    ``moved`` is ``perturbed_akps(model, seed)``: the model holding the AKPs that the
    ``(fed)`` and ``refit`` rows feed or refit. ``int8``: the INT8 Q/DQ file
    (``ctx.int8_path``), which gets ``ort-*:static-int8`` and ``openvino:static-int8`` rows.
    """
    import export
    from deploy.runners import TorchRunner
    from pipeline.trt_rows import trt_modes, trt_rows

    meta_in = {export.INPUT_NAME: (np.float32, [None, *data.input_shape])}
    moved_model, moved_feed = moved
    default_feed = akp_feed(model)
    rows = [
        _Row("torch:eager", lambda: TorchRunner(model, meta_in, [export.OUTPUT_NAME]), reference="none"),
        _Row("torch:baked", lambda: TorchRunner(acl.bake(model), meta_in, [export.OUTPUT_NAME]), timed=False),
    ]
    fp16_path = None
    for backend, (ok, reason) in backends.items():
        if backend == "torch":
            continue
        modes = [*paths, "static-fp16"] if backend.startswith("ort") else trt_modes(backend, paths, int8)
        if backend == "openvino":
            modes = [*(m for m in paths if m != "live-akp"), OPENVINO_BF16]
        modes += _int8_modes(backend, int8)
        if not ok:
            rows += [_Row(f"{backend}:{m}", None, reason=reason) for m in modes]
            continue
        if backend.startswith("ort"):
            if fp16_path is None:
                fp16_path = write_fp16_file(paths["static"], data.x_test, staging / FP16_FILE, threads)
            rows += _ort_rows(backend, paths, fp16_path, int8, staging, threads, (default_feed, moved_feed))
        elif backend == "openvino":
            rows += _openvino_rows(paths, staging, threads, int8)
        else:
            if backend == "trt-fp16" and fp16_path is None:  # TensorRT 11 builds FP16 from the FP16 file
                fp16_path = write_fp16_file(paths["static"], data.x_test, staging / FP16_FILE, threads)
            batches, feeds = [*batch_sizes, len(data.x_test)], (default_feed, moved_feed)
            rows += trt_rows(
                backend, moved_model, paths, staging, batches, feeds, log, fp16_file=fp16_path, int8_file=int8
            )
    return rows


def _ort_rows(backend, paths, fp16_path, int8, staging, threads, feeds) -> list[_Row]:
    """One ONNX Runtime backend's rows: every file, the FP16 and INT8 files, and the fed live-akp row."""
    from deploy.runners import OrtRunner, ort_providers

    provider = ORT_PROVIDER[backend]
    default_feed, moved_feed = feeds

    def ort(path, fp16=False):
        cache = staging / "ort-trt-cache" if provider == "tensorrt" else None
        return lambda: OrtRunner(path, ort_providers(provider, cache_dir=cache, fp16=fp16), threads=threads)

    rows = []
    for mode, path in [*paths.items(), ("static-fp16", fp16_path)]:
        precision = "fp16" if mode == "static-fp16" else "fp32"
        if provider == "tensorrt" and mode == "static-fp16":
            # The TensorRT EP's own FP16 switch (trt_fp16_enable) on the FP32 file.
            runner = ort(paths["static"], fp16=True)
        else:
            runner = ort(path)
        rows.append(_Row(f"{backend}:{mode}", runner, precision, default_feed if mode == "live-akp" else {}))
    rows += [_Row(f"{backend}:{m}", ort(int8), "int8") for m in _int8_modes(backend, int8)]
    if "live-akp" in paths:
        rows.append(
            _Row(f"{backend}:live-akp(fed)", ort(paths["live-akp"]), extra=moved_feed, reference="moved", timed=False)
        )
    return rows


def _int8_modes(backend: str, int8: Path | None) -> list[str]:
    """ONNX Runtime and OpenVINO run the INT8 Q/DQ file; TensorRT's INT8 rows are built elsewhere."""
    return [INT8_MODE] if int8 is not None and (backend.startswith("ort") or backend == "openvino") else []


def _openvino_rows(paths, staging, threads, int8=None) -> list[_Row]:
    """OpenVINO in FP32 on the static file and on the live file with its ``ai.acl`` functions
    inlined (what it can read); in bf16 on the static file where the CPU computes bf16 natively.

    The live file gets no bf16 row: inlined, its AKPs are constants to OpenVINO,
    so it computes what the static file does.
    """
    from deploy.openvino import OpenVinoRunner, bf16_available
    from export.inline import inline

    rows = [_Row("openvino:static", lambda: OpenVinoRunner(paths["static"], threads=threads))]
    if "live" in paths:
        inlined = inline(paths["live"], staging / INLINED_FILE)
        rows.append(_Row("openvino:live", lambda: OpenVinoRunner(inlined, threads=threads)))
    ok, reason = bf16_available()
    bf16 = partial(OpenVinoRunner, paths["static"], threads=threads, precision="bf16")
    rows.append(_Row(f"openvino:{OPENVINO_BF16}", bf16 if ok else None, "bf16", reason=None if ok else reason))
    if int8 is not None:
        rows.append(
            _Row(f"openvino:{INT8_MODE}", partial(OpenVinoRunner, int8, threads=threads, precision="int8"), "int8")
        )
    return rows


def run_parity(model, moved_model, rows: list[_Row], x_test: np.ndarray) -> dict[str, Any]:
    """Every available row against the source model (or ``moved_model``, which holds the fed AKPs)."""
    import export

    refs = {}
    with torch.inference_mode():
        refs["source"] = model(torch.from_numpy(x_test)).numpy()
        refs["moved"] = moved_model(torch.from_numpy(x_test)).numpy()
    out: dict[str, Any] = {}
    unavailable: dict[str, Any] = {}
    for row in rows:
        if row.reference == "none":
            continue
        if row.reason is not None:
            unavailable[row.key] = {"available": False, "reason": row.reason}
            continue
        if row.error is not None:
            out[row.key] = {"precision": row.precision, "passed": False, "error": row.error}
            continue
        try:
            got, ran = _infer(row, {export.INPUT_NAME: x_test, **row.extra}, export.OUTPUT_NAME)
        except ProviderFallback as e:  # ONNX Runtime would have run another provider: not this row's
            unavailable[row.key] = {"available": False, "reason": str(e)}
            continue
        out[row.key] = _judged(row.precision, ran, compare_outputs(refs[row.reference], got, TOLERANCES[row.precision]))
    return {**out, **unavailable}


def _infer(row: _Row, feed: dict[str, np.ndarray], output: str) -> tuple[np.ndarray, str | None]:
    """The row's output on ``feed`` and the precision its runtime reports computing in (if it does)."""
    with row.make() as r:
        return r.infer(feed)[output].copy(), getattr(r, "inference_precision", None)


def _judged(precision: str, ran: str | None, result: dict[str, Any]) -> dict[str, Any]:
    """A parity entry; a runtime that computed at another precision than the row's fails it.

    Judged at the row's tolerance, a bf16 row that ran in f32 would pass while
    timing f32, and an fp32 row that ran in bf16 is not an FP32 result.
    """
    entry = {"precision": precision, **({"runtime_precision": ran} if ran else {}), **result}
    if ran is not None and ran != precision:
        entry.update(passed=False, error=f"the runtime computed in {ran}, not {precision} as this row requires")
    return entry


def run_latency(rows: list[_Row], x_test: np.ndarray, batch_sizes, seconds: float) -> dict[str, Any]:
    """Latency of every timed row per batch size; GPU compute time where the runner has it."""
    import export
    from deploy.timing import measure_latency

    def batch(b: int) -> np.ndarray:
        reps = int(np.ceil(b / len(x_test)))
        return np.ascontiguousarray(np.concatenate([x_test] * reps)[:b])

    latency: dict[str, Any] = {}
    for row in rows:
        if not row.timed:
            continue
        if row.make is None:
            if row.reason is not None:
                latency[row.key] = {"available": False, "reason": row.reason}
            continue
        table = {}
        try:
            with row.make() as r:
                for b in batch_sizes:
                    feed = {export.INPUT_NAME: batch(b), **row.extra}
                    entry = measure_latency(r, feed, min_seconds=seconds).to_dict()
                    if hasattr(r, "gpu_compute_ms"):
                        entry["gpu_compute_p50_ms"] = float(np.median(r.gpu_compute_ms(feed)))
                    table[str(b)] = entry
        except ProviderFallback as e:  # never time another provider under this row's name
            table = {"available": False, "reason": str(e)}
        latency[row.key] = table
    base = latency["torch:eager"]
    for table in latency.values():
        if table.get("available", True):
            for b, entry in table.items():
                entry["speedup_vs_torch"] = base[b]["p50_ms"] / entry["p50_ms"]
    return latency


def trt_check(paths: dict[str, Path]) -> dict[str, Any]:
    """``check_onnx`` on every file TensorRT would build from, and TensorRT's availability."""
    import onnx

    from deploy.tensorrt import available, check_onnx
    from export.passes import require_akp_inputs

    checks = {}
    for mode, path in paths.items():
        if mode == "live-akp":
            # TensorRT imports an input that has an initializer as a constant, so its
            # engines are built from a variant whose AKPs are required inputs.
            checks[f"{path.name} (AKPs as required inputs, as built for TensorRT)"] = check_onnx(
                require_akp_inputs(onnx.load(str(path)))
            )
        else:
            checks[path.name] = check_onnx(path)
    ok, reason = available()
    return {"check": checks, "available": ok, "reason": reason}


def write_fp16_file(static: Path, x_test, dst: Path, threads: int | None = None) -> Path:
    """The FP16 file: nodes whose weights or outputs on the test images exceed FP16 kept FP32, never clipped."""
    from deploy.fp16 import to_fp16_onnx
    from deploy.fp16_range import overflow_plan

    to_fp16_onnx(static, dst, keep_fp32=overflow_plan(static, np.asarray(x_test), threads=threads))
    return dst


def fp16_summary(paths, inputs, fp16_file: Path | None, parity=None, threads: int | None = None) -> dict[str, Any]:
    """The FP16 range report of the files as each runtime runs them, and what each FP16 row computed.

    ``fp16_file``: the FP16 file made from ``paths["static"]`` (its kept-FP32 nodes
    describe the FP16 form); when it was not written, the nodes it would keep.
    """
    from deploy.fp16_range import fp16_range_report
    from pipeline.fp16_verdict import checks

    x = np.asarray(inputs, dtype=np.float32)
    written = fp16_file if fp16_file is not None and Path(fp16_file).exists() else None
    out = fp16_range_report(paths["static"], x, fp16=written, threads=threads).to_dict()
    out["file"] = written.name if written else None
    out["applies_to"] = {
        "onnx-fp16": [written.name] if written else [],
        "tensorrt": sorted(p.name for m, p in paths.items() if m != "live-akp"),
    }
    out["flagged"] = {
        r["name"]: {form: f["flags"] for form, f in r["forms"].items() if f["flags"]}
        for r in out["layers"]
        if any(f["flags"] for f in r["forms"].values())
    }
    out["computed"] = _fp16_computed(parity or {}, written, x[:2], threads)
    out["checks"] = checks(out)
    return out


def _fp16_computed(parity, fp16_file: Path | None, x: np.ndarray, threads) -> dict[str, Any]:
    """Per FP16 row that ran: the kernels ONNX Runtime ran in FP16 and in FP32 (None: not visible here)."""
    import export
    from deploy.fp16_computed import computed_precision
    from deploy.runners import ort_providers
    from pipeline.fp16_verdict import form_of

    out: dict[str, Any] = {}
    for key, row in parity.items():
        if form_of(key) is None or not row.get("available", True):
            continue
        backend = key.partition(":")[0]
        out[key] = None  # TensorRT picks its kernels inside the engine; its profile is not read here
        if backend in ("ort-cpu", "ort-cuda") and fp16_file is not None:
            try:
                out[key] = computed_precision(
                    fp16_file, ort_providers(ORT_PROVIDER[backend]), {export.INPUT_NAME: x}, threads=threads
                )
            except Exception:  # a session that cannot be made: its parity row says why
                pass
    return out
