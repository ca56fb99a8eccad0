"""The main job as a Python API: ``run(JobConfig) -> report dict``.

Stages: prepare the output folder -> data -> train (or load a checkpoint) ->
checkpoint -> export (static, live, live with AKP inputs) -> parity -> latency ->
report. Everything is written into a staging folder beside ``--out`` and moved into
place only when the whole job succeeded, so a failed or interrupted run leaves no
half-written artifacts and a previous run's files untouched.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
from importlib import metadata as _md
from pathlib import Path
from typing import Any

import torch

import acl
from pipeline import interpretability
from pipeline.errors import UserError
from pipeline.output_folder import OutputFolder, signals_deferred
from pipeline.stages.base import DEFAULT_BATCH_SIZES, JobConfig

__all__ = ["DEFAULT_BATCH_SIZES", "JobConfig", "OutputFolder", "run"]

MAX_MOSAICS = 8
"""Mosaic charts per run: the first ACLs in module order (a DenseNet-121 has 120)."""
MAX_MOSAIC_KERNELS = 4096
"""Larger layers get no chart: one tile per kernel, so a 512x512 layer would be a 30000-pixel-square image."""


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
    """How AnalyticConv2d computes its kernels: one path everywhere since issue #10."""
    return "torch, eager autograd (acl.kernels)"


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
    """Run the whole job; returns the report (``None`` on non-zero DDP ranks).

    The output folder's lock is held from the start, so a second run into the same
    ``--out`` fails at once; taking it also cleans up after killed runs.
    """
    folder = OutputFolder(cfg.out, cfg.force, log=cfg.log)
    # Under torchrun only rank 0 writes --out, so only rank 0 takes the lock.
    held = folder.locked() if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with held:
        return _run(cfg, folder)


def _run(cfg: JobConfig, folder: OutputFolder) -> dict[str, Any] | None:
    from pipeline import archs
    from pipeline import checkpoint as ckpt
    from pipeline.data import BadImage, load_dataset
    from pipeline.train import (
        TrainingDiverged,
        check_options,
        distributed_context,
        evaluate,
        resolve_amp,
        train,
        training_device,
    )

    if cfg.epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {cfg.epochs}")
    if not cfg.batch_sizes or any(b < 1 for b in cfg.batch_sizes):
        raise UserError(f"--batch-sizes must be positive integers, got {list(cfg.batch_sizes)}")
    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    folder.check()
    if cfg.triton_repo is not None:  # before training, so that a refused folder costs nothing
        from pipeline import serving

        serving.check_repo_dir(cfg.triton_repo, cfg.out, cfg.force)
    backends = _select_backends(cfg.backends)
    log = cfg.log
    _check_model_options(cfg)
    try:  # before the data: bad training options are reported at once
        check_options(batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, workers=cfg.workers, amp=cfg.amp)
        amp = resolve_amp(cfg.amp, training_device())
    except ValueError as e:
        raise UserError(str(e)) from None
    store = None

    def data_for(norm: tuple[tuple[float, ...], tuple[float, ...]] | None):
        try:
            return load_dataset(cfg.data, norm=norm)
        except (ValueError, OSError) as e:
            raise UserError(str(e)) from None

    if cfg.checkpoint is not None:
        log(f"[1/5] loading checkpoint {cfg.checkpoint}")
        model, meta = ckpt.load(cfg.checkpoint, arch=cfg.arch, spec=cfg.spec, model=cfg.model, layers=cfg.layers)
        # The inputs are standardised as the model was trained.
        data = data_for(ckpt.norm(meta))
        if int(meta.get("image_size", data.image_size)) != data.image_size:
            raise UserError(
                f"checkpoint {cfg.checkpoint} expects {meta['image_size']}px inputs, the data are {data.image_size}px"
            )
        if int(meta["in_channels"]) != data.input_shape[0]:
            raise UserError(
                f"checkpoint {cfg.checkpoint} expects {meta['in_channels']}-channel inputs, "
                f"the data have {data.input_shape[0]}"
            )
        arch, spec, layers, trained = meta.get("model") or meta["arch"], meta["spec"], meta["convert_layers"], None
        initial = None  # a loaded model's initial kernels are unknown
        _check_io(model, data, arch)
    else:
        arch, spec = cfg.model or cfg.arch or "lenet", cfg.spec or archs.DEFAULT_SPEC
        try:  # before the data: an unknown arch, a failing import or a malformed spec are reported at once
            archs.resolve(arch)
            archs.check_spec(spec)
            layers = _layers_text(archs.parse_layers(cfg.layers or "all"))
        except ValueError as e:
            raise UserError(str(e)) from None
        init = ckpt.read_init(cfg.init_from, arch=arch) if cfg.init_from is not None else None
        data = data_for(None)
        try:  # the input channels come from the data (digits and MNIST are grey, CIFAR is RGB)
            torch.manual_seed(cfg.seed)
            model = archs.create(arch, in_channels=data.input_shape[0], num_classes=data.num_classes)
            if init is not None:
                ckpt.apply_init(model, init, path=cfg.init_from, arch=arch)
            model = archs.convert(model, spec, layers=layers)
        except ValueError as e:
            raise UserError(str(e)) from None
        _check_io(model, data, arch)
        ctx = distributed_context()
        if ctx.is_main:
            log(f"[1/5] training {arch} ({spec}) on {data.describe()}")
        initial = interpretability.initial_kernels(model)  # for the report's before/after mosaics
        store = _resume_store(cfg, arch, spec, layers, data, model, amp, ctx)
        try:
            trained = train(
                model,
                data,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                seed=cfg.seed,
                progress=cfg.progress,
                optimizer=cfg.optimizer,
                workers=cfg.workers,
                amp=cfg.amp,
                resume=store,
                log=log,
            )
        except (BadImage, TrainingDiverged) as e:  # a file decoded in a worker; a NaN loss (the epoch named)
            raise UserError(str(e)) from None
        if not ctx.is_main:
            return None
    model.eval()
    try:
        acc = evaluate(model, data, workers=cfg.workers)
    except BadImage as e:
        raise UserError(str(e)) from None
    log(f"      test accuracy {acc * 100:.2f} % ({data.test_size} images)")

    staging = folder.open()
    try:
        report = _export_validate_report(
            cfg, model, data, arch, spec, trained, acc, backends, threads, staging, layers=layers, initial=initial
        )
        with signals_deferred():  # a signal waits until the outputs are in place and their resume state is gone
            folder.commit()
            if store is not None:
                store.clear()
            log(f"done: {folder.out}/report.md")
    except BaseException:
        folder.discard()
        raise
    return report


def _resume_store(cfg: JobConfig, arch, spec, layers, data, model, amp, ctx):
    """Where training state is kept between epochs; keyed by everything that shapes the trajectory."""
    from pipeline.resume import ResumeStore, tensor_digest
    from pipeline.train import DEFAULT_LR

    config = {
        "arch": arch,
        "spec": spec,
        "layers": layers,
        # The initial parameters cover the seed's initialisation, --init-from and any model change.
        "initial_parameters": tensor_digest(
            {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        ),
        "data": data.name,
        "train_images": data.train_size,
        "image_size": data.image_size,
        "mean": list(data.mean),
        "std": list(data.std),
        "seed": cfg.seed,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "optimizer": cfg.optimizer,
        "lr": cfg.lr if cfg.lr is not None else DEFAULT_LR[cfg.optimizer],
        "amp": str(amp).replace("torch.", "") if amp is not None else "off",
        "world_size": ctx.world_size,
    }
    quiet = lambda msg: None  # noqa: E731 - one rank speaks
    return ResumeStore.beside(cfg.out, config, reuse=cfg.resume, log=cfg.log if ctx.is_main else quiet)


def _check_model_options(cfg: JobConfig) -> None:
    """Combinations of --arch/--model/--init-from/--checkpoint that cannot work, before anything slow."""
    from pipeline import archs

    if cfg.arch is not None and cfg.model is not None:
        raise UserError(f"pass --arch or --model, not both (got --arch {cfg.arch} and --model {cfg.model})")
    if cfg.arch is not None and archs.is_user_model(cfg.arch):
        raise UserError(
            f"--arch {cfg.arch} names your own code; pass it as --model {cfg.arch} (which imports and runs it)"
        )
    if cfg.model is not None and not archs.is_user_model(cfg.model):
        raise UserError(
            f"--model {cfg.model!r} is not 'package.module:factory'; expected your own factory, "
            "or a built-in name or torchvision:<name> as --arch"
        )
    if cfg.init_from is not None and cfg.checkpoint is not None:
        raise UserError(
            "--init-from (start training from a plain checkpoint) and --checkpoint (skip training) were both given, "
            "expected one of them"
        )


def _layers_text(layers: str | tuple[str, ...]) -> str:
    return layers if isinstance(layers, str) else ",".join(layers)


def _check_io(model: torch.nn.Module, data, arch: str) -> None:
    """One eval forward of a zero image: the model must take the data's images and give one logit per class.

    Catches, before training, a user factory that ignores ``in_channels`` or
    ``num_classes``, or an architecture whose pooling the image size cannot feed.
    """
    shape = (1, *data.input_shape)
    expected = (1, data.num_classes)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(shape))
    except Exception as e:  # any failure of the (possibly user's) forward means the same thing here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"{arch} cannot run on the data's images: input {shape} raised {type(e).__name__}: {first}; "
            f"expected a model for {data.input_shape[0]}-channel {data.input_shape[1]}x{data.input_shape[2]} images"
        ) from None
    finally:
        model.train(was_training)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != expected:
        raise UserError(
            f"{arch} maps an input {shape} to {got}; expected logits of shape {expected} "
            f"({data.num_classes} classes in {data.name})"
        )


def _export_validate_report(
    cfg,
    model,
    data,
    arch,
    spec,
    trained,
    acc,
    backends,
    threads,
    staging: Path,
    *,
    layers: str = "all",
    initial: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    import export
    from deploy.runners import quiet_polygraphy
    from pipeline import archs, serving
    from pipeline import checkpoint as ckpt
    from pipeline import report as rep
    from pipeline.validate import (
        FP16_FILE,
        INLINED_FILE,
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
    if cfg.triton_repo is not None:  # again after training: the folder may have changed meanwhile
        serving.check_repo_dir(cfg.triton_repo, cfg.out, cfg.force)

    ckpt.save(
        model,
        staging / "model.safetensors",
        {
            # A --model factory is recorded under its own key: loading needs --model again (checkpoint.load).
            ("model" if archs.is_user_model(arch) else "arch"): arch,
            "spec": spec,
            "convert_layers": layers,
            "in_channels": data.input_shape[0],
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
    # One trace for all three files; each is verified in ONNX Runtime before it is written.
    kinds = export.KINDS if acl.acl_layers(model) else ("static",)
    paths = export.export_files(model, {k: staging / f"model.{k}.onnx" for k in kinds}, shape)
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
    if (staging / INLINED_FILE).exists():
        files["onnx:live-inlined"] = INLINED_FILE
    parity = run_parity(model, moved[0], rows, x_test)
    for line in rep.parity_lines(parity):
        log(f"      {line}")

    log(f"[4/5] latency at batch sizes {list(cfg.batch_sizes)}")
    latency = run_latency(rows, x_test, cfg.batch_sizes, cfg.latency_seconds)
    fp16 = fp16_summary(model, data.x_test, paths)
    log("[5/5] report")
    chart = rep.plot_latency(latency, staging / "latency.png")
    if chart:
        files["latency_chart"] = chart.name
    charted = [(n, layer) for n, layer in acl.acl_layers(model) if layer.spec.total <= MAX_MOSAIC_KERNELS]
    skipped = len(acl.acl_layers(model)) - len(charted[:MAX_MOSAICS])
    if skipped:
        log(
            f"      kernel mosaics for the first {len(charted[:MAX_MOSAICS])} ACLs of at most "
            f"{MAX_MOSAIC_KERNELS} kernels; {skipped} not charted"
        )
    for name, layer in charted[:MAX_MOSAICS]:
        fname = f"mosaic-{name.replace('.', '_')}.png"
        rep.plot_mosaic(
            name, layer.weight.detach().float().numpy(), layer.spec.kinds(), str(layer.spec), staging / fname
        )
        files[f"mosaic:{name}"] = fname
    inside = interpretability.measure(
        model, torch.from_numpy(x_test), initial, staging, mosaic_layers=[n for n, _ in charted[:MAX_MOSAICS]]
    )
    for name, entry in inside["layers"].items():
        if "initial_mosaic" in entry:
            files[f"mosaic-initial:{name}"] = entry["initial_mosaic"]
    # The replay data holds a few test images and the source model's answer for them.
    onnx_files = {**paths, **({"static-fp16": staging / FP16_FILE} if (staging / FP16_FILE).exists() else {})}
    n_replay = min(serving.TEST_DATA_IMAGES, len(x_test))
    with torch.inference_mode():
        expected = model(torch.from_numpy(x_test[:n_replay])).numpy()
    replay = serving.replay(onnx_files, staging, x_test[:n_replay], expected, cfg.batch_sizes)
    failed_replays = [f for f, r in replay["files"].items() if not r["check"]["passed"]]
    log(f"      test_data_set_0 replayed: {'; '.join(failed_replays) + ' DIFFER' if failed_replays else 'every file'}")
    td = replay["test_data"]
    files["test_data"] = "test_data_set_0"
    files["polygraphy_inputs"] = td["polygraphy_inputs"]
    files["polygraphy_outputs"] = td["polygraphy_outputs"]
    for name, rel in td["trtexec_inputs"].items():
        files[f"trtexec_input:{name}"] = rel

    triton = serve = None
    if cfg.triton_repo is not None or cfg.serve_test:
        info, where, triton = serving.write_triton(
            cfg.triton_repo, out=cfg.out, staging=staging, paths=paths, latency=latency, force=cfg.force, log=log
        )
        if where.is_relative_to(staging):
            files["triton_repo"] = str(where.relative_to(staging))
        try:
            if cfg.serve_test:
                with torch.inference_mode():
                    reference = model(torch.from_numpy(x_test)).numpy()
                serve = serving.serve_test(where, info, x_test, reference, log=log)
                if "parity" in serve:  # the server's answers count in the verdict like any backend's
                    parity["triton-python:static"] = serve["parity"]
        finally:
            if cfg.triton_repo is None:
                serving.remove_temporary(where)
    files["report_json"] = "report.json"
    files["report_md"] = "report.md"

    report = {
        "schema": rep.SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "arch": arch,
            "spec": spec,
            "layers": layers,
            "in_channels": data.input_shape[0],
            "init_from": str(cfg.init_from) if cfg.init_from else None,
            "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
            "trained": trained is not None,
            "epochs": trained.epochs if trained else None,
            "train_seconds": trained.seconds if trained else None,
            "world_size": trained.world_size if trained else None,
            "training": (
                {
                    k: getattr(trained, k)
                    for k in ("optimizer", "lr", "batch_size", "amp", "workers", "device", "resumed_from")
                }
                | {"images_per_second": round(trained.images_per_second, 1)}
                if trained
                else None
            ),
            "parameters": _param_counts(model),
        },
        "data": {
            "name": data.name,
            "train": data.train_size,
            "test": data.test_size,
            "parity_images": len(data.x_test),
            "channels": data.channels,
            "num_classes": data.num_classes,
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
        "interpretability": inside,
        "tensorrt": tensorrt_report,
        "replay": replay,
        "triton": triton,
        "serving": serve,
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
