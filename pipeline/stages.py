"""The main job as a Python API: ``run(JobConfig) -> report dict``.

Stages: prepare the output folder -> data -> train (or load a checkpoint) ->
checkpoint -> export (static, live, live with AKP inputs) -> parity -> latency ->
report. Everything is written into a staging folder beside ``--out`` and moved into
place only when the whole job succeeded, so a failed or interrupted run leaves no
half-written artifacts and a previous run's files untouched.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import platform
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import acl
from export.atomic import default_mode
from pipeline.errors import UserError

__all__ = ["JobConfig", "OutputFolder", "run"]

DEFAULT_BATCH_SIZES = (1, 8, 64)
_ORT_PROVIDER = {"ort-cpu": "cpu", "ort-cuda": "cuda", "ort-trt": "tensorrt"}  # backend -> deploy.runners.ort_providers
ORT_MODES = ("static", "live", "live-akp")


@dataclass
class JobConfig:
    out: Path = Path("runs/default")
    checkpoint: Path | None = None
    spec: str | None = None  # None: the checkpoint's, or models.DEFAULT_SPEC when training
    arch: str | None = None  # None: the checkpoint's, or "lenet" when training
    epochs: int = 15
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    backends: tuple[str, ...] | None = None  # None: every backend of deploy.backends
    force: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    latency_seconds: float = 1.0  # minimum timed seconds per backend and batch size
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


class OutputFolder:
    """Staging folder beside ``out``; ``commit()`` swaps it in, ``discard()`` removes it.

    Refuses a non-empty ``out`` unless ``force``, and even with ``force`` refuses a
    folder that is not an earlier run of this tool (no ``report.json``), so that a
    mistyped ``--out`` never deletes a user's files.
    """

    MARKER = "report.json"

    def __init__(self, out: Path, force: bool) -> None:
        self.out = Path(out)
        self.force = force
        self.staging: Path | None = None

    def check(self) -> None:
        out = self.out
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder")
        if out.is_dir() and any(out.iterdir()):
            if not self.force:
                raise UserError(f"--out {out} is not empty; pass --force to replace a previous run's outputs")
            if not (out / self.MARKER).is_file():
                raise UserError(
                    f"--out {out} is not empty and holds no {self.MARKER}, so it is not an earlier acl-deploy run; "
                    "refusing to replace it even with --force"
                )
        parent = out.resolve().parent
        probe = parent
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise UserError(f"--out {out}: {probe} is not a folder")
        if not os.access(probe, os.W_OK):
            raise UserError(f"--out {out}: cannot write in {probe}")

    def open(self) -> Path:
        self.check()
        parent = self.out.resolve().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=parent))
            os.chmod(self.staging, default_mode(directory=True))
        except OSError as e:
            raise UserError(f"--out {self.out}: cannot create a folder beside it ({e.strerror})") from None
        return self.staging

    def commit(self) -> Path:
        assert self.staging is not None
        self.check()  # nothing changed under our feet since open()
        backup = None
        if self.out.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.previous-", dir=self.staging.parent))
            backup.rmdir()
            os.replace(self.out, backup)
        try:
            os.replace(self.staging, self.out)
        except OSError:
            if backup is not None:
                os.replace(backup, self.out)
            raise
        self.staging = None
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
        return self.out

    def discard(self) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None


def _versions() -> dict[str, str]:
    out = {}
    for pkg in (
        "torch",
        "numpy",
        "onnx",
        "onnxruntime",
        "onnxscript",
        "onnx-graphsurgeon",
        "polygraphy",
        "scikit-learn",
        "safetensors",
        "tensorrt",
    ):
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _environment(threads: int) -> dict[str, Any]:
    from deploy.backends import cuda_device_present

    gpu, gpu_desc = cuda_device_present()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ort_threads": threads,
        "device": gpu_desc if gpu else "cpu (no CUDA device)",
        "versions": _versions(),
    }


def _param_counts(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    learnable_kernel, equivalent = 0, 0
    for _, layer in acl.acl_layers(model):
        learnable_kernel += sum(p.numel() for n, p in layer.named_parameters() if n != "bias")
        equivalent += layer.weight.numel()
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            learnable_kernel += m.weight.numel()
            equivalent += m.weight.numel()
    return {"total": total, "learnable_kernel": learnable_kernel, "conv_kernel_equivalent": equivalent}


def _perturbed_akps(model: torch.nn.Module, seed: int) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """A copy of ``model`` with every AKP moved (5 % relative noise plus 0.05 absolute), and the new AKPs by ONNX name."""
    g = torch.Generator().manual_seed(seed + 1)
    moved = copy.deepcopy(model).eval()
    feeds = {}
    with torch.no_grad():
        for name, layer in acl.acl_layers(moved):
            for pname, p in layer.akps().items():
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                p.add_(0.05 * p.abs() * noise + 0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
                feeds[f"{name}.{pname}"] = p.detach().float().numpy().copy()
    return moved, feeds


def _akp_feed(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {
        f"{n}.{k}": v.detach().float().numpy() for n, layer in acl.acl_layers(model) for k, v in layer.akps().items()
    }


def _select_backends(requested: tuple[str, ...] | None) -> dict[str, tuple[bool, str]]:
    from deploy.backends import ALL_BACKENDS, availability

    names = requested or ALL_BACKENDS
    unknown = [b for b in names if b not in ALL_BACKENDS]
    if unknown:
        raise UserError(f"unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(ALL_BACKENDS)}")
    if "torch" not in names:
        names = ("torch", *names)  # the reference is always measured
    return {b: availability(b) for b in names}


def run(cfg: JobConfig) -> dict[str, Any] | None:
    """Run the whole job; returns the report (``None`` on non-zero DDP ranks)."""
    from pipeline import checkpoint as ckpt
    from pipeline.data import load_digits_dataset
    from pipeline.models import DEFAULT_SPEC, build
    from pipeline.train import accuracy, distributed_context, train

    if cfg.epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {cfg.epochs}")
    if not cfg.batch_sizes or any(b < 1 for b in cfg.batch_sizes):
        raise UserError(f"--batch-sizes must be positive integers, got {list(cfg.batch_sizes)}")
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    folder = OutputFolder(cfg.out, cfg.force)
    folder.check()
    backends = _select_backends(cfg.backends)
    log = cfg.log

    data = load_digits_dataset(seed=0)
    if cfg.checkpoint is not None:
        log(f"[1/5] loading checkpoint {cfg.checkpoint}")
        model, meta = ckpt.load(cfg.checkpoint, arch=cfg.arch, spec=cfg.spec)
        if int(meta.get("image_size", data.image_size)) != data.image_size:
            raise UserError(
                f"checkpoint {cfg.checkpoint} expects {meta['image_size']}px inputs, the data are {data.image_size}px"
            )
        arch, spec, trained = meta["arch"], meta["spec"], None
    else:
        arch, spec = cfg.arch or "lenet", cfg.spec or DEFAULT_SPEC
        try:
            torch.manual_seed(cfg.seed)
            model = build(arch, None if spec == "none" else spec, num_classes=data.num_classes)
        except ValueError as e:
            raise UserError(str(e)) from None
        ctx = distributed_context()
        if ctx.is_main:
            log(f"[1/5] training {arch} ({spec}) on {data.describe()}")
        trained = train(model, data, epochs=cfg.epochs, seed=cfg.seed, progress=cfg.progress)
        if not ctx.is_main:
            return None
    model.eval()
    acc = accuracy(model, data.x_test, data.y_test)
    log(f"      test accuracy {acc * 100:.2f} %")

    staging = folder.open()
    try:
        report = _export_validate_report(cfg, model, data, arch, spec, trained, acc, backends, threads, staging)
        folder.commit()
    except BaseException:
        folder.discard()
        raise
    log(f"done: {folder.out}/report.md")
    return report


def _export_validate_report(
    cfg, model, data, arch, spec, trained, acc, backends, threads, staging: Path
) -> dict[str, Any]:
    import export
    from deploy.runners import quiet_polygraphy
    from pipeline import checkpoint as ckpt
    from pipeline import report as rep
    from pipeline.validate import tolerance_table

    quiet_polygraphy()
    log = cfg.log
    files: dict[str, str] = {}

    ckpt.save(
        model,
        staging / "model.safetensors",
        {
            "arch": arch,
            "spec": spec,
            "mean": data.mean,
            "std": data.std,
            "image_size": data.image_size,
            "num_classes": data.num_classes,
        },
    )
    files["checkpoint"] = "model.safetensors"

    log("[2/5] exporting ONNX: static, live, live with AKP inputs")
    shape = (1, *data.input_shape)
    paths = {
        "static": export.to_onnx(model, staging / "model.static.onnx", shape, mode="static"),
    }
    has_acl = bool(acl.acl_layers(model))
    if has_acl:
        paths["live"] = export.to_onnx(model, staging / "model.live.onnx", shape, mode="live")
        paths["live-akp"] = export.to_onnx(model, staging / "model.live-akp.onnx", shape, mode="live", akp_inputs=True)
    for mode, p in paths.items():
        files[f"onnx:{mode}"] = p.name

    x_test = data.x_test.numpy()
    log("      TensorRT parser check: " + _trt_check(paths, staging, files, tensorrt_report := {}))

    log(f"[3/5] parity on {len(x_test)} test images")
    rows = _rows(cfg, model, data, paths, backends, threads, staging, log)
    parity = _parity(model, rows, x_test, cfg.seed)
    for key, p in parity.items():
        if p.get("available", True) and "error" not in p:
            verdict = "pass" if p.get("passed") else "FAIL"
            log(f"      {key:28s} max abs {p['max_abs_err']:.2e}  top-1 {p['top1_agreement'] * 100:.2f} %  {verdict}")
        elif "error" in p:
            log(f"      {key:28s} FAIL: {p['error']}")
        else:
            log(f"      {key:28s} not available: {p['reason']}")

    log(f"[4/5] latency at batch sizes {list(cfg.batch_sizes)}")
    latency = _latency(rows, x_test, cfg)
    fp16 = _fp16_report(model, data, paths)
    log("[5/5] report")
    chart = rep.plot_latency(latency, staging / "latency.png")
    if chart:
        files["latency_chart"] = chart.name
    for name, layer in acl.acl_layers(model):
        fname = f"mosaic-{name.replace('.', '_')}.png"
        rep.plot_mosaic(
            name, layer.weight.detach().float().numpy(), layer.spec.kinds(), str(layer.spec), staging / fname
        )
        files[f"mosaic:{name}"] = fname
    files["report_json"] = "report.json"
    files["report_md"] = "report.md"

    report = {
        "schema": rep.SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "arch": arch,
            "spec": spec,
            "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
            "trained": trained is not None,
            "epochs": trained.epochs if trained else None,
            "train_seconds": trained.seconds if trained else None,
            "world_size": trained.world_size if trained else None,
            "parameters": _param_counts(model),
        },
        "data": {
            "name": data.name,
            "train": len(data.x_train),
            "test": len(data.x_test),
            "image_size": data.image_size,
            "mean": data.mean,
            "std": data.std,
        },
        "accuracy": acc,
        "verdict": _verdict(parity),
        "compact_factor": {
            name: {
                "spec": str(layer.spec),
                "value": acl.compact_factor(
                    layer.spec, layer.in_channels, layer.out_channels, layer.kernel_size, groups=layer.groups
                ),
            }
            for name, layer in acl.acl_layers(model)
        },
        "tolerances": tolerance_table(),
        "parity": parity,
        "latency": latency,
        "fp16_range": fp16,
        "tensorrt": tensorrt_report,
        "files": files,
        "environment": _environment(threads),
    }
    rep.write_json(report, staging / "report.json")
    rep.write_markdown(report, staging / "report.md")
    return report


@dataclass
class _Row:
    """One backend and export mode: how to make its runner, what to feed, what to compare to."""

    key: str
    make: Callable[[], Any] | None  # None: not available (reason) or failed to build (error)
    precision: str = "fp32"
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # inputs besides the image, every call
    reference: str = "source"  # "source" model, or "moved": the model holding the fed AKPs
    timed: bool = True
    reason: str | None = None
    error: str | None = None


def _rows(cfg, model, data, paths, backends, threads, staging, log) -> list[_Row]:
    import export
    from deploy.runners import OrtRunner, TorchRunner, ort_providers

    meta_in = {export.INPUT_NAME: (np.float32, [None, *data.input_shape])}
    _, moved_feed = _perturbed_akps(model, cfg.seed)
    default_feed = _akp_feed(model)
    rows = [
        _Row("torch:eager", lambda: TorchRunner(model, meta_in, [export.OUTPUT_NAME]), reference="none"),
        _Row("torch:baked", lambda: TorchRunner(acl.bake(model), meta_in, [export.OUTPUT_NAME]), timed=False),
    ]
    fp16_path = None
    for backend, (ok, reason) in backends.items():
        if backend == "torch":
            continue
        modes = [*paths, "static-fp16"] if backend.startswith("ort") else [*paths, "refit"]
        if backend.startswith("trt"):
            modes = [m for m in modes if backend == "trt" or m in ("static", "live")]
        if not ok:
            rows += [_Row(f"{backend}:{m}", None, reason=reason) for m in modes]
            continue
        if backend.startswith("ort"):
            provider = _ORT_PROVIDER[backend]

            def ort(path, provider=provider, fp16=False):
                cache = staging / "ort-trt-cache" if provider == "tensorrt" else None
                return lambda: OrtRunner(path, ort_providers(provider, cache_dir=cache, fp16=fp16), threads=threads)

            if fp16_path is None:
                from deploy.tensorrt.fp16 import to_fp16_onnx

                fp16_path = staging / "model.static-fp16.onnx"
                to_fp16_onnx(paths["static"], fp16_path)
            for mode, path in [*paths.items(), ("static-fp16", fp16_path)]:
                precision = "fp16" if mode == "static-fp16" else "fp32"
                if provider == "tensorrt" and mode == "static-fp16":
                    # The TensorRT EP's own FP16 switch (trt_fp16_enable) on the FP32 file.
                    runner = ort(paths["static"], fp16=True)
                else:
                    runner = ort(path)
                rows.append(_Row(f"{backend}:{mode}", runner, precision, default_feed if mode == "live-akp" else {}))
            if "live-akp" in paths:
                rows.append(
                    _Row(
                        f"{backend}:live-akp(fed)",
                        ort(paths["live-akp"]),
                        extra=moved_feed,
                        reference="moved",
                        timed=False,
                    )
                )
        else:
            rows += _trt_rows(backend, model, paths, staging, cfg, len(data.x_test), default_feed, moved_feed, log)
    return rows


def _trt_rows(backend, model, paths, staging, cfg, n_test, default_feed, moved_feed, log) -> list[_Row]:
    """Engines for one TensorRT backend; a failed build is a failed row, never a skipped one."""
    import onnx

    from deploy.tensorrt.build import build_engine
    from deploy.tensorrt.refit import refit, refit_weights
    from deploy.tensorrt.runner import TrtRunner, engine_loader
    from export.passes import require_akp_inputs, save

    precision = "fp16" if backend == "trt-fp16" else "fp32"
    folder = staging / "trt"
    folder.mkdir(exist_ok=True)
    batches = [*cfg.batch_sizes, n_test]
    cache = folder / "timing.cache"
    rows = []
    sources = {m: p for m, p in paths.items() if m != "live-akp"}
    if "live-akp" in paths and backend == "trt":
        sources["live-akp"] = save(
            require_akp_inputs(onnx.load(str(paths["live-akp"]))), folder / "model.live-akp.required.onnx"
        )
    for mode, src in sources.items():
        key = f"{backend}:{mode}"
        try:
            log(f"      building {key} engine")
            info = build_engine(
                src, folder / f"{mode}.{precision}.engine", precision=precision, batch_sizes=batches, timing_cache=cache
            )
            rows.append(
                _Row(
                    key,
                    lambda e=info.engine: TrtRunner(engine_loader(e)),
                    precision,
                    default_feed if mode == "live-akp" else {},
                )
            )
            if mode == "live-akp":
                rows.append(
                    _Row(
                        f"{key}(fed)",
                        lambda e=info.engine: TrtRunner(engine_loader(e)),
                        precision,
                        moved_feed,
                        "moved",
                        timed=False,
                    )
                )
        except Exception as e:  # a build failure is reported as a failed check
            rows.append(_Row(key, None, precision, error=f"engine build failed: {e}"))
    if backend == "trt":
        try:
            info = build_engine(
                paths["static"],
                folder / "static.refit.engine",
                batch_sizes=batches,
                timing_cache=cache,
                refittable=True,
            )
            moved, _ = _perturbed_akps(model, cfg.seed)
            weights = refit_weights(moved)

            def refitted(e=info.engine, w=weights):
                from polygraphy.backend.trt import EngineFromBytes

                return TrtRunner(lambda: refit(EngineFromBytes(Path(e).read_bytes())(), w))

            rows.append(_Row(f"{backend}:refit", refitted, reference="moved", timed=False))
        except Exception as e:
            rows.append(_Row(f"{backend}:refit", None, error=f"refittable engine build failed: {e}"))
    return rows


def _parity(model, rows: list[_Row], x_test: np.ndarray, seed: int) -> dict[str, Any]:
    import export
    from pipeline.validate import TOLERANCES, compare_outputs

    moved, _ = _perturbed_akps(model, seed)
    refs = {}
    with torch.inference_mode():
        refs["source"] = model(torch.from_numpy(x_test)).numpy()
        refs["moved"] = moved(torch.from_numpy(x_test)).numpy()
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
        with row.make() as r:
            got = r.infer({export.INPUT_NAME: x_test, **row.extra})[export.OUTPUT_NAME].copy()
        out[row.key] = {
            "precision": row.precision,
            **compare_outputs(refs[row.reference], got, TOLERANCES[row.precision]),
        }
    return {**out, **unavailable}


def _latency(rows: list[_Row], x_test: np.ndarray, cfg) -> dict[str, Any]:
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
        with row.make() as r:
            for b in cfg.batch_sizes:
                feed = {export.INPUT_NAME: batch(b), **row.extra}
                entry = measure_latency(r, feed, min_seconds=cfg.latency_seconds).to_dict()
                if hasattr(r, "gpu_compute_ms"):
                    entry["gpu_compute_p50_ms"] = float(np.median(r.gpu_compute_ms(feed)))
                table[str(b)] = entry
        latency[row.key] = table
    base = latency["torch:eager"]
    for table in latency.values():
        if table.get("available", True):
            for b, entry in table.items():
                entry["speedup_vs_torch"] = base[b]["p50_ms"] / entry["p50_ms"]
    return latency


def _trt_check(paths: dict[str, Path], staging: Path, files: dict[str, str], report: dict[str, Any]) -> str:
    """``check_onnx`` on every file TensorRT would build from; a summary line for the log."""
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
    report["check"] = checks
    report["available"], report["reason"] = available()
    bad = {k: len(v) for k, v in checks.items() if v}
    return "every export passes" if not bad else "; ".join(f"{k}: {n} problem(s)" for k, n in bad.items())


def _fp16_report(model, data, paths) -> dict[str, Any]:
    from deploy.tensorrt.fp16 import fp16_range_report

    layers = [r.to_dict() for r in fp16_range_report(model, data.x_test)]
    return {
        "layers": layers,
        "flagged": {r["name"]: r["flags"] for r in layers if r["flags"]},
        "applies_to": sorted(p.name for p in paths.values()),
    }


def _verdict(parity: dict[str, Any]) -> dict[str, Any]:
    checked = {k: v for k, v in parity.items() if v.get("available", True)}
    failed = [k for k, v in checked.items() if not v.get("passed")]
    return {
        "passed": not failed,
        "checks": len(checked),
        "failed": failed,
        "not_available": [k for k, v in parity.items() if not v.get("available", True)],
    }
