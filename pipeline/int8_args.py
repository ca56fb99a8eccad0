"""The INT8 options of ``python -m pipeline.export`` and their checks, torch-free (``pipeline.early_checks`` style).

``--int8`` is not the default: calibration and, when the all-INT8 file loses too
much, one file per layer to measure its sensitivity, add minutes on a ResNet at
224 px to a job whose FP32 results must not depend on them; and an INT8 file is a
deployment choice, with an accuracy cost the user should have asked to see.
The other ``--int8-*`` options need ``--int8`` (given alone they would do nothing).
"""

from __future__ import annotations

import argparse
import math
from typing import Any

METHODS = ("minmax", "entropy", "percentile")
"""Equal to ``deploy.int8.quantize.METHODS``, spelled out so that checking arguments imports nothing heavy."""

__all__ = [
    "DEFAULT_CALIBRATION",
    "DEFAULT_MAX_DROP",
    "MAX_CALIBRATION",
    "METHODS",
    "add_int8_arguments",
    "int8_fields",
    "problem",
]

DEFAULT_CALIBRATION = 256
MAX_CALIBRATION = 100_000
DEFAULT_MAX_DROP = 1.0
MAX_DROP = 100.0
_OPTIONS = ("int8_calibration", "int8_method", "int8_max_drop")


def add_int8_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("INT8 (ONNX Runtime static quantization, Q/DQ file)")
    g.add_argument(
        "--int8",
        action="store_true",
        help="also write model.static-int8.onnx: per-channel symmetric INT8 weights, symmetric INT8 activations "
        "calibrated on training images, layers kept in FP32 until the accuracy drop is within --int8-max-drop; "
        "with its parity, accuracy and latency rows",
    )
    g.add_argument(
        "--int8-calibration",
        type=int,
        metavar="N",
        help=f"calibration images, class-balanced from the training split, 1 to {MAX_CALIBRATION} and fewer than "
        f"the training images (the rest give the validation split) (default: {DEFAULT_CALIBRATION}, or half "
        "the training split when it is smaller)",
    )
    g.add_argument(
        "--int8-method",
        metavar="METHOD",
        help=f"calibration method: {', '.join(METHODS)} (default: minmax)",
    )
    g.add_argument(
        "--int8-max-drop",
        metavar="PP",
        help="largest accuracy drop allowed, in percentage points on validation images drawn from the training "
        f"split; the test drop is reported and checked too (default: {DEFAULT_MAX_DROP:g})",
    )


def problem(args: argparse.Namespace) -> str | None:
    """The first INT8 option that is wrong, as ``<what>, expected <what>``; None when none is."""
    given = [f"--{o.replace('_', '-')}" for o in _OPTIONS if getattr(args, o, None) is not None]
    if given and not args.int8:
        return f"{given[0]} was given without --int8, expected --int8 as well (or no INT8 options)"
    return config_problem(args.int8_calibration, args.int8_method, args.int8_max_drop)


def config_problem(calibration: int | None, method: str | None, max_drop: Any) -> str | None:
    """As ``problem``, for the values a ``JobConfig`` holds (the stage checks them again)."""
    if calibration is not None and not 1 <= calibration <= MAX_CALIBRATION:
        return f"--int8-calibration {calibration} is out of range, expected 1 to {MAX_CALIBRATION}"
    if method is not None and method not in METHODS:
        return f"--int8-method {str(method)[:40]!r} is unknown, expected one of {', '.join(METHODS)}"
    if max_drop is not None:
        value = _number(max_drop)
        if value is None:
            return (
                f"--int8-max-drop {str(max_drop)[:40]!r} is not a finite number, expected percentage points such as 1.0"
            )
        if not 0 <= value <= MAX_DROP:
            return f"--int8-max-drop {value:g} is out of range, expected 0 to {MAX_DROP:g} percentage points"
    return None


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def int8_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``JobConfig`` fields of checked arguments."""
    return {
        "int8": args.int8,
        "int8_calibration": args.int8_calibration,
        "int8_method": args.int8_method or "minmax",
        "int8_max_drop": DEFAULT_MAX_DROP if args.int8_max_drop is None else float(args.int8_max_drop),
    }
