"""``--fix-spatial``: the job's option for ExplainFix's fixed spatial filters (``acl.fix_spatial``), torch-free.

``add_fix_arguments(parser)`` adds the options (``--fix-spatial``, and ``--fix-guide``
for ``guidedsteer``); ``problem`` is what the job refuses
about it, checked before torch is imported (``pipeline.early_checks``) and again
for ``JobConfig`` API callers (``pipeline.stages.fix_spatial``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["METHODS", "add_fix_arguments", "method", "problem"]

METHODS = ("none", "unchanged", "ones", "dct2", "ghaar", "psine", "guidedsteer")
"""Equal to ``acl.fixing.METHODS`` (a test keeps them equal; that module needs torch)."""

EXPECTED = f"one of {', '.join(METHODS)}"


def method(text: str) -> str:
    """An argparse ``type``: the method, or a one-line error naming what is expected."""
    if text not in METHODS:
        raise argparse.ArgumentTypeError(f"unknown method {text!r}, expected {EXPECTED}")
    return text


def add_fix_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--fix-spatial",
        type=method,
        default="none",
        metavar="METHOD",
        help=f"ExplainFix: before training, set every spatial convolution's kernels (not 1x1) and freeze them and "
        f"their biases; 1x1 convolutions, normalisation and linear layers still learn. METHOD: {', '.join(METHODS)} "
        "(unchanged: the initial kernels, frozen; guidedsteer: drawn like --fix-guide's kernels; an ACL's AKPs "
        "freeze and its plain kernels take the method's)",
    )
    parser.add_argument(
        "--fix-guide",
        type=Path,
        metavar="CKPT",
        help="with --fix-spatial guidedsteer (and only then): the guide, a trained checkpoint of the same "
        "architecture (another seed; .safetensors or weights-only .pt). Per kernel shape, the basis of all its "
        "spatial kernels; per layer, the statistics of its layer of the same name (ExplainFix Algorithm 1)",
    )


def problem(fix: str, checkpoint: Path | None, guide: Path | None = None) -> str | None:
    """``--fix-spatial`` (and ``--fix-guide``) that cannot be used, as ``<what>, expected <what>``; None when it can."""
    if fix not in METHODS:
        return f"unknown --fix-spatial method {fix!r}, expected {EXPECTED}"
    if fix == "guidedsteer" and guide is None:
        return (
            "--fix-spatial guidedsteer draws kernels like a guide network's, but no --fix-guide was given, "
            "expected --fix-guide CKPT (a trained checkpoint of the same architecture)"
        )
    if fix != "guidedsteer" and guide is not None:
        return (
            f"--fix-guide is used only by --fix-spatial guidedsteer, but --fix-spatial {fix} was given, "
            "expected --fix-spatial guidedsteer or no --fix-guide"
        )
    if fix != "none" and checkpoint is not None:
        return (
            f"--fix-spatial {fix} sets and freezes spatial filters before training, but --checkpoint skips training "
            "(it would overwrite the trained kernels), expected one of the two"
        )
    return None
