"""INT8: the Q/DQ file made from the static file, its accuracy controlled (``deploy.int8``). Report key ``int8``.

Runs after export and before parity, only with ``--int8``. Images come from the
training split, class-balanced (``pipeline.datasets.base.eval_subset``), never
from the test split: the first ``N`` are the calibration images, the next ones
(disjoint from them, at most as many as the parity images) the validation split
on which ``--int8-max-drop`` is enforced. The test images then measure the file:
float and INT8 test accuracy and their difference.

The check ``int8-accuracy`` passes when the validation drop is within the bound,
the validation top-1 agreement with the float file reaches the ``int8`` row of the
tolerance table (the parity rows' own bar), and the test images meet both too. Only then is the file ``model.static-int8.onnx``
(``ctx.int8_path``, which the parity, latency and later stages use); otherwise
it is kept as ``model.static-int8.failed.onnx`` (the most accurate mix tried),
for inspection, and no stage deploys it. The run still completes; the verdict
fails on the check.
"""

from __future__ import annotations

import os
from typing import Any

from pipeline.errors import UserError
from pipeline.stages.base import JobConfig, RunContext, StageResult

NAME = "int8"
TITLE = "INT8 file, accuracy-controlled"
INT8_FILE = "model.static-int8.onnx"
FAILED_FILE = "model.static-int8.failed.onnx"
NOT_REQUESTED = "not requested (--int8)"
CHECK = "int8-accuracy"


def check(cfg: JobConfig) -> None:
    from pipeline.int8_args import config_problem

    if cfg.int8:
        problem = config_problem(cfg.int8_calibration, cfg.int8_method, cfg.int8_max_drop)
        if problem:
            raise UserError(problem)


def run(ctx: RunContext) -> StageResult:
    from deploy.int8.quantize import NonFiniteActivations
    from deploy.int8.sensitivity import controlled_int8
    from pipeline.int8_data import draw_images

    cfg = ctx.cfg
    if not cfg.int8:
        ctx.log(f"      {NOT_REQUESTED}")
        return StageResult("not-available", NOT_REQUESTED, sections={"int8": None})
    calibration, (x_val, y_val) = draw_images(ctx.data, cfg.int8_calibration, checkpoint=cfg.checkpoint)
    ctx.log(f"      {cfg.int8_method} calibration on {len(calibration)} training images, bound on {len(x_val)} others")
    out = ctx.staging / INT8_FILE
    try:
        result = controlled_int8(
            ctx.onnx["static"],
            out,
            calibration,
            x_val,
            y_val,
            cfg.int8_max_drop,
            cfg.int8_method,
            ctx.threads,
            _log(ctx),
        )
    except NonFiniteActivations as e:
        raise UserError(str(e)) from None
    section = _section(ctx, result, len(calibration), len(x_val))
    for line in console_lines(section):
        ctx.log(f"      {line}")
    passed = section["passed"]
    if passed:
        ctx.int8_path, files = out, {"onnx:static-int8": INT8_FILE}
    else:
        os.replace(out, ctx.staging / FAILED_FILE)
        files = {"onnx:static-int8-failed": FAILED_FILE}
    section["file"] = INT8_FILE if passed else FAILED_FILE
    reason = None if passed else section["reason"]
    return StageResult(
        "ok" if passed else "failed",
        reason,
        sections={"int8": section},
        files=files,
        checks={CHECK: passed},
        reasons={CHECK: reason} if reason else {},
    )


def _log(ctx: RunContext):
    return lambda msg: ctx.log(f"      {msg}")


def _section(ctx: RunContext, result: Any, n_cal: int, n_val: int) -> dict[str, Any]:
    from deploy.int8.sensitivity import accuracy, logits

    y = ctx.data.y_test.numpy()
    float_logits, int8_logits = (logits(p, ctx.x_test, ctx.threads) for p in (ctx.onnx["static"], result.path))
    float_test, int8_test = accuracy(float_logits, y), accuracy(int8_logits, y)
    test = {"images": len(ctx.x_test), "float": float_test, "int8": int8_test, "drop": float_test - int8_test}
    test["agreement"] = float((float_logits.argmax(-1) == int8_logits.argmax(-1)).mean())
    validation = {
        "images": n_val,
        "float": result.float_accuracy,
        "int8": result.int8_accuracy,
        "drop": result.drop,
        "agreement": result.agreement,
        "min_agreement": result.min_agreement,
    }
    reason = _failure(result, test)
    passed = reason is None
    modules = module_names(ctx.onnx["static"])
    return {
        "method": ctx.cfg.int8_method,
        "calibration_images": n_cal,
        "max_drop": result.max_drop,
        "validation": validation,
        "test": test,
        "layers": result.layers,
        "single_channel_fp32": result.single_channel,
        "fp32_layers": [{"layer": n, "module": modules.get(n), "sensitivity": s} for n, s in result.excluded],
        "sensitivity": result.sensitivity,
        "tried": result.tried,
        "passed": passed,
        "reason": reason,
    }


def _failure(result: Any, test: dict[str, Any]) -> str | None:
    """Why the ``int8-accuracy`` check fails, in one sentence, or None when it passes."""
    bound = result.max_drop
    if not result.met_bound:
        return (
            f"no mix of INT8 and FP32 layers met the {bound:g} pp bound and {100 * result.min_agreement:g} % top-1 "
            f"agreement on the validation images (best: {result.drop:.2f} pp, {100 * result.agreement:.1f} % "
            f"with {len(result.excluded)} of {len(result.layers)} layers in FP32)"
        )
    if len(result.excluded) >= len(result.layers):
        # Accuracy control's last resort keeps every layer FP32: that file has no Q/DQ node left, so its
        # "int8" rows, latency and fastest-runtime entry would present FP32 arithmetic as INT8.
        return (
            f"the file holds no INT8 layer: {len(result.excluded)} of {len(result.layers)} quantizable layers "
            f"kept in FP32 to meet the {bound:g} pp bound"
        )
    if test["drop"] > bound:
        return f"the test accuracy dropped {test['drop']:.2f} pp, more than the {bound:g} pp bound the validation images met"
    if test["agreement"] < result.min_agreement:
        return (
            f"the INT8 top-1 agrees with the float file's on {100 * test['agreement']:.2f} % of the test images, "
            f"below the {100 * result.min_agreement:g} % the validation images met"
        )
    return None


def _single_channel_line(s: dict[str, Any]) -> list[str]:
    names = s.get("single_channel_fp32") or []
    if not names:
        return []
    listed = ", ".join(f"`{n}`" for n in names)
    return ["", f"Always FP32, reading one input channel (ONNX Runtime's INT8 kernel is slower there): {listed}."]


def module_names(static_path) -> dict[str, str]:
    """ONNX node name -> the PyTorch module it came from, read from its weight's initializer (``conv2.weight``)."""
    import onnx

    graph = onnx.load(str(static_path), load_external_data=False).graph
    weights = {i.name for i in graph.initializer}
    return {
        n.name: n.input[1].removesuffix(".weight")
        for n in graph.node
        if n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1 and n.input[1] in weights
    }


def _layer_name(entry: dict[str, Any]) -> str:
    """``conv2 (node_conv2d_1)``: the module a person knows, and the node the file knows."""
    module = entry.get("module")
    return f"{module} ({entry['layer']})" if module else entry["layer"]


def console_lines(section: dict[str, Any]) -> list[str]:
    t, v = section["test"], section["validation"]
    kept = ", ".join(_layer_name(e) for e in section["fp32_layers"]) or "none"
    verdict = "pass" if section["passed"] else f"FAIL: {section['reason']}"
    return [
        f"validation drop {v['drop']:.2f} pp (bound {section['max_drop']:g}), top-1 agreement "
        f"{100 * v['agreement']:.1f} % (at least {100 * v['min_agreement']:g} %); layers kept in FP32: {kept}",
        f"test accuracy float {t['float']:.2f} %, INT8 {t['int8']:.2f} % (drop {t['drop']:.2f} pp)  {verdict}",
    ]


def markdown(report: dict[str, Any]) -> list[str]:
    s = report.get("int8")
    if not s:
        return []
    v, t = s["validation"], s["test"]
    lines = ["", "## INT8", ""]
    lines.append(
        f"`{s.get('file')}`: Q/DQ from the static file (ONNX Runtime static quantization; per-channel symmetric INT8 "
        f"weights, symmetric per-tensor INT8 activations), {s['method']} calibration on {s['calibration_images']} "
        f"training images; bound {s['max_drop']:g} pp enforced on {v['images']} other training images."
    )
    lines.append(
        f"A mix is accepted when its validation drop is within the bound and its top-1 agrees with the float "
        f"file's on at least {100 * v['min_agreement']:g} % of the validation images (the int8 row of the tolerance table)."
    )
    lines += ["", "| images | float top-1 % | INT8 top-1 % | drop (pp) | top-1 agreement % |", "|---|---|---|---|---|"]
    for name, r in (("validation (training split)", v), ("test", t)):
        row = f"| {name}, {r['images']} | {r['float']:.2f} | {r['int8']:.2f} | {r['drop']:.2f} |"
        lines.append(f"{row} {100 * r['agreement']:.2f} |")
    lines.append("")
    if s["fp32_layers"]:
        lines += ["Layers kept in FP32 (sensitivity: relative logit error with that layer alone in INT8):", ""]
        lines += [f"- `{_layer_name(e)}`: {e['sensitivity']:.4g}" for e in s["fp32_layers"]]
    else:
        lines.append(f"Every one of the {len(s['layers'])} quantizable Conv/Gemm layers is INT8.")
    lines += _single_channel_line(s)
    lines += ["", f"Result: {'pass' if s['passed'] else 'FAILED: ' + s['reason']}."]
    return lines
