"""The job as an ordered list of stage modules, and the loop that runs them.

The only code that touches the output folder, the signals around its commit and
the resume store. Each stage's result is merged into the run: its report keys
(one owner each), its files (one name and one path each, inside the staging
folder), its checks and its status (``report.verdict``). An exception from a stage
propagates: the staging folder is discarded and ``--out`` stays as it was.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Sequence

from pipeline.output_folder import OutputFolder, signals_deferred
from pipeline.stages import (
    checkpoint,
    explainsteer,
    export_onnx,
    fix_spatial,
    fp16,
    inputs,
    int8,
    int8_data,
    int8_risk,
    latency,
    model,
    mosaics,
    parity,
    preflight,
    prune,
    recos,
    replay,
    report,
    saliency,
    tensorrt,
    triton,
    unavailable,
)
from pipeline.stages.base import JobConfig, RunContext, StageResult

STAGES = (
    preflight,
    inputs,
    int8_data,  # right after the data: a bad --int8-calibration is reported before training
    fix_spatial,  # between the model's construction and its training
    model,
    prune,  # after training, before the checkpoint: everything later sees the pruned model
    checkpoint,
    export_onnx,
    int8,  # before parity: its file gets parity and latency rows (ctx.int8_path)
    parity,
    fp16,  # right after parity: it can fail FP16 parity rows (pipeline.fp16_verdict)
    int8_risk,  # after the INT8 file's stage; needs only the source model
    latency,
    tensorrt,
    replay,
    triton,
    unavailable,
    mosaics,
    recos,  # after the mosaics: the RECOS view of the trained source model
    saliency,  # after training; its ctx.saliency weights ExplainSteer's spectra
    explainsteer,
    report,
)
"""In run order, which is also the order of ``report.md``'s sections."""

RUNNER_KEYS = ("schema", "created", "verdict", "stages", "files", "environment")
"""``report.json`` keys the report stage fills from the run itself; no stage returns them."""


def run(cfg: JobConfig, plan: Sequence[Any] = STAGES) -> dict[str, Any] | None:
    """Run the whole job; returns the report (``None`` on non-zero DDP ranks).

    The output folder's lock is held from the start, so a second run into the same
    ``--out`` fails at once; taking it also cleans up after killed runs.
    """
    folder = OutputFolder(cfg.out, cfg.force, log=cfg.log)
    # Under torchrun only rank 0 writes --out, so only rank 0 takes the lock.
    held = folder.locked() if _rank() == 0 else contextlib.nullcontext()
    with held:
        return _run(cfg, folder, tuple(plan))


def write_markdown(report_: dict[str, Any], path: Path) -> Path:
    """``report.md`` of a ``report.json``, with the sections of ``STAGES``."""
    return report.write_markdown(report_, path, STAGES)


def check_plan(plan: Sequence[Any]) -> None:
    """Stage names unique, and the every-rank stages first."""
    names = [m.NAME for m in plan if hasattr(m, "run")]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    ranks = [bool(getattr(m, "EVERY_RANK", False)) for m in plan if hasattr(m, "run")]
    if ranks != sorted(ranks, reverse=True):
        raise ValueError("stages with EVERY_RANK must come before the others")


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _run(cfg: JobConfig, folder: OutputFolder, plan: tuple[Any, ...]) -> dict[str, Any] | None:
    check_plan(plan)
    stages = [m for m in plan if hasattr(m, "run")]
    every = [m for m in stages if getattr(m, "EVERY_RANK", False)]
    ctx = RunContext(cfg=cfg, log=cfg.log, is_main=_rank() == 0, plan=plan)
    steps = {m.NAME: i for i, m in enumerate((m for m in stages if getattr(m, "TITLE", None)), 1)}
    folder.check()
    _check(plan, cfg)
    for stage in every:
        _run_stage(stage, ctx, steps)
    if not ctx.is_main:
        return None
    _check(plan, cfg)  # again: training may take hours, and --triton-repo may have changed meanwhile
    ctx.staging = folder.open()
    try:
        for stage in stages[len(every) :]:
            _run_stage(stage, ctx, steps)
        with signals_deferred():  # a signal waits until the outputs are in place and their resume state is gone
            for place, _drop in ctx.pending:
                place()
            folder.commit()
            if ctx.store is not None:
                ctx.store.clear()
            ctx.log(f"done: {folder.out}/report.md")
    except BaseException:
        for _place, drop in ctx.pending:
            drop()
        folder.discard()
        raise
    return ctx.report


def _check(plan: tuple[Any, ...], cfg: JobConfig) -> None:
    for module in plan:
        if hasattr(module, "check"):
            module.check(cfg)


def _run_stage(stage: Any, ctx: RunContext, steps: dict[str, int]) -> None:
    if stage.NAME in steps and ctx.is_main:
        ctx.log(f"[{steps[stage.NAME]}/{len(steps)}] {stage.TITLE}")
    start = time.perf_counter()
    result = stage.run(ctx)
    if not isinstance(result, StageResult):
        raise TypeError(f"stage {stage.NAME} returned {type(result).__name__}, expected a StageResult")
    ctx.seconds[stage.NAME] = time.perf_counter() - start
    _merge(ctx, stage.NAME, result)


def _merge(ctx: RunContext, name: str, result: StageResult) -> None:
    for key in result.sections:
        owner = next((n for n, r in ctx.results.items() if key in r.sections), None)
        if owner is not None or key in RUNNER_KEYS:
            raise RuntimeError(f"stage {name} returns report key {key!r}, already owned by {owner or 'the runner'}")
    for key, rel in result.files.items():
        if key in ctx.files or Path(rel) in {Path(p) for p in ctx.files.values()}:
            raise RuntimeError(f"stage {name} returns file {key!r} ({rel}), which an earlier stage returned")
        _check_inside(ctx, name, rel)
    ctx.results[name] = result
    ctx.sections.update(result.sections)
    ctx.files.update(result.files)


def _check_inside(ctx: RunContext, name: str, rel: str) -> None:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or ctx.staging is None or not (ctx.staging / path).exists():
        raise RuntimeError(f"stage {name} returns file {rel!r}, expected a path it wrote inside the staging folder")
