"""Triton: the model repository (``--triton-repo``) and a real server's parity and load test (``--serve-test``).

Thin over ``pipeline.serving``. The server's answers count in the verdict like any
backend's: its row goes into ``ctx.parity`` as ``triton-python:static``. A run with an
INT8 file (issue 20) serves it as models of its own; the INT8 python model's answers
are compared with ONNX Runtime on the same file (check ``triton-python:static-int8``). Without
either flag the stage is not requested (``triton`` and ``serving`` are null); where
no server can run, ``serving`` says why. Report keys ``triton``, ``serving``.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "triton"
TITLE = "Triton repository and serving"
SERVER_ROW = "triton-python:static"
INT8_SERVER_ROW = "triton-python:static-int8"
NOT_REQUESTED = "not requested (--triton-repo DIR, --serve-test)"


def check(cfg: JobConfig) -> None:
    from pipeline import serving

    if cfg.triton_repo is not None:
        serving.check_repo_dir(cfg.triton_repo, cfg.out, cfg.force)


def run(ctx: RunContext) -> StageResult:
    from pipeline import serving

    cfg = ctx.cfg
    if cfg.triton_repo is None and not cfg.serve_test:
        ctx.log(f"      {NOT_REQUESTED}")
        return StageResult("not-available", NOT_REQUESTED, sections={"triton": None, "serving": None})
    int8 = ctx.int8_path  # the INT8 stage's Q/DQ file (issue 20), when the run made one
    paths = {**ctx.onnx, **({"static-int8": int8} if int8 is not None else {})}
    info, where, triton = serving.write_triton(
        cfg.triton_repo,
        out=cfg.out,
        staging=ctx.staging,
        paths=paths,
        latency=ctx.latency,
        force=cfg.force,
        log=ctx.log,
    )
    files = {"triton_repo": str(where.relative_to(ctx.staging))} if where.is_relative_to(ctx.staging) else {}
    if cfg.triton_repo is not None and not where.is_relative_to(ctx.staging):
        ctx.pending.append(serving.pending_placement(where, cfg.triton_repo, cfg.force))  # placed at commit
    try:
        serve = _serve(ctx, where, info) if cfg.serve_test else None
    finally:
        if cfg.triton_repo is None:
            serving.remove_temporary(where)
    sections = {"triton": triton, "serving": serve}
    if serve is None:
        return StageResult(sections=sections, files=files)
    if not serve.get("available", True):
        return StageResult("not-available", serve["reason"], sections=sections, files=files)
    checks = {SERVER_ROW: bool(serve["parity"].get("passed"))} if "parity" in serve else {}
    if "int8" in serve:
        checks[INT8_SERVER_ROW] = bool(serve["int8"]["parity"].get("passed"))
    failed = [k for k, ok in checks.items() if not ok]
    status, reason = ("failed", f"the server's answers differ ({', '.join(failed)})") if failed else ("ok", None)
    return StageResult(status, reason, sections=sections, files=files, checks=checks)


def _serve(ctx: RunContext, where, info) -> dict[str, Any]:
    import torch

    from pipeline import serving

    with torch.inference_mode():
        reference = ctx.model(torch.from_numpy(ctx.x_test)).numpy()
    serve = serving.serve_test(where, info, ctx.x_test, reference, log=ctx.log)
    if "parity" in serve:  # the server's answers count in the verdict like any backend's
        ctx.parity[SERVER_ROW] = serve["parity"]
    return serve


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.triton_section(report.get("triton")) + rep.serving_section(report.get("serving"), report.get("triton"))
