"""FP16 range of the files as each runtime runs them (``deploy.fp16_range``). Report key ``fp16_range``.

Runs right after parity: a form predicted to overflow FP16 fails its check
(``fp16-range:<form>``) and every parity row that stands for it
(``pipeline.fp16_verdict``), so latency and the fastest-runtime table see the
verdict. Layers the FP16 file keeps in FP32 are warnings.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "fp16_range"
TITLE = "FP16 range"


def run(ctx: RunContext) -> StageResult:
    from pipeline import fp16_verdict
    from pipeline.validate import FP16_FILE, fp16_summary

    fp16 = fp16_summary(ctx.onnx, ctx.x_test, ctx.staging / FP16_FILE, ctx.parity, ctx.threads)
    marked = fp16_verdict.mark_rows(ctx.parity, fp16)
    for line in fp16_verdict.console_lines(fp16, marked):
        ctx.log(f"      {line}")
    found = fp16_verdict.checks(fp16)
    reasons = {k: why for k, why in found.items() if why}
    # A marked row passed its numbers; the range check fails it, and this stage's verdict row overrides parity's.
    checks = {**{k: why is None for k, why in found.items()}, **dict.fromkeys(marked, False)}
    return StageResult(
        "failed" if reasons else "ok",
        "; ".join(reasons.values()) or None,
        sections={"fp16_range": fp16},
        checks=checks,
        reasons=reasons,
        warnings=fp16_verdict.warnings(fp16),
    )


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.fp16_section(report.get("fp16_range"))
