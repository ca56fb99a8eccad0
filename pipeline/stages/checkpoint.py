"""The trained model as ``model.safetensors``, with what loading it needs (``pipeline.checkpoint``)."""

from __future__ import annotations

import json

from pipeline.stages.base import RunContext, StageResult

NAME = "checkpoint"
TITLE = "checkpoint"
FILE = "model.safetensors"


def run(ctx: RunContext) -> StageResult:
    from pipeline import archs
    from pipeline import checkpoint as ckpt

    data = ctx.data
    meta = {
        # A --model factory is recorded under its own key: loading needs --model again (checkpoint.load).
        ("model" if archs.is_user_model(ctx.arch) else "arch"): ctx.arch,
        "spec": ctx.spec,
        "convert_layers": ctx.layers,
        "in_channels": data.input_shape[0],
        "mean": data.mean,
        "std": data.std,
        "image_size": data.image_size,
        "num_classes": data.num_classes,
        "data": data.name,
    }
    pruned = (ctx.sections.get("prune") or {}).get("shapes")
    if pruned:  # the rebuilt layers' shapes, so that --checkpoint rebuilds them (pipeline.pruned_shapes)
        meta["pruned"] = json.dumps(pruned)
        meta["prune_rank"] = ctx.sections["prune"]["rank"]  # which ranking chose the kernels (acl.pruning_rank)
    ckpt.save(ctx.model, ctx.staging / FILE, meta)
    return StageResult(files={"checkpoint": FILE})
