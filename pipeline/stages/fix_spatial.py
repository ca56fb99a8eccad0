"""ExplainFix's fixed spatial filters (``--fix-spatial``): set and freeze every spatial convolution before training.

Runs between ``inputs`` and ``model`` on every DDP process (each fixes the same
kernels: the draws come from a generator seeded with ``--seed``). Thin over
``acl.fix_spatial``. Report key ``fix_spatial``: null when not asked, else
``{"method", "fixed": [layers], "learning": [1x1 layers], "frozen", "learnable"}``
(parameter values frozen, and still learnable in the whole model), and ``"guide"``
(the ``--fix-guide`` path) for ``guidedsteer``, whose guide is read here
(``pipeline.fix_guide``): a bad guide is refused before training, nothing written.
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

    found = problem(cfg.fix_spatial, cfg.checkpoint, cfg.fix_guide)
    if found:
        raise UserError(found)


def run(ctx: RunContext) -> StageResult:
    method = ctx.cfg.fix_spatial
    if method == "none":
        return StageResult("not-available", NOT_REQUESTED, sections={"fix_spatial": None})
    import torch

    import acl

    guide = _guide(ctx) if method == "guidedsteer" else None
    try:
        summary = acl.fix_spatial(ctx.model, method, generator=torch.Generator().manual_seed(ctx.cfg.seed), guide=guide)
    except ValueError as e:  # the guide lacks a layer or kernel shape the model needs (checked before any change)
        raise UserError(f"--fix-guide {ctx.cfg.fix_guide}: {e}") from None
    if ctx.is_main:
        ctx.log(
            f"      fixed spatial filters ({method}): {len(summary.fixed)} convolutions frozen "
            f"({summary.frozen} values), {summary.learnable} parameter values still learn"
        )
    guided = {"guide": str(ctx.cfg.fix_guide)} if guide is not None else {}
    return StageResult(sections={"fix_spatial": {**summary.as_dict(), **guided}})


def _guide(ctx: RunContext) -> dict:
    from pipeline.fix_guide import read_guide

    return read_guide(ctx.cfg.fix_guide, arch=ctx.arch, model=ctx.cfg.model)


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
        *([f"- Guide (GuidedSteer): `{fix['guide']}`."] if fix.get("guide") else []),
        f"- Left learning: {len(fix['learning'])} 1x1 convolutions, every normalisation and linear layer.",
        "- The compact factor counts per spec: an ACL's frozen AKPs and plain kernels still count there.",
    ]
