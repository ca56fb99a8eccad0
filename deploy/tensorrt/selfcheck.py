"""``python -m deploy.tensorrt selfcheck [--out DIR]``: the TensorRT path, verified on a GPU machine.

On a machine with a CUDA device and TensorRT 10.x or 11.x it builds engines from
the files of a small AnaNN with BatchNorm, residual and depthwise blocks
(``selfcheck_files``), runs them on images the export never saw and judges them
against PyTorch with the tolerance table (``export.compare``): FP32, FP16 and INT8
engines, refit from new AKPs by weight names (no BatchNorm) and through the ONNX
parser's refitter (BatchNorm fused), the live file with AKPs as inputs fed new
AKPs, a weight-stripped plan refilled at load, and ONNX Runtime's TensorRT
provider without fallback. It writes ``selfcheck.json`` (the verdict) into
``--out`` and prints one line.

Exit codes: 0 every check passed (checks that cannot run are listed), 1 a check
failed, 2 bad usage, 3 not available (no TensorRT or no CUDA device; nothing built).
Nothing here has run on a GPU yet: no machine of this project has one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from deploy.tensorrt.selfcheck_checks import NotAvailable

__all__ = ["EXIT_FAILED", "EXIT_NOT_AVAILABLE", "EXIT_PASSED", "CheckResult", "NotAvailable", "run", "verdict"]

EXIT_PASSED, EXIT_FAILED, EXIT_NOT_AVAILABLE = 0, 1, 3
VERDICT_FILE = "selfcheck.json"


@dataclass
class CheckResult:
    status: str  # "passed" | "failed" | "not-available"
    detail: str
    parity: dict[str, Any] | None = None


def run_checks(ctx: Any, checks: dict[str, Callable[[Any], dict[str, Any]]]) -> dict[str, CheckResult]:
    """Every check on ``ctx``; one that raises fails alone (its message kept), the others still run."""
    results = {}
    for name, check in checks.items():
        try:
            parity = check(ctx)
        except NotAvailable as e:
            results[name] = CheckResult("not-available", str(e))
        except Exception as e:  # a TensorRT or CUDA error is this check's failure, reported, not raised
            results[name] = CheckResult("failed", f"{type(e).__name__}: {str(e).strip().splitlines()[0]}")
        else:
            results[name] = CheckResult("passed" if parity.get("passed") else "failed", _detail(parity), parity)
    return results


def _detail(parity: dict[str, Any]) -> str:
    if "error" in parity:
        return parity["error"]
    return (
        f"max abs {parity['max_abs_err']:.3g}, max rel {parity['max_rel_err']:.3g}, "
        f"top-1 agreement {parity['top1_agreement']:.3f}"
    )


def verdict(available: bool, reason: str, results: dict[str, CheckResult], rules: dict | None = None) -> dict:
    """The JSON verdict: availability, each check, the version's rules, the exit code and the one-line summary."""
    counts = {s: [n for n, r in results.items() if r.status == s] for s in ("passed", "failed", "not-available")}
    if not available:
        code, line = EXIT_NOT_AVAILABLE, f"selfcheck: not available: {reason}"
    else:
        code = EXIT_FAILED if counts["failed"] or not counts["passed"] else EXIT_PASSED
        line = f"selfcheck: {'FAILED' if code else 'passed'} on {reason}: {len(counts['passed'])}/{len(results)} passed"
        line += "".join(f"; {s}: {', '.join(n)}" for s, n in counts.items() if s != "passed" and n)
    return {
        "available": available,
        "reason": reason,
        "verified_on_gpu": available and bool(counts["passed"]),
        "checks": {n: asdict(r) for n, r in results.items()},
        "rules": rules,
        "exit_code": code,
        "summary": line,
    }


def write_verdict(out: Path, data: dict) -> Path:
    from export.atomic import atomic_output

    out.mkdir(parents=True, exist_ok=True)
    with atomic_output(out / VERDICT_FILE) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out / VERDICT_FILE


def run(out: str | Path, *, availability: Callable[[], tuple[bool, str]] | None = None) -> dict:
    """The self-check into ``out``: the verdict (also written as ``out/selfcheck.json``)."""
    from deploy.tensorrt.versions import available, trt_version, version_rules

    out = Path(out)
    ok, reason = (availability or available)()
    if not ok:
        return _written(out, verdict(False, reason, {}))
    from deploy.tensorrt.selfcheck_checks import CHECKS
    from deploy.tensorrt.selfcheck_files import prepare  # torch and onnx load only now

    ctx = prepare(out / "files")
    results = run_checks(ctx, CHECKS)
    return _written(out, verdict(True, reason, results, version_rules(trt_version()[0][0])))


def _written(out: Path, data: dict) -> dict:
    write_verdict(out, data)
    return data
