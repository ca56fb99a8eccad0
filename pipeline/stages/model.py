"""The source model: trained here (resumable, DDP) unless it came from a checkpoint; then its test accuracy.

Starts from the ``inputs`` stage's model and data. Fills ``ctx.trained``,
``ctx.initial`` (kernels before training, for the mosaics) and ``ctx.store`` (the
resume state, cleared by the runner after the commit); leaves ``ctx.model`` in eval
mode. Report keys: ``model`` (with ``skipped_layers``: the convolutions left plain,
also logged), ``data``, ``accuracy``, ``compact_factor``.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "model"
TITLE = "source model"
EVERY_RANK = True  # DDP training runs on every process


def check(cfg: JobConfig) -> None:
    """Training options that cannot work, before the data are loaded."""
    from pipeline.early_checks import compiler_problem
    from pipeline.train import check_options, resolve_amp, training_device

    try:
        check_options(batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, workers=cfg.workers, amp=cfg.amp)
        resolve_amp(cfg.amp, training_device())
    except ValueError as e:
        raise UserError(str(e)) from None
    found = compiler_problem(cfg.compile_generator)
    if found:
        raise UserError(found)


def run(ctx: RunContext) -> StageResult:
    from pipeline.data import BadImage
    from pipeline.train import evaluate

    if ctx.cfg.checkpoint is not None:
        ctx.log(f"      loaded checkpoint {ctx.cfg.checkpoint}")
        _log_skipped(ctx)
    else:
        _train(ctx)
        if not ctx.is_main:
            return StageResult()
    ctx.model.eval()
    try:
        acc = evaluate(ctx.model, ctx.data, workers=ctx.cfg.workers)
    except BadImage as e:
        raise UserError(str(e)) from None
    ctx.log(f"      test accuracy {acc * 100:.2f} % ({ctx.data.test_size} images)")
    return StageResult(sections=_sections(ctx, acc))


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.model_section(report) if "model" in report else []


def _train(ctx: RunContext) -> None:
    from pipeline import interpretability
    from pipeline import train as T
    from pipeline.data import BadImage

    cfg, dist = ctx.cfg, T.distributed_context()
    ctx.is_main = dist.is_main
    if dist.is_main:
        ctx.log(f"      training {ctx.arch} ({ctx.spec}) on {ctx.data.describe()}")
        _log_skipped(ctx)
    ctx.initial = interpretability.initial_kernels(ctx.model)  # for the report's before/after mosaics
    ctx.store = _resume_store(ctx, T.resolve_amp(cfg.amp, T.training_device()), dist)
    try:
        ctx.trained = T.train(
            ctx.model,
            ctx.data,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=cfg.seed,
            progress=cfg.progress,
            optimizer=cfg.optimizer,
            workers=cfg.workers,
            amp=cfg.amp,
            compile_generator=cfg.compile_generator,
            resume=ctx.store,
            log=ctx.log,
        )
    except (BadImage, T.TrainingDiverged) as e:  # a file decoded in a worker; a NaN loss (the epoch named)
        raise UserError(str(e)) from None


def _log_skipped(ctx: RunContext) -> None:
    """Name the convolutions ``--layers all``/``first`` left plain (1-pixel-wide kernels), before training starts."""
    from pipeline.archs import skipped_layers

    line = rep.skipped_layers_line(skipped_layers(ctx.model, ctx.spec, layers=ctx.layers))
    if line:
        ctx.log(f"      {line}")


def _resume_store(ctx: RunContext, amp, dist):
    """Where training state is kept between epochs; keyed by everything that shapes the trajectory.

    Not by ``--compile-generator``: it changes how the kernels are computed, not what they are (equal to float
    rounding), so a run interrupted with it continues without it, and the other way round.
    """
    import torch

    from pipeline.resume import ResumeStore, tensor_digest
    from pipeline.train import DEFAULT_LR

    cfg, data = ctx.cfg, ctx.data
    config = {
        "arch": ctx.arch,
        "spec": ctx.spec,
        "layers": ctx.layers,
        # The initial parameters cover the seed's initialisation, --init-from and any model change.
        "initial_parameters": tensor_digest(
            {k: v for k, v in ctx.model.state_dict().items() if isinstance(v, torch.Tensor)}
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
        "world_size": dist.world_size,
        # only when fixing: keys of earlier runs' states stay as they were
        **({"fix_spatial": cfg.fix_spatial} if cfg.fix_spatial != "none" else {}),
    }
    quiet = lambda msg: None  # noqa: E731 - one rank speaks
    return ResumeStore.beside(cfg.out, config, reuse=cfg.resume, log=cfg.log if dist.is_main else quiet)


def _sections(ctx: RunContext, acc: float) -> dict[str, Any]:
    import acl
    from pipeline import archs

    cfg, data, trained = ctx.cfg, ctx.data, ctx.trained
    model = {
        "arch": ctx.arch,
        "spec": ctx.spec,
        "layers": ctx.layers,
        "skipped_layers": archs.skipped_layers(ctx.model, ctx.spec, layers=ctx.layers),
        "in_channels": data.input_shape[0],
        "init_from": str(cfg.init_from) if cfg.init_from else None,
        "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else None,
        "trained": trained is not None,
        "epochs": trained.epochs if trained else None,
        "train_seconds": trained.seconds if trained else None,
        "world_size": trained.world_size if trained else None,
        "training": _training(trained),
        "parameters": param_counts(ctx.model),
    }
    return {
        "model": model,
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
        "compact_factor": {
            name: {
                "spec": str(layer.spec),
                "value": acl.compact_factor(
                    layer.spec, layer.in_channels, layer.out_channels, layer.kernel_size, groups=layer.groups
                ),
            }
            for name, layer in acl.acl_layers(ctx.model)
        },
    }


def _training(trained) -> dict[str, Any] | None:
    if trained is None:
        return None
    keys = ("optimizer", "lr", "batch_size", "amp", "workers", "device", "compile_generator", "resumed_from")
    return {k: getattr(trained, k) for k in keys} | {"images_per_second": round(trained.images_per_second, 1)}


def param_counts(model) -> dict[str, int]:
    import torch

    import acl

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
