"""FP16 range: every Conv and Linear of the deploy form in FP16 beside FP32 (``deploy.fp16``). Report key ``fp16_range``."""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "fp16_range"
TITLE = "FP16 range"


def run(ctx: RunContext) -> StageResult:
    from pipeline.validate import fp16_summary

    return StageResult(sections={"fp16_range": fp16_summary(ctx.model, ctx.data.x_test, ctx.onnx)})


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.fp16_section(report.get("fp16_range"))
