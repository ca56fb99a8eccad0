"""INT8 risk per layer and per ACL kernel family (``deploy.int8.risk``). Report key ``int8_risk``.

Runs when the job makes an INT8 file (``JobConfig.int8``, ``--int8``), on the
source model and the first test images (as many as the *Inside the ACLs* section
uses, so its energy shares and these error shares are on the same images). A
family left with too few effective bits by another's scale is a warning of the
verdict, not a failure: whether it costs accuracy is the INT8 rows' to say.
"""

from __future__ import annotations

from typing import Any

from pipeline import int8_risk_report
from pipeline.stages.base import RunContext, StageResult

NAME = "int8_risk"
TITLE = "INT8 risk per layer and kernel family"


def run(ctx: RunContext) -> StageResult:
    if not getattr(ctx.cfg, "int8", False):  # the option belongs to the INT8 file's stage
        return StageResult("not-available", "no INT8 file was asked for (--int8)")
    import torch

    from deploy.int8.risk import risk_report
    from pipeline.interpretability import ENERGY_IMAGES

    section = risk_report(ctx.model, torch.from_numpy(ctx.x_test[:ENERGY_IMAGES]))
    for name, why in _fp32_in_file(ctx).items():
        if name in section["layers"]:
            section["layers"][name]["fp32_in_file"] = why
    for line in int8_risk_report.console_lines(section):
        ctx.log(f"      {line}")
    return StageResult(sections={"int8_risk": section}, warnings=int8_risk_report.warnings(section))


def _fp32_in_file(ctx: RunContext) -> dict[str, str]:
    """Convolutions whose weights the INT8 file keeps FP32 (module name -> why), from the INT8 stage's section.

    The risk figures are those of INT8 weights; for these layers the file has none,
    so their flags must not reach the verdict as a risk of the file.
    """
    s = ctx.sections.get("int8") or {}
    out = {e["module"]: "kept FP32 by accuracy control" for e in s.get("fp32_layers", []) if e.get("module")}
    if s.get("single_channel_fp32") and "static" in ctx.onnx:
        from pipeline.stages.int8 import module_names

        modules = module_names(ctx.onnx["static"])
        out.update(
            {modules[n]: "FP32 always, it reads one input channel" for n in s["single_channel_fp32"] if n in modules}
        )
    return out


def markdown(report: dict[str, Any]) -> list[str]:
    return int8_risk_report.markdown(report.get("int8_risk"))
