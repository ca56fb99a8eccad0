"""TensorRT: the ONNX parser check of every exported file (runs everywhere), and whether engines can be built here.

The engines themselves are parity rows (``trt:*``, ``trt-fp16:*``). With an INT8 file
(issue 20), its TensorRT form is written and checked too (``pipeline.trt_int8``).
``builds``: how each TensorRT major version builds each precision, as documented
(``deploy.tensorrt.versions.build_table``). Report key ``tensorrt``.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "tensorrt"
TITLE = "TensorRT parser check"


def run(ctx: RunContext) -> StageResult:
    from deploy.tensorrt.versions import build_table
    from pipeline.trt_int8 import section_entry
    from pipeline.validate import trt_check

    found = trt_check(ctx.onnx)
    files = section_entry(found, ctx.int8_path, ctx.staging)
    found["builds"] = build_table()
    bad = {k: len(v) for k, v in found["check"].items() if v}
    ctx.log("      " + ("; ".join(f"{k}: {n} problem(s)" for k, n in bad.items()) or "every export passes"))
    return StageResult(sections={"tensorrt": found}, files=files)


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.tensorrt_section(report.get("tensorrt"), rep.tensorrt_listed(report))
