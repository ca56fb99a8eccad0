"""Parity of every backend against the source PyTorch model, and latency.

Tolerances, one row per precision (``TOLERANCES``). An output element passes when
``|out - ref| <= atol`` or ``|out - ref| <= rtol * |ref|`` (Polygraphy's
``elemwise`` check); a backend passes when every element passes and the top-1
agreement with the reference is at least ``min_top1``.

=========  ======  ======  ========  ============================================
precision  atol    rtol    min_top1  why
=========  ======  ======  ========  ============================================
fp32       1e-4    1e-3    0.995     float32 reassociation in kernels and convs;
                                     logits of this task are O(10), observed
                                     errors O(1e-6)
fp16       5e-2    2e-2    0.99      half precision keeps ~3 decimal digits
=========  ======  ======  ========  ============================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["TOLERANCES", "Tolerance", "compare_outputs", "tolerance_table"]


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_top1: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1=0.995),
    "fp16": Tolerance(atol=5e-2, rtol=2e-2, min_top1=0.99),
}


def compare_outputs(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Statistics and verdict for one output against the reference, via Polygraphy's comparator."""
    from polygraphy.comparator.struct import IterationResult

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # Polygraphy < 0.50
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple

    if out.shape != ref.shape:
        return {"passed": False, "error": f"shape {list(out.shape)} differs from the reference's {list(ref.shape)}"}
    compare = SimpleCompareFunc(atol=tol.atol, rtol=tol.rtol, check_error_stat="elemwise")
    # Polygraphy measures relative error against the second result: the reference.
    result = compare(
        IterationResult({"logits": out.astype(np.float32)}, runner_name="candidate"),
        IterationResult({"logits": ref.astype(np.float32)}, runner_name="reference"),
    )["logits"]
    top1 = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    return {
        "max_abs_err": result.max_absdiff,
        "max_rel_err": result.max_reldiff,
        "mean_abs_err": result.mean_absdiff,
        "top1_agreement": top1,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "min_top1": tol.min_top1,
        "elementwise_passed": bool(result),
        "passed": bool(result) and top1 >= tol.min_top1,
    }


def tolerance_table() -> list[dict[str, Any]]:
    return [{"precision": k, **asdict(v)} for k, v in TOLERANCES.items()]
