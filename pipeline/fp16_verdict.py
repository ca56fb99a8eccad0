"""The FP16 range analysis in the verdict: its checks, the parity rows it speaks for, warnings, console lines.

Decided (issue 18, item 2):

* Each form of the analysis (``deploy.fp16_range.FORMS``) is a check of the
  verdict, ``fp16-range:onnx-fp16`` and ``fp16-range:tensorrt``: it fails when the
  form computes a value beyond FP16's range on the test images (a weight or an
  output above 65504: Inf or NaN on an FP16 device), with the layers named.
* A parity row that stands for a failed form fails too, whatever its numbers
  (``fp16_overflow`` says why): ``*:static-fp16`` rows run the FP16 file,
  ``trt-fp16:*`` and ``ort-trt:static-fp16`` are TensorRT's FP16 builds.
* Layers the FP16 file keeps in FP32 (weights or outputs beyond FP16: never
  clipped) are not a failure, the file is right; they are a warning of the
  verdict, named, on the console and in the report's headline.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FORM_TITLES", "add_to_verdict", "checks", "console_lines", "form_of", "mark_rows", "warnings"]

FORM_TITLES = {"onnx-fp16": "the FP16 file", "tensorrt": "TensorRT FP16 (BatchNorm folded)"}
SHOWN = 5  # places named in one line; the report's table has them all


def form_of(key: str) -> str | None:
    """The form of the FP16 analysis a parity row stands for, or None (not an FP16 row)."""
    backend, _, mode = key.partition(":")
    if backend == "trt-fp16" or key == "ort-trt:static-fp16":
        return "tensorrt"
    if mode == "static-fp16":
        return "onnx-fp16"
    return None


def _places(where: dict[str, float]) -> str:
    ranked = sorted(where.items(), key=lambda kv: -kv[1] if kv[1] == kv[1] else float("-inf"))
    text = ", ".join(f"`{k}` ({v:.3g})" for k, v in ranked[:SHOWN])
    return text + (f" and {len(ranked) - SHOWN} more" if len(ranked) > SHOWN else "")


def checks(fp16: dict[str, Any] | None) -> dict[str, str | None]:
    """``{"fp16-range:<form>": None (passed) or the reason it failed}``."""
    if not fp16:
        return {}
    out = {}
    for form, where in fp16["overflow"].items():
        out[f"fp16-range:{form}"] = (
            f"{FORM_TITLES[form]} goes beyond FP16's 65504 (Inf or NaN in FP16) on the test images at "
            f"{len(where)} place(s): {_places(where)}"
            if where
            else None
        )
    return out


def _layer_names(fp16: dict[str, Any]) -> dict[str, str]:
    return {r["node"]: r["name"] for r in fp16.get("layers", [])}


def warnings(fp16: dict[str, Any] | None) -> list[str]:
    """The layers the FP16 file keeps in FP32 because of their range, named (the first few with reasons)."""
    if not fp16 or not fp16.get("kept_fp32"):
        return []
    names = _layer_names(fp16)
    kept = [(names.get(n, n), why) for n, why in fp16["kept_fp32"].items()]
    shown = "; ".join(f"`{name}` ({why})" for name, why in kept[:SHOWN])
    more = f"; and {len(kept) - SHOWN} more (see *FP16 range*)" if len(kept) > SHOWN else ""
    return [
        f"FP16 file: {len(kept)} node(s) kept in FP32, not clipped, because their range exceeds FP16: {shown}{more}"
    ]


def mark_rows(parity: dict[str, Any], fp16: dict[str, Any] | None) -> list[str]:
    """Fail every parity row that stands for a form predicted to overflow; the keys marked."""
    failing = {k.removeprefix("fp16-range:"): why for k, why in checks(fp16).items() if why}
    marked = []
    for key, row in parity.items():
        form = form_of(key)
        if form in failing and row.get("available", True):
            row["passed"] = False
            row["fp16_overflow"] = failing[form]
            marked.append(key)
    return marked


def add_to_verdict(verdict: dict[str, Any], fp16: dict[str, Any] | None) -> dict[str, Any]:
    """``verdict`` with the FP16 range checks counted, their reasons (``reasons``) and ``warnings``."""
    found = checks(fp16)
    failed = [*verdict["failed"], *(k for k, why in found.items() if why)]
    return {
        **verdict,
        "passed": not failed,
        "checks": verdict["checks"] + len(found),
        "failed": failed,
        "reasons": {k: why for k, why in found.items() if why},
        "warnings": warnings(fp16),
    }


def console_lines(fp16: dict[str, Any] | None, marked: list[str]) -> list[str]:
    """What the console says about FP16: each form's result, rows failed by it, layers kept FP32."""
    if not fp16:
        return []
    lines = []
    for key, why in checks(fp16).items():
        form = key.removeprefix("fp16-range:")
        lines.append(
            f"FP16 range, {FORM_TITLES[form]}: " + (f"FAIL: {why}" if why else "within FP16 on the test images")
        )
    if marked:
        lines.append(f"FP16 rows failed by the range check: {', '.join(marked)}")
    return lines + [f"warning: {w}" for w in warnings(fp16)]
