"""ExplainFix ChannelPrune (``--prune PCT``, ``--prune-finetune EPOCHS``): after training, before the checkpoint.

Saliency (Eq. 4, 15 minibatches of 4 training images) ranks every spatial kernel
(``--prune-rank``: ours per multiply-add, per cost share, or whole channel classes; ``acl.pruning_rank``);
``acl.zero_masks`` picks the least salient PCT %, ``acl.channel_prune`` removes the
channels that leaves unused and rebuilds smaller layers (checked against the zeroed
model on the test images with the fp32 tolerance row). With ``--prune-finetune``,
``acl.fill_zero`` redraws the zeroed kernels that remain (ACLs rebuilt with their
spec for what remains) and the model is fine-tuned with the training options;
without, the exact pruned model (ACLs baked) goes on. Every later stage (checkpoint,
export, parity, latency) sees the pruned model. Report key ``prune``: null when not asked.
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "prune"
TITLE = "channel pruning"
NOT_REQUESTED = "not requested (--prune PCT)"
SALIENCY_MINIBATCHES, SALIENCY_BATCH = 15, 4  # the paper's footnote 5


def check(cfg: JobConfig) -> None:
    from pipeline.prune_args import problem

    found = problem(cfg.prune, cfg.prune_finetune, cfg.prune_rank, cfg.prune_align)
    if found:
        raise UserError(found)


def run(ctx: RunContext) -> StageResult:
    cfg = ctx.cfg
    if cfg.prune is None:
        return StageResult("not-available", NOT_REQUESTED, sections={"prune": None})
    import acl
    from pipeline.stages.prune_steps import exactness, finetune, prune_model, saliency_batch, sizes
    from pipeline.train import evaluate

    model = ctx.model.eval()
    # A training split under 60 images: fewer minibatches, as the saliency stage takes (not an error after training).
    batch = min(SALIENCY_BATCH, ctx.data.train_size)
    count = min(SALIENCY_MINIBATCHES, ctx.data.train_size // batch)
    x, y = saliency_batch(ctx.data, count * batch)
    saliency, masks, emptied, result = prune_model(
        model, x, y, cfg.prune, cfg.prune_rank, cfg.prune_align, minibatches=count, batch_size=batch
    )
    total = sum(k.numel() for k in saliency.kernels.values())
    exact = exactness(result, ctx.x_test)
    accuracy = {"trained": evaluate(model, ctx.data), "pruned": evaluate(result.model, ctx.data)}
    final, form = result.model, "baked"
    if cfg.prune_finetune:
        final, form = acl.fill_zero(result, seed=cfg.seed), "acl"
        seconds = finetune(ctx, final)
        accuracy["finetuned"] = evaluate(final.eval(), ctx.data)
    ctx.model = final.eval()
    if ctx.initial:  # the before/after mosaics: only layers whose kernel count pruning left as it was
        counts = {n: layer.spec.total for n, layer in acl.acl_layers(ctx.model)}
        ctx.initial = {n: k for n, k in ctx.initial.items() if counts.get(n) == len(k)}
    zeroed = int(sum(int(m.sum()) for m in masks.values()))
    ctx.log(
        f"      pruned {zeroed} of {total} spatial kernels: accuracy {accuracy['trained']:.4f} -> "
        f"{accuracy['pruned']:.4f}" + (f" -> {accuracy['finetuned']:.4f} fine-tuned" if "finetuned" in accuracy else "")
    )
    section = {
        "percent": cfg.prune,
        "rank": cfg.prune_rank,
        "align": cfg.prune_align,
        "zeroed_kernels": zeroed,
        "spatial_kernels": total,
        "kept_one_kernel": emptied,
        "form": form,
        "finetune_epochs": cfg.prune_finetune,
        "finetune_seconds": seconds if cfg.prune_finetune else None,
        "accuracy": accuracy,
        "exact": exact,
        "parameters": {"before": sizes(model), "after": sizes(ctx.model)},
        "channels": {k: v for k, v in result.channels.items() if any(a != b for a, b in v.values())},
        "kept_classes": result.kept,
        "folded": result.folded,
        "shapes": _shapes(ctx.model, result.channels),
    }
    return StageResult(sections={"prune": section}, checks={"pruned = zeroed model (fp32)": bool(exact["passed"])})


def _shapes(model, channels) -> dict[str, Any]:
    from pipeline.pruned_shapes import describe

    return describe(model, list(channels))


def markdown(report: dict[str, Any]) -> list[str]:
    from pipeline.stages.prune_steps import markdown_lines

    section = report.get("prune")
    return markdown_lines(section) if section else []
