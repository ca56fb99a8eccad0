"""Parity: a row per backend and export mode (``pipeline.validate``), each compared with the source model.

Fills ``ctx.rows`` (timed again by the latency stage) and ``ctx.parity`` (the serve
test adds its server's row). Building the rows writes the FP16 file (ONNX Runtime
backends) and the inlined live file (OpenVINO); they are returned here.
Report keys: ``tolerances``, ``parity``. A failed row fails the stage and the verdict;
an unavailable one is a check that could not run here.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "parity"
TITLE = "parity against the source model"


def check(cfg: JobConfig) -> None:
    backend_names(cfg.backends)


def backend_names(requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The backends to run, ``torch`` (the reference) always first among them."""
    from deploy.backends import ALL_BACKENDS
    from pipeline.early_checks import backend_problem

    problem = backend_problem(requested)  # one message, whether the CLI or the API catches it
    if problem:
        raise UserError(problem)
    names = requested or ALL_BACKENDS
    return names if "torch" in names else ("torch", *names)


def run(ctx: RunContext) -> StageResult:
    from deploy.backends import availability
    from pipeline.validate import FP16_FILE, INLINED_FILE, backend_rows, perturbed_akps, run_parity, tolerance_table

    cfg, x_test = ctx.cfg, ctx.x_test
    ctx.log(f"      on {len(x_test)} test images")
    backends = {b: availability(b) for b in backend_names(cfg.backends)}
    moved = perturbed_akps(ctx.model, cfg.seed)  # one copy serves every (fed) and refit row
    ctx.rows = backend_rows(
        ctx.model,
        moved,
        ctx.data,
        ctx.onnx,
        backends,
        ctx.threads,
        ctx.staging,
        cfg.batch_sizes,
        ctx.log,
        ctx.int8_path,
    )
    ctx.parity = run_parity(ctx.model, moved[0], ctx.rows, x_test)
    for line in rep.parity_lines(ctx.parity):
        ctx.log(f"      {line}")
    written = {"onnx:static-fp16": FP16_FILE, "onnx:live-inlined": INLINED_FILE}
    checks = checks_of(ctx.parity)
    failed = [k for k, ok in checks.items() if ok is False]
    return StageResult(
        "failed" if failed else "ok",
        f"parity failed for {', '.join(failed)}" if failed else None,
        sections={"tolerances": tolerance_table(), "parity": ctx.parity},
        files={name: f for name, f in written.items() if (ctx.staging / f).exists()},
        checks=checks,
    )


def checks_of(parity: dict[str, Any]) -> dict[str, bool | None]:
    """A verdict row per parity row: passed, failed (an error counts as failed) or ``None`` (not available here)."""
    return {k: (bool(v.get("passed")) if v.get("available", True) else None) for k, v in parity.items()}


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.parity_section(report) if "parity" in report else []
