"""ONNX export: the static, live and live-with-AKP-inputs files from one trace, each verified before it is written.

Fills ``ctx.onnx`` (``{kind: path}``); a model without ACLs gets the static file only.
"""

from __future__ import annotations

from pipeline.stages.base import RunContext, StageResult

NAME = "export"
TITLE = "ONNX export: static, live, live with AKP inputs"


def run(ctx: RunContext) -> StageResult:
    import acl
    import export
    from deploy.runners import quiet_polygraphy

    quiet_polygraphy()
    kinds = export.KINDS if acl.acl_layers(ctx.model) else ("static",)
    shape = (1, *ctx.data.input_shape)
    ctx.onnx = export.export_files(ctx.model, {k: ctx.staging / f"model.{k}.onnx" for k in kinds}, shape)
    return StageResult(files={f"onnx:{kind}": p.name for kind, p in ctx.onnx.items()})
