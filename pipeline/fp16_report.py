"""The report's *FP16 range* section and the FP16 part of its headline (``report.json`` key ``fp16_range``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.fp16_verdict import FORM_TITLES

__all__ = ["headline_lines", "section"]

RUNS = {
    "onnx-fp16": "`*:static-fp16` rows of ONNX Runtime's CPU and CUDA providers; TensorRT 11 (strongly typed)",
    "tensorrt": "`trt-fp16:*` (TensorRT 10's FP16 flag), `ort-trt:static-fp16` (`trt_fp16_enable` of ONNX "
    "Runtime's TensorRT provider, released for TensorRT 10)",
}
CPU_ROW = (
    "Where the FP16 file has an FP16 op without an FP16 CPU kernel (Conv and Gemm among them), ONNX Runtime's "
    "CPU provider casts its inputs and weights up, computes in FP32 and, when the next op takes FP32, never "
    "rounds its output to FP16. So this row proves that the FP16 file loads, that its weights survive rounding "
    "to FP16 and that its structure is right; it does not prove FP16 arithmetic, and an FP16 overflow of such "
    "an op's output cannot show here: the range check above is what predicts that."
)


def headline_lines(v: dict[str, Any]) -> list[str]:
    """Sub-bullets of the headline: why each FP16 range check failed, and the verdict's warnings."""
    lines = [f"  - **{k}: FAILED**: {why}" for k, why in (v.get("reasons") or {}).items()]
    return lines + [f"  - **warning**: {w}" for w in v.get("warnings") or []]


def _counts(c: dict[str, int]) -> str:
    return ", ".join(f"{op} x{n}" for op, n in c.items()) or "nothing"


def _computed(fp16: dict[str, Any]) -> list[str]:
    rows = fp16.get("computed") or {}
    if not rows:
        return []
    lines = ["", "What each FP16 row that ran here computed (from ONNX Runtime's own profile of one run):", ""]
    for key, c in rows.items():
        if c is None:
            why = "TensorRT picks its kernels inside the engine" if "trt" in key else "no session (see its row)"
            lines.append(f"- `{key}`: not recorded: {why}")
            continue
        text = f"- `{key}`: FP16: {_counts(c['fp16'])}; FP32: {_counts(c['fp32'])}"
        if c.get("opaque"):
            text += f"; inside TensorRT (precision not visible): {_counts(c['opaque'])}"
        if c["fp32"] and key.startswith("ort-cpu"):
            text += ". " + CPU_ROW
        lines.append(text + ("" if text.endswith(".") else "."))
    return lines


def _forms(fp16: dict[str, Any]) -> list[str]:
    lines = ["| form | stands for | files | result |", "|---|---|---|---|"]
    for form, what in fp16["forms"].items():
        files = ", ".join(f"`{f}`" for f in fp16["applies_to"].get(form, [])) or "not written (no ONNX Runtime row)"
        why = (fp16.get("checks") or {}).get(f"fp16-range:{form}")
        result = f"**FAIL**: {why}" if why else "within FP16 on the test images"
        lines.append(f"| **{FORM_TITLES[form]}**: {what} | {RUNS[form]} | {files} | {result} |")
    return lines


def _kept(fp16: dict[str, Any]) -> list[str]:
    names = {r["node"]: r["name"] for r in fp16["layers"]}
    head = "Nodes the FP16 file keeps in FP32 because their weights or outputs exceed FP16 (a weight is never clipped)"
    if not fp16["kept_fp32"]:
        return ["", f"{head}: none. By policy it also keeps BatchNormalization and the `ai.acl` generators FP32."]
    lines = ["", f"{head}; by policy it also keeps BatchNormalization and the `ai.acl` generators FP32:", ""]
    for node, why in fp16["kept_fp32"].items():
        lines.append(f"- `{names.get(node, node)}` (node `{node}`): {why}")
    return lines


def _table(fp16: dict[str, Any], fmt: Callable[[Any], str]) -> list[str]:
    lines = [
        "",
        "| layer | form | computed in | max abs weight | weights below FP16 normal | max abs output | "
        "FP16 rel. error | flags |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in fp16["layers"]:
        for form, f in r["forms"].items():
            notes = [*f["flags"], *([f["note"]] if f["note"] else [])]
            lines.append(
                f"| `{r['name']}` | {form} | {f['precision'].upper()} | {fmt(f['weight_max_abs'])} | "
                f"{f['weight_subnormal_share'] * 100:.2f} % | {fmt(f['activation_max_abs'])} | "
                f"{fmt(f['fp16_rel_error']) if f['fp16_rel_error'] is not None else 'FP32'} | "
                f"{'; '.join(notes) or 'none'} |"
            )
    return lines


def section(fp16: dict[str, Any] | None, fmt: Callable[[Any], str]) -> list[str]:
    """The *FP16 range* section; ``fmt`` formats a number as the rest of the report does."""
    if not fp16:
        return []
    lines = [
        "",
        "## FP16 range",
        "",
        f"What the files compute, read from the files: the FP32 static file run in ONNX Runtime on the "
        f"{fp16['images']} test images with every intermediate tensor exposed (BatchNorm the exporter folded "
        "into a convolution is folded here too), weights from its initializers; each Conv, Gemm and MatMul "
        "also emulated in FP16 (inputs, weights and output rounded to FP16, sums in FP32, as FP16 GPU kernels "
        f"do) on the first {fp16['emulated_images']}. FP16 holds |x| up to 65504; beyond is Inf. Each form "
        "is a check of the verdict, and an FP16 row that stands for a failed form fails with it.",
        "",
    ]
    lines += _forms(fp16) + _kept(fp16) + _table(fp16, fmt) + _computed(fp16)
    return lines
