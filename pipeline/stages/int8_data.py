"""With ``--int8``: the training split can give the calibration and validation images (``pipeline.int8_data``).

Checked as soon as the data are loaded, before training, so a bad
``--int8-calibration`` costs no training time. Runs on every DDP process (it
comes before training, as every such stage must), silently; no report key.
"""

from __future__ import annotations

from pipeline.stages.base import RunContext, StageResult

NAME = "int8_data"
EVERY_RANK = True


def run(ctx: RunContext) -> StageResult:
    from pipeline.int8_data import calibration_count

    cfg = ctx.cfg
    if cfg.int8:
        calibration_count(ctx.data.train_size, cfg.int8_calibration, ctx.data.name, cfg.checkpoint)
    return StageResult()
