"""The source model: load a checkpoint, or build and train one (resumable, DDP); then its test accuracy.

Fills ``ctx.model`` (eval mode), ``ctx.data``, ``ctx.arch``, ``ctx.spec``,
``ctx.layers``, ``ctx.trained``, ``ctx.initial`` (kernels before training, for the
mosaics) and ``ctx.store`` (the resume state, cleared by the runner after commit).
Report keys: ``model``, ``data``, ``accuracy``, ``compact_factor``.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "model"
TITLE = "model: load or train, then evaluate"
EVERY_RANK = True  # DDP training runs on every process


def check(cfg: JobConfig) -> None:
    """Model and training options that cannot work, before the data are loaded."""
    from pipeline.train import check_options, resolve_amp, training_device

    _check_model_options(cfg)
    try:
        check_options(batch_size=cfg.batch_size, lr=cfg.lr, optimizer=cfg.optimizer, workers=cfg.workers, amp=cfg.amp)
        resolve_amp(cfg.amp, training_device())
    except ValueError as e:
        raise UserError(str(e)) from None


def run(ctx: RunContext) -> StageResult:
    from pipeline.data import BadImage
    from pipeline.train import evaluate

    if ctx.cfg.checkpoint is not None:
        _load(ctx)
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


def _data_for(cfg: JobConfig, norm: tuple[tuple[float, ...], tuple[float, ...]] | None):
    from pipeline.data import load_dataset

    try:
        return load_dataset(cfg.data, norm=norm)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None


def _load(ctx: RunContext) -> None:
    from pipeline import checkpoint as ckpt

    cfg = ctx.cfg
    ctx.log(f"      loading checkpoint {cfg.checkpoint}")
    model, meta = ckpt.load(cfg.checkpoint, arch=cfg.arch, spec=cfg.spec, model=cfg.model, layers=cfg.layers)
    data = _data_for(cfg, ckpt.norm(meta))  # the inputs are standardised as the model was trained
    if int(meta.get("image_size", data.image_size)) != data.image_size:
        raise UserError(
            f"checkpoint {cfg.checkpoint} expects {meta['image_size']}px inputs, the data are {data.image_size}px"
        )
    if int(meta["in_channels"]) != data.input_shape[0]:
        raise UserError(
            f"checkpoint {cfg.checkpoint} expects {meta['in_channels']}-channel inputs, "
            f"the data have {data.input_shape[0]}"
        )
    ctx.arch, ctx.spec, ctx.layers = meta.get("model") or meta["arch"], meta["spec"], meta["convert_layers"]
    ctx.model, ctx.data, ctx.trained, ctx.initial = model, data, None, None  # a loaded model's initial kernels: unknown
    check_io(model, data, ctx.arch)


def _build(ctx: RunContext) -> None:
    """The arch, converted to ACLs per the spec, for the data's channels and classes (``--init-from`` first)."""
    import torch

    from pipeline import archs
    from pipeline import checkpoint as ckpt

    cfg = ctx.cfg
    arch, spec = cfg.model or cfg.arch or "lenet", cfg.spec or archs.DEFAULT_SPEC
    try:  # before the data: an unknown arch, a failing import or a malformed spec are reported at once
        archs.resolve(arch)
        archs.check_spec(spec)
        layers = _layers_text(archs.parse_layers(cfg.layers or "all"))
    except ValueError as e:
        raise UserError(str(e)) from None
    init = ckpt.read_init(cfg.init_from, arch=arch) if cfg.init_from is not None else None
    data = _data_for(cfg, None)
    try:  # the input channels come from the data (digits and MNIST are grey, CIFAR is RGB)
        torch.manual_seed(cfg.seed)
        model = archs.create(arch, in_channels=data.input_shape[0], num_classes=data.num_classes)
        if init is not None:
            ckpt.apply_init(model, init, path=cfg.init_from, arch=arch)
        model = archs.convert(model, spec, layers=layers)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_io(model, data, arch)
    ctx.model, ctx.data, ctx.arch, ctx.spec, ctx.layers = model, data, arch, spec, layers


def _train(ctx: RunContext) -> None:
    from pipeline import interpretability
    from pipeline import train as T
    from pipeline.data import BadImage

    _build(ctx)
    cfg, dist = ctx.cfg, T.distributed_context()
    ctx.is_main = dist.is_main
    if dist.is_main:
        ctx.log(f"      training {ctx.arch} ({ctx.spec}) on {ctx.data.describe()}")
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
            resume=ctx.store,
            log=ctx.log,
        )
    except (BadImage, T.TrainingDiverged) as e:  # a file decoded in a worker; a NaN loss (the epoch named)
        raise UserError(str(e)) from None


def _resume_store(ctx: RunContext, amp, dist):
    """Where training state is kept between epochs; keyed by everything that shapes the trajectory."""
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
    }
    quiet = lambda msg: None  # noqa: E731 - one rank speaks
    return ResumeStore.beside(cfg.out, config, reuse=cfg.resume, log=cfg.log if dist.is_main else quiet)


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


def check_io(model, data, arch: str) -> None:
    """One eval forward of a zero image: the model must take the data's images and give one logit per class.

    Catches, before training, a user factory that ignores ``in_channels`` or
    ``num_classes``, or an architecture whose pooling the image size cannot feed.
    """
    import torch

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


def _sections(ctx: RunContext, acc: float) -> dict[str, Any]:
    import acl

    cfg, data, trained = ctx.cfg, ctx.data, ctx.trained
    model = {
        "arch": ctx.arch,
        "spec": ctx.spec,
        "layers": ctx.layers,
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
    keys = ("optimizer", "lr", "batch_size", "amp", "workers", "device", "resumed_from")
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
