"""The job's inputs: the data, and the model to start from (a checkpoint, or an architecture converted to ACLs).

Everything here can be the user's mistake (a missing folder, a bad checkpoint, a
model that does not fit the data), so this stage says nothing on the console: a
bad input is one line, ``error: ...``. Fills ``ctx.model``, ``ctx.data``,
``ctx.arch``, ``ctx.spec``, ``ctx.layers``; training is the ``model`` stage's.
"""

from __future__ import annotations

from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "inputs"
EVERY_RANK = True


def check(cfg: JobConfig) -> None:
    _check_model_options(cfg)


def run(ctx: RunContext) -> StageResult:
    if ctx.cfg.checkpoint is not None:
        _load(ctx)
    else:
        _build(ctx)
    return StageResult()


def _data_for(cfg: JobConfig, norm: tuple[tuple[float, ...], tuple[float, ...]] | None):
    from pipeline.data import load_dataset

    try:
        return load_dataset(cfg.data, norm=norm)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None


def _load(ctx: RunContext) -> None:
    from pipeline import checkpoint as ckpt

    cfg = ctx.cfg
    model, meta = ckpt.load(cfg.checkpoint, arch=cfg.arch, spec=cfg.spec, model=cfg.model, layers=cfg.layers)
    _check_data_channels(cfg, meta)
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


def _check_data_channels(cfg: JobConfig, meta: dict[str, str]) -> None:
    """Before loading: the checkpoint's per-channel standardisation fails on data of another channel count
    with a message naming neither the checkpoint nor ``--data``, which a checkpoint does not record."""
    from pipeline.datasets import DATA_CHANNELS

    want, found = int(meta["in_channels"]), DATA_CHANNELS.get(cfg.data.partition(":")[0])
    if found is not None and found != want:
        raise UserError(
            f"checkpoint {cfg.checkpoint} was trained on {want}-channel images ({meta.get('data', 'data not recorded')})"
            f", but --data {cfg.data} has {found}-channel images, expected a --data of {want}-channel images "
            "(a checkpoint does not record its --data)"
        )


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


def _check_model_options(cfg: JobConfig) -> None:
    """--arch, --model, --spec, --layers and their combinations, before anything slow.

    The command line's early checks, called here too: the API and the CLI refuse a
    value with the same message, whichever path a caller takes.
    """
    from pipeline import early_checks

    for problem in (
        early_checks.arch_and_model_problem(cfg.arch, cfg.model),
        early_checks.arch_problem(cfg.arch),
        early_checks.model_problem(cfg.model),
        early_checks.spec_problem(cfg.spec),
        early_checks.layers_problem(cfg.layers),
        early_checks.one_source_problem(cfg.checkpoint, cfg.init_from),
    ):
        if problem:
            raise UserError(problem)


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
