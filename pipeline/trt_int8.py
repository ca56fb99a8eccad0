"""The run's INT8 file as TensorRT builds it: its TensorRT form beside the run's files, checked against the parser.

ONNX Runtime's Q/DQ file stores Conv/Gemm biases as INT32 behind
``DequantizeLinear``, which TensorRT's parser rejects; ``deploy.int8.tensorrt``
folds them into the float32 values they stand for. The form is written as
``model.static-int8.tensorrt.onnx`` (files key ``onnx:static-int8-tensorrt``), so
that the replay commands of TensorRT have a file they can build; the engines of
the ``trt:static-int8`` row fold the same way beside themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FORM_KEY", "section_entry", "tensorrt_form_check"]

FORM_KEY = "onnx:static-int8-tensorrt"


def tensorrt_form_check(int8: Path, staging: Path) -> tuple[dict[str, list[str]], Path | None]:
    """``({label: parser problems}, the TensorRT form written in staging or None)`` for the run's INT8 file.

    The label names the file TensorRT builds, as ``trt_check``'s labels do; when
    the form cannot be made (a Q/DQ rule it cannot fix, such as a non-zero zero
    point), the problems of the INT8 file itself are reported and nothing is written.
    """
    import onnx

    from deploy.int8.tensorrt import TENSORRT_SUFFIX, qdq_problems, tensorrt_form
    from deploy.tensorrt import check_onnx
    from export.passes import save

    model = onnx.load(str(int8))
    form, folded = tensorrt_form(model)
    problems = qdq_problems(form) + check_onnx(form)
    if problems or not folded:
        return {int8.name: qdq_problems(model) + check_onnx(model)}, None
    dst = save(form, staging / (int8.name.removesuffix(".onnx") + TENSORRT_SUFFIX))
    label = f"{int8.name} (as TensorRT builds it: {dst.name}, {len(folded)} INT32 bias DequantizeLinear folded)"
    return {label: []}, dst


def section_entry(found: dict[str, Any], int8: Path | None, staging: Path) -> dict[str, str]:
    """Add the INT8 file's check to ``found`` (``trt_check``'s result); the files written, by key."""
    if int8 is None:
        return {}
    checks, form = tensorrt_form_check(Path(int8), staging)
    found["check"].update(checks)
    return {FORM_KEY: form.name} if form is not None else {}
