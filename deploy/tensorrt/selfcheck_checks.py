"""The self-check's checks (``CHECKS``): each builds engines from ``selfcheck_files`` and returns its parity.

A check returns ``export.compare.compare_outputs``' entry (engine output against
PyTorch at the tolerance of its precision) or raises ``NotAvailable``. Written to
TensorRT 10.x and 11.x's documented Python API through ``deploy.tensorrt``; none
of it has run on a GPU here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deploy.tensorrt.selfcheck_files import BATCHES, SelfCheckFiles

__all__ = ["CHECKS", "NotAvailable"]


class NotAvailable(Exception):
    """A check that cannot run on this machine; the message is the reason."""


def _reference(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def _parity(runner: Any, ctx: SelfCheckFiles, reference_model: Any, precision: str, extra=None) -> dict:
    import export
    from export.compare import TOLERANCES, compare_outputs

    with runner as r:
        got = r.infer({export.INPUT_NAME: ctx.images, **(extra or {})})[export.OUTPUT_NAME].copy()
    return compare_outputs(_reference(reference_model, ctx.images), got, TOLERANCES[precision])


def _engine(ctx: SelfCheckFiles, kind: str, name: str, precision: str = "fp32", **kw: Any) -> str:
    from deploy.tensorrt.build import build_engine

    folder = ctx.folder.parent / "engines"
    info = build_engine(
        ctx.files[kind],
        folder / name,
        precision=precision,
        batch_sizes=BATCHES,
        timing_cache=folder / "timing.cache",
        **kw,
    )
    return info.engine


def _trt(engine: str, **kw: Any) -> Any:
    from deploy.tensorrt.runner import TrtRunner, engine_loader

    return TrtRunner(engine_loader(engine, **kw))


def fp32(ctx: SelfCheckFiles) -> dict:
    return _parity(_trt(_engine(ctx, "static", "static.fp32.engine")), ctx, ctx.model, "fp32")


def fp16(ctx: SelfCheckFiles) -> dict:
    engine = _engine(ctx, "static", "static.fp16.engine", "fp16", fp16_onnx=ctx.files["static-fp16"])
    return _parity(_trt(engine), ctx, ctx.model, "fp16")


def int8(ctx: SelfCheckFiles) -> dict:
    if "static-int8" not in ctx.files:
        raise NotAvailable("no INT8 file: ONNX Runtime's quantization tools are missing")
    return _parity(_trt(_engine(ctx, "static-int8", "static.int8.engine", "int8")), ctx, ctx.model, "int8")


def refit_plain(ctx: SelfCheckFiles) -> dict:
    """Refit by weight names (``trt.Refitter.set_named_weights``): ACLs that feed no BatchNorm."""
    from polygraphy.backend.trt import EngineFromBytes

    from deploy.tensorrt.refit import refit
    from deploy.tensorrt.runner import TrtRunner

    data = open(_engine(ctx, "plain-static", "plain.refit.engine", refittable=True), "rb").read()
    runner = TrtRunner(lambda: refit(EngineFromBytes(data)(), ctx.plain_moved))
    return _parity(runner, ctx, ctx.plain_moved, "fp32")


def refit_batchnorm(ctx: SelfCheckFiles) -> dict:
    """Refit through the ONNX parser's refitter from the static file of the new AKPs (BatchNorm fused)."""
    from polygraphy.backend.trt import EngineFromBytes

    from deploy.tensorrt.refit import refit_from_onnx, refit_weights, with_weights
    from deploy.tensorrt.runner import TrtRunner

    data = open(_engine(ctx, "static", "static.refit.engine", refittable=True), "rb").read()
    new_static = with_weights(ctx.files["static"], refit_weights(ctx.moved), ctx.folder / "model.static.moved.onnx")
    runner = TrtRunner(lambda: refit_from_onnx(EngineFromBytes(data)(), new_static))
    return _parity(runner, ctx, ctx.moved, "fp32")


def live_akp_inputs(ctx: SelfCheckFiles) -> dict:
    """The live file with AKPs as required inputs, fed the new AKPs."""
    engine = _engine(ctx, "live-akp-required", "live-akp.fp32.engine")
    return _parity(_trt(engine), ctx, ctx.moved, "fp32", extra=ctx.moved_akps)


def weight_stripped(ctx: SelfCheckFiles) -> dict:
    engine = _engine(ctx, "static", "static.stripped.engine", strip_weights=True)
    return _parity(_trt(engine, stripped_from_onnx=ctx.files["static"]), ctx, ctx.model, "fp32")


def ort_trt(ctx: SelfCheckFiles) -> dict:
    """ONNX Runtime's TensorRT provider, refused when ONNX Runtime falls back (``deploy.ep_check``)."""
    import onnxruntime as ort

    from deploy.runners import OrtRunner, ort_providers

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise NotAvailable(f"onnxruntime {ort.__version__} has no TensorrtExecutionProvider (install onnxruntime-gpu)")
    providers = ort_providers("tensorrt", cache_dir=ctx.folder.parent / "ort-trt-cache")
    return _parity(OrtRunner(ctx.files["static"], providers), ctx, ctx.model, "fp32")


CHECKS = {
    "engine-fp32": fp32,
    "engine-fp16": fp16,
    "engine-int8": int8,
    "refit-plain": refit_plain,
    "refit-after-batchnorm": refit_batchnorm,
    "live-akp-inputs": live_akp_inputs,
    "weight-stripped": weight_stripped,
    "ort-trt": ort_trt,
}
