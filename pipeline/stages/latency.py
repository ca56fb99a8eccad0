"""Latency of every timed parity row per batch size, its chart, and the fastest passing row per batch.

Fills ``ctx.latency``; report keys ``latency`` and ``fastest`` (``pipeline.fastest``).
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "latency"
TITLE = "latency"
CHART = "latency.png"


def run(ctx: RunContext) -> StageResult:
    from pipeline.fastest import fastest_passing
    from pipeline.validate import run_latency

    cfg = ctx.cfg
    ctx.log(f"      at batch sizes {list(cfg.batch_sizes)}")
    ctx.latency = run_latency(ctx.rows, ctx.x_test, cfg.batch_sizes, cfg.latency_seconds)
    chart = rep.plot_latency(ctx.latency, ctx.staging / CHART)
    computed = (ctx.sections.get("fp16_range") or {}).get("computed")
    fastest = fastest_passing(ctx.parity, ctx.latency, ctx.sections.get("int8"), computed)
    sections = {"latency": ctx.latency, "fastest": fastest}
    return StageResult(sections=sections, files={"latency_chart": chart.name} if chart else {})


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.latency_section(report) if "latency" in report else []
