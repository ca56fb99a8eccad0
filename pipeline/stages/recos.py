"""The RECOS view (Kuo): every layer's anchors and rectified correlations on test images, and ``recos.png``.

Report key ``recos`` (``pipeline.recos_report``; the numbers from ``acl.recos.analyse``).
Runs on the source model after training; costs seconds on LeNet (the report states its own cost).
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.base import RunContext, StageResult

NAME = "recos"
TITLE = "RECOS view"


def run(ctx: RunContext) -> StageResult:
    import torch

    from pipeline import recos_report

    device = next((p.device for p in ctx.model.parameters()), torch.device("cpu"))
    threads = torch.get_num_threads()
    # Many small tensor operations: on a busy 2-core machine two threads took LeNet's analysis
    # from 0.3 s (one thread) to 2-3 s.
    torch.set_num_threads(1)
    try:
        section = recos_report.measure(ctx.model, torch.from_numpy(ctx.x_test).to(device), ctx.staging)
    finally:
        torch.set_num_threads(threads)
    return StageResult(sections={"recos": section}, files={"recos": recos_report.FIGURE})


def markdown(report: dict[str, Any]) -> list[str]:
    from pipeline import recos_report

    seconds = report.get("stages", {}).get(NAME, {}).get("seconds")
    return recos_report.markdown(report.get("recos"), seconds)
