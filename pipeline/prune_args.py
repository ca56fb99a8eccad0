"""``--prune PCT``, ``--prune-finetune EPOCHS``, ``--prune-rank``, ``--prune-align``: ChannelPrune's options, torch-free.

``add_prune_arguments(parser)`` adds them; ``problem`` is what the job refuses
about them, checked before torch is imported (``pipeline.early_checks``) and again
for ``JobConfig`` API callers (``pipeline.stages.prune``).
"""

from __future__ import annotations

import argparse
import math

__all__ = [
    "MAX_ALIGN", "MAX_FINETUNE", "MAX_PERCENT", "RANKINGS", "add_prune_arguments", "percent", "problem", "ranking",
]  # fmt: skip

MAX_PERCENT = 99.9
"""The paper's highest setting (Table M.1); 100 % would zero every kernel but one per layer."""
MAX_FINETUNE = 10_000
MAX_ALIGN = 64
RANKINGS = ("saliency", "saliency-per-flop", "saliency-per-cost", "channel-per-cost")
"""``acl.pruning_rank.RANKINGS``, repeated here so that the checks run before torch is imported."""
NAMES = ", ".join(RANKINGS[:-1]) + " or " + RANKINGS[-1]


def percent(text: str) -> float:
    """An argparse ``type``: a number from 0 to 99.9, or a one-line error naming what is expected."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number, expected 0 to {MAX_PERCENT:g}") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_PERCENT):
        raise argparse.ArgumentTypeError(f"{text[:40]} is out of range, expected 0 to {MAX_PERCENT:g}")
    return value


def ranking(text: str) -> str:
    """An argparse ``type``: one of ``RANKINGS``, or a one-line error naming them."""
    if text not in RANKINGS:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a ranking, expected {NAMES}")
    return text


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
    parser.add_argument(
        "--prune-rank",
        type=ranking,
        default="saliency",
        metavar="RANK",
        help="how --prune ranks kernels: saliency (the paper's Eq. 4 global ranking, default), saliency-per-flop "
        "(ours: saliency / the kernel's multiply-adds at its layer's output size, so more goes from the "
        "high-resolution layers that cost the latency), saliency-per-cost (ours: saliency / (the kernel's share of "
        "the spatial parameters + its share of the multiply-adds)) or channel-per-cost (ours: whole channel classes by that "
        "ratio, so the zeroed kernels are ones pruning removes)",
    )
    parser.add_argument(
        "--prune-align",
        type=int,
        default=1,
        metavar="N",
        help="after --prune: every pruned convolution keeps a multiple of N channels, taking removable ones back "
        "(exact); 8 (AVX2) or 16 (AVX-512) keeps ONNX Runtime's blocked CPU layout, which odd counts lose",
    )


def problem(prune: float | None, finetune: int, rank: str = "saliency", align: int = 1) -> str | None:
    """``--prune``/``--prune-finetune``/``--prune-rank``/``--prune-align`` that cannot be used, as ``<what>, expected
    <what>``; None when they can."""
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
    if rank not in RANKINGS:
        return f"--prune-rank {str(rank)[:40]!r} is not a ranking, expected {NAMES}"
    if rank != "saliency" and prune is None:
        return f"--prune-rank {rank} ranks kernels to prune, but --prune is not given, expected --prune PCT too"
    if not isinstance(align, int) or not 1 <= align <= MAX_ALIGN:
        return f"--prune-align {align} is out of range, expected 1 to {MAX_ALIGN}"
    if align != 1 and prune is None:
        return f"--prune-align {align} aligns pruned channels, but --prune is not given, expected --prune PCT too"
    return None
