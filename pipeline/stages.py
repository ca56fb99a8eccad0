"""The main job as a Python API: ``run(JobConfig) -> report dict``.

Stages: prepare the output folder -> data -> train (or load a checkpoint) ->
checkpoint -> export (static, live, live with AKP inputs) -> parity -> latency ->
report. Everything is written into a staging folder beside ``--out`` and moved into
place only when the whole job succeeded, so a failed or interrupted run leaves no
half-written artifacts and a previous run's files untouched.
"""

from __future__ import annotations

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

import torch

import acl
from export.atomic import default_mode
from pipeline.errors import UserError

__all__ = ["JobConfig", "OutputFolder", "run"]

DEFAULT_BATCH_SIZES = (1, 8, 64)


@dataclass
class JobConfig:
    out: Path = Path("runs/default")
    checkpoint: Path | None = None
    spec: str | None = None  # None: the checkpoint's, or models.DEFAULT_SPEC when training
    data: str = "digits"  # or "mnist:DIR"
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
        "kernel_generator_cpu": _kernel_generator(),
        "versions": _versions(),
    }


def _kernel_generator() -> str:
    """How AnalyticConv2d computes its kernels on CPU in this environment (acl.kernels, "Execution")."""
    from acl import native

    status = native.status()
    return "compiled C kernels (acl/native)" if status == "loaded" else f"NumPy (compiled kernels {status})"


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
    from pipeline.data import load_dataset
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

    def data_for(norm: tuple[float, float] | None):
        try:
            return load_dataset(cfg.data, norm=norm)
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from None

    if cfg.checkpoint is not None:
        log(f"[1/5] loading checkpoint {cfg.checkpoint}")
        model, meta = ckpt.load(cfg.checkpoint, arch=cfg.arch, spec=cfg.spec)
        # The inputs are standardised as the model was trained.
        norm = (float(meta["mean"]), float(meta["std"])) if "mean" in meta and "std" in meta else None
        data = data_for(norm)
        if int(meta.get("image_size", data.image_size)) != data.image_size:
            raise UserError(
                f"checkpoint {cfg.checkpoint} expects {meta['image_size']}px inputs, the data are {data.image_size}px"
            )
        arch, spec, trained = meta["arch"], meta["spec"], None
    else:
        arch, spec = cfg.arch or "lenet", cfg.spec or DEFAULT_SPEC
        try:  # before the data: a bad spec is reported at once
            torch.manual_seed(cfg.seed)
            model = build(arch, None if spec == "none" else spec, num_classes=10)
        except ValueError as e:
            raise UserError(str(e)) from None
        data = data_for(None)
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
    from pipeline.validate import (
        FP16_FILE,
        backend_rows,
        fp16_summary,
        perturbed_akps,
        run_latency,
        run_parity,
        tolerance_table,
        trt_check,
    )

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
            "data": data.name,
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
    tensorrt_report = trt_check(paths)
    bad = {k: len(v) for k, v in tensorrt_report["check"].items() if v}
    summary = "; ".join(f"{k}: {n} problem(s)" for k, n in bad.items()) or "every export passes"
    log(f"      TensorRT parser check: {summary}")

    log(f"[3/5] parity on {len(x_test)} test images")
    moved = perturbed_akps(model, cfg.seed)  # one copy serves every (fed) and refit row
    rows = backend_rows(model, moved, data, paths, backends, threads, staging, cfg.batch_sizes, log)
    if (staging / FP16_FILE).exists():
        files["onnx:static-fp16"] = FP16_FILE
    parity = run_parity(model, moved[0], rows, x_test)
    for key, p in parity.items():
        if p.get("available", True) and "error" not in p:
            verdict = "pass" if p.get("passed") else "FAIL"
            log(f"      {key:28s} max abs {p['max_abs_err']:.2e}  top-1 {p['top1_agreement'] * 100:.2f} %  {verdict}")
        elif "error" in p:
            log(f"      {key:28s} FAIL: {p['error']}")
        else:
            log(f"      {key:28s} not available: {p['reason']}")

    log(f"[4/5] latency at batch sizes {list(cfg.batch_sizes)}")
    latency = run_latency(rows, x_test, cfg.batch_sizes, cfg.latency_seconds)
    fp16 = fp16_summary(model, data.x_test, paths)
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


def _verdict(parity: dict[str, Any]) -> dict[str, Any]:
    checked = {k: v for k, v in parity.items() if v.get("available", True)}
    failed = [k for k, v in checked.items() if not v.get("passed")]
    return {
        "passed": not failed,
        "checks": len(checked),
        "failed": failed,
        "not_available": [k for k, v in parity.items() if not v.get("available", True)],
    }
