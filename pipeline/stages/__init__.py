"""The main job as a Python API: ``run(JobConfig) -> report dict``, one module per stage.

``runner.STAGES`` lists them in order: preflight -> inputs (data; checkpoint or
architecture) -> fixed spatial filters (``--fix-spatial``) -> model (train, evaluate) -> checkpoint -> ONNX export -> parity -> latency -> TensorRT parser check -> FP16
range -> replay data -> Triton -> kernel mosaics -> saliency -> ExplainSteer -> report. Each module's
``run(ctx)`` returns a ``StageResult`` (``base``): status, report sections, files and
verdict checks; ``report.md`` is built from the modules' ``markdown``. Everything is
written into a staging folder beside ``--out`` and moved into place only when the
whole job succeeded, so a failed or interrupted run leaves no half-written
artifacts and a previous run's files untouched. See docs/design.md.
"""

from __future__ import annotations

from typing import Any

from pipeline.output_folder import OutputFolder
from pipeline.stages.base import DEFAULT_BATCH_SIZES, JobConfig, RunContext, StageResult
from pipeline.stages.inputs import check_io
from pipeline.stages.runner import STAGES, run, write_markdown

__all__ = [
    "DEFAULT_BATCH_SIZES",
    "STAGES",
    "JobConfig",
    "OutputFolder",
    "RunContext",
    "StageResult",
    "run",
    "write_markdown",
]


def _verdict(parity: dict[str, Any], fp16: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verdict of a parity table and an FP16 range analysis alone (``report.verdict`` over their checks)."""
    from pipeline import fp16_verdict
    from pipeline.stages import parity as parity_stage
    from pipeline.stages import report

    found = fp16_verdict.checks(fp16)
    fp16_result = StageResult(
        checks={k: why is None for k, why in found.items()},
        reasons={k: why for k, why in found.items() if why},
        warnings=fp16_verdict.warnings(fp16),
    )
    return report.verdict({"parity": StageResult(checks=parity_stage.checks_of(parity)), "fp16_range": fp16_result})


_check_io = check_io  # its name before the stages were split
