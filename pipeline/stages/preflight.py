"""Preflight: the job's own options checked before anything slow, and the thread count every later stage uses."""

from __future__ import annotations

import os

from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "preflight"
EVERY_RANK = True


def check(cfg: JobConfig) -> None:
    if cfg.epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {cfg.epochs}")
    if not cfg.batch_sizes or any(b < 1 for b in cfg.batch_sizes):
        raise UserError(f"--batch-sizes must be positive integers, got {list(cfg.batch_sizes)}")


def run(ctx: RunContext) -> StageResult:
    import torch

    ctx.threads = ctx.cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(ctx.threads)
    return StageResult()
