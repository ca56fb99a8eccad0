"""ExplainFix's fixed spatial filters (``--fix-spatial``): set and freeze every spatial convolution before training.

Runs between ``inputs`` and ``model`` on every DDP process (each fixes the same
kernels: the draws come from a generator seeded with ``--seed``). Thin over
``acl.fix_spatial``. Report key ``fix_spatial``: null when not asked, else
``{"method", "fixed": [layers], "learning": [1x1 layers], "frozen", "learnable"}``
(parameter values frozen, and still learnable in the whole model).
"""

from __future__ import annotations

from typing import Any

from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "fix_spatial"
EVERY_RANK = True
NOT_REQUESTED = "not requested (--fix-spatial METHOD)"


def check(cfg: JobConfig) -> None:
    from pipeline.fix_args import problem

    found = problem(cfg.fix_spatial, cfg.checkpoint)
    if found:
        raise UserError(found)


def run(ctx: RunContext) -> StageResult:
    method = ctx.cfg.fix_spatial
    if method == "none":
        return StageResult("not-available", NOT_REQUESTED, sections={"fix_spatial": None})
    import torch

    import acl

    summary = acl.fix_spatial(ctx.model, method, generator=torch.Generator().manual_seed(ctx.cfg.seed))
    if ctx.is_main:
        ctx.log(
            f"      fixed spatial filters ({method}): {len(summary.fixed)} convolutions frozen "
            f"({summary.frozen} values), {summary.learnable} parameter values still learn"
        )
    return StageResult(sections={"fix_spatial": summary.as_dict()})


def markdown(report: dict[str, Any]) -> list[str]:
    fix = report.get("fix_spatial")
    if not fix:
        return []
    shown = ", ".join(fix["fixed"][:6]) + (f" and {len(fix['fixed']) - 6} more" if len(fix["fixed"]) > 6 else "")
    return [
        "",
        "## Fixed spatial filters (ExplainFix)",
        "",
        f"- Method **{fix['method']}**: {len(fix['fixed'])} spatial convolutions set and frozen before training "
        f"({shown}); {fix['frozen']} parameter values frozen, {fix['learnable']} still learned.",
        f"- Left learning: {len(fix['learning'])} 1x1 convolutions, every normalisation and linear layer.",
        "- The compact factor counts per spec: an ACL's frozen AKPs and plain kernels still count there.",
    ]
