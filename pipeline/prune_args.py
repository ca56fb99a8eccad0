"""``--prune PCT`` and ``--prune-finetune EPOCHS``: the job's options for ExplainFix's ChannelPrune, torch-free.

``add_prune_arguments(parser)`` adds them; ``problem`` is what the job refuses
about them, checked before torch is imported (``pipeline.early_checks``) and again
for ``JobConfig`` API callers (``pipeline.stages.prune``).
"""

from __future__ import annotations

import argparse
import math

__all__ = ["MAX_FINETUNE", "MAX_PERCENT", "add_prune_arguments", "percent", "problem"]

MAX_PERCENT = 99.9
"""The paper's highest setting (Table M.1); 100 % would zero every kernel but one per layer."""
MAX_FINETUNE = 10_000


def percent(text: str) -> float:
    """An argparse ``type``: a number from 0 to 99.9, or a one-line error naming what is expected."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number, expected 0 to {MAX_PERCENT:g}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_PERCENT):
        raise argparse.ArgumentTypeError(f"{text[:40]} is out of range, expected 0 to {MAX_PERCENT:g}")
    return value


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--prune",
        type=percent,
        default=None,
        metavar="PCT",
        help="ExplainFix ChannelPrune after training: zero the PCT %% least salient spatial kernels (Eq. 4, global "
        f"ranking, one kept per layer), remove the channels that leaves unused and rebuild smaller layers; 0 to "
        f"{MAX_PERCENT:g}",
    )
    parser.add_argument(
        "--prune-finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="after --prune: FillZero (fresh draws for the zeroed kernels that remain), then fine-tune this many "
        "epochs with the training options (0: keep the exact pruned model, its ACLs baked)",
    )


def problem(prune: float | None, finetune: int) -> str | None:
    """``--prune``/``--prune-finetune`` that cannot be used, as ``<what>, expected <what>``; None when they can."""
    if prune is not None and not (
        isinstance(prune, (int, float)) and math.isfinite(prune) and 0 <= prune <= MAX_PERCENT
    ):
        return f"--prune {prune} is out of range, expected 0 to {MAX_PERCENT:g}"
    if not isinstance(finetune, int) or not 0 <= finetune <= MAX_FINETUNE:
        return f"--prune-finetune {finetune} is out of range, expected 0 to {MAX_FINETUNE}"
    if finetune and prune is None:
        return (
            f"--prune-finetune {finetune} fine-tunes a pruned model, but --prune is not given, expected --prune PCT too"
        )
    return None
