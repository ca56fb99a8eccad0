"""Output comparison: the tolerance table and the comparator (Polygraphy's), in one place.

It lives in ``export`` because ``to_onnx(verify=True)`` is its first user and
package dependencies go one way (acl <- export <- deploy <- pipeline); the
deploy runners and the pipeline's parity report use the same table and function.

Tolerances, one row per precision (``TOLERANCES``). An output element passes when
``|out - ref| <= atol`` or ``|out - ref| <= rtol * |ref|`` (Polygraphy's
``elemwise`` check); a result passes when every element passes, every output is
finite, and the top-1 agreement with the reference is at least ``min_top1``.

=========  ======  ======  ========  ============================================
precision  atol    rtol    min_top1  why
=========  ======  ======  ========  ============================================
fp32       1e-4    1e-3    0.995     float32 reassociation in kernels, convs and
                                     folded BatchNorm; observed errors O(1e-6)
                                     on logits of O(10)
fp16       5e-2    2e-2    0.99      half precision keeps ~3 decimal digits
bf16       1e-1    5e-2    0.98      bfloat16 keeps 8 significant bits (~2.4
                                     digits), 8x coarser than fp16. Measured with
                                     every op in bf16 (PyTorch on the CPU, a worse
                                     case than OpenVINO's bf16, which keeps
                                     inputs, outputs and some ops in f32): trained
                                     AnaNN-LeNet max abs 0.165 on logits up to 26,
                                     top-1 99.7 %; AnaNN-ResNet-18-CIFAR max abs
                                     0.071 on logits up to 2.4 (2.9 % of the
                                     range), top-1 98.4 %; both fail fp16's
                                     tolerance. Near-ties flip: min_top1 0.98
int8       --      --      0.97      8-bit weights and activations: element-wise
                                     errors are a tenth of the logit range and
                                     are reported, not judged (``elementwise``
                                     False); top-1 agreement decides. Measured:
                                     trained AnaNN-LeNet (digits, conv2 kept FP32
                                     by accuracy control) max abs 5.5 on logits
                                     up to 26, top-1 98.9 %, test accuracy -0.28
                                     pp. The accuracy bound is the INT8 stage's
                                     own check (``--int8-max-drop``)
=========  ======  ======  ========  ============================================

>>> import numpy as np
>>> ref = np.array([[1.0, 2.0], [3.0, 0.5]], dtype=np.float32)
>>> r = compare_outputs(ref, ref + 1e-6, TOLERANCES["fp32"])
>>> r["passed"], r["top1_agreement"]
(True, 1.0)
>>> compare_outputs(ref, ref * np.nan, TOLERANCES["fp32"])["passed"]
False

Rounding to bfloat16 (dropping the low 16 bits) fails fp32 and passes bf16:

>>> logits = np.random.default_rng(0).normal(0, 8, (64, 10)).astype(np.float32)
>>> bf16 = (logits.view(np.uint32) & 0xFFFF0000).view(np.float32)
>>> [compare_outputs(logits, bf16, TOLERANCES[p])["passed"] for p in ("fp32", "bf16")]
[False, True]
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
    elementwise: bool = True
    """False: max abs and rel error are reported, never judged (``atol``/``rtol`` unused); top-1 agreement decides."""


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_top1=0.995),
    "fp16": Tolerance(atol=5e-2, rtol=2e-2, min_top1=0.99),
    "bf16": Tolerance(atol=1e-1, rtol=5e-2, min_top1=0.98),
    "int8": Tolerance(atol=0.0, rtol=0.0, min_top1=0.97, elementwise=False),
}


def tolerance_table() -> list[dict[str, Any]]:
    return [{"precision": k, **asdict(v)} for k, v in TOLERANCES.items()]


def compare_outputs(ref: np.ndarray, out: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    """Statistics and verdict for one output against the reference, via Polygraphy's comparator.

    Returns max abs, max rel and mean abs error, top-1 agreement (over the last
    axis), the tolerance used and ``passed``. Any non-finite value in either array
    fails the comparison (two NaN outputs agree on nothing), with ``error`` saying so.
    """
    from polygraphy.comparator.struct import IterationResult
    from polygraphy.logger import G_LOGGER

    try:
        from polygraphy.comparator import SimpleCompareFunc
    except ImportError:  # Polygraphy < 0.50
        from polygraphy.comparator import CompareFunc

        SimpleCompareFunc = CompareFunc.simple

    if out.shape != ref.shape:
        return {"passed": False, "error": f"shape {list(out.shape)} differs from the reference's {list(ref.shape)}"}
    bad = {name: int(np.size(a) - np.isfinite(a).sum()) for name, a in (("output", out), ("reference", ref))}
    if any(bad.values()):
        what = ", ".join(f"{n} {name} values" for name, n in bad.items() if n)
        return {"passed": False, "error": f"non-finite values: {what} are NaN or infinite"}
    compare = SimpleCompareFunc(atol=tol.atol, rtol=tol.rtol, check_error_stat="elemwise")
    # Polygraphy measures relative error against the second result: the reference.
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):  # the verdict is returned, not logged
        result = compare(
            IterationResult({"logits": out.astype(np.float32)}, runner_name="candidate"),
            IterationResult({"logits": ref.astype(np.float32)}, runner_name="reference"),
        )["logits"]
    top1 = float(np.mean(ref.argmax(-1) == out.argmax(-1)))
    return {
        "max_abs_err": float(result.max_absdiff),
        "max_rel_err": float(result.max_reldiff),
        "mean_abs_err": float(result.mean_absdiff),
        "top1_agreement": top1,
        "atol": tol.atol,
        "rtol": tol.rtol,
        "min_top1": tol.min_top1,
        **({} if tol.elementwise else {"elementwise": False}),
        "elementwise_passed": bool(result),
        "passed": (bool(result) or not tol.elementwise) and top1 >= tol.min_top1,
    }
