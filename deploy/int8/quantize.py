"""The INT8 Q/DQ file: ONNX Runtime's static quantization of the static file, calibrated on given images.

What the file holds, and why (the project's shared INT8 conventions):

- **pre-processing first** (``quant_pre_process``): shape inference and ONNX
  Runtime's graph optimisation, which folds BatchNorm into the preceding Conv, as
  TensorRT does, so a convolution's weights are quantized once, BatchNorm included;
- **QDQ format** (QuantizeLinear/DequantizeLinear pairs around float ops): what
  TensorRT 10 and 11 build INT8 engines from (explicit quantization), and what
  ONNX Runtime and OpenVINO run as INT8;
- **weights**: INT8, symmetric, one scale per output channel (axis 0 of a Conv
  weight, of a Gemm weight stored ``[out, in]``);
- **activations**: INT8, symmetric (zero point 0: TensorRT's explicit
  quantization accepts no other), one scale per tensor, from the calibration
  method's range (``minmax``, ``entropy`` or ``percentile``);
- **convolutions reading a one-channel tensor stay FP32** (``single_channel_convs``:
  group 1, weight ``[out, 1, kh, kw]``; a depthwise conv reads many channels and
  is quantized). ONNX Runtime's CPU QLinearConv is far slower than its float Conv
  on them: with AnaNN-LeNet's ``conv1`` (1 -> 6 channels, 5x5, 32x32) in INT8 the
  whole file was 19.8x slower than FP32 at batch 32, with it in FP32 2.9x
  (``benchmarks/bench_int8.py``). Such a layer is a small share of a model's
  work, so other runtimes lose little by running it in FP32, and it loses no
  accuracy.

``Quantizer`` keeps the pre-processed model and the calibrated ranges, so files
with different layers left in FP32 (``deploy.int8.sensitivity``) are made without
calibrating again. ``quantize_static_file`` makes one file.

Calibration images whose activations are not finite raise ``NonFiniteActivations``
(a ``ValueError`` whose message is one line) before any range is computed: a NaN
range would give a file that computes nothing useful.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "CALIBRATION_BATCH",
    "METHODS",
    "CalibrationReader",
    "NonFiniteActivations",
    "Quantizer",
    "quantize_static_file",
    "single_channel_convs",
]

METHODS = ("minmax", "entropy", "percentile")
"""Calibration methods, as ``onnxruntime.quantization.CalibrationMethod`` members ``MinMax``, ``Entropy``, ``Percentile``."""
CALIBRATION_BATCH = 16
"""Images per calibration run; ``minmax`` reduces its ranges every ``_MINMAX_FLUSH`` batches, so memory stays bounded."""
_MINMAX_FLUSH = 8
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
"""Ops whose weights are quantized: the layers that ``exclude`` names and sensitivity ranks."""
META_INT8 = "acl_deploy.int8"


class NonFiniteActivations(ValueError):
    """A calibration image drives a tensor of the float model to NaN or infinity (one-line message)."""


class CalibrationReader:
    """``CalibrationDataReader`` over an array (or anything with ``len`` and slicing), in batches."""

    def __init__(self, images: Any, input_name: str, batch: int = CALIBRATION_BATCH) -> None:
        self.images, self.input_name, self.batch = images, input_name, batch
        self.start = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.start >= len(self.images):
            return None
        x = np.ascontiguousarray(self.images[self.start : self.start + self.batch], dtype=np.float32)
        self.start += self.batch
        return {self.input_name: x}

    def rewind(self) -> None:
        self.start = 0

    def __iter__(self):  # qdq_loss_debug iterates its readers
        self.rewind()
        while (batch := self.get_next()) is not None:
            yield batch

    def __len__(self) -> int:
        return len(self.images)


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    if name not in METHODS:
        raise ValueError(f"calibration method {name!r} is unknown, expected one of {', '.join(METHODS)}")
    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy}.get(
        name, CalibrationMethod.Percentile
    )


def layer_names(model: Any, ops: Iterable[str] = QUANTIZED_OPS) -> list[str]:
    """Names of the nodes of ``model`` (a ``ModelProto``) whose op is one of ``ops``, in graph order."""
    ops = set(ops)
    return [n.name for n in model.graph.node if n.op_type in ops]


class Quantizer:
    """The pre-processed static file and its calibration: ``write`` makes Q/DQ files from them.

    Use as a context manager (it owns a temporary folder). Calibrates on the first
    ``write``; later ones reuse the ranges (ONNX Runtime's calibration cache).
    """

    def __init__(
        self,
        static_path: str | Path,
        calibration: Any,
        method: str = "minmax",
        threads: int | None = None,
        single_channel_fp32: bool = True,
    ):
        """``single_channel_fp32=False`` quantizes single-channel convolutions too (to measure what they cost)."""
        import onnx

        if len(calibration) == 0:
            raise ValueError("no calibration images, expected at least one")
        self.method, self.calibration, self.threads = method, calibration, threads
        self.calibrate_method = _method(method)
        self._tmp = Path(tempfile.mkdtemp(prefix="acl-int8."))
        try:
            self.prepared = _preprocess(Path(static_path), self._tmp / "prepared.onnx")
            self.model = onnx.load(str(self.prepared))
            self.input_name = self.model.graph.input[0].name
            check_finite_activations(self.model, calibration, self.input_name, threads)
        except BaseException:
            self.close()
            raise
        self.single_channel = single_channel_convs(self.model) if single_channel_fp32 else []
        self.layers = [n for n in layer_names(self.model) if n not in self.single_channel]
        self._cache = self._tmp / "ranges.json"

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def workdir(self) -> Path:
        """A folder for scratch files, removed with the quantizer."""
        return self._tmp

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def write(self, out_path: str | Path, exclude: Sequence[str] = ()) -> Path:
        """The Q/DQ file with the layers ``exclude`` names kept in FP32, verified, written atomically."""
        from export.passes import save

        unknown = sorted(set(exclude) - set(self.layers) - set(self.single_channel))
        if unknown:
            raise ValueError(f"cannot exclude {', '.join(unknown)}: expected names of {', '.join(QUANTIZED_OPS)} nodes")
        exclude = [n for n in exclude if n not in self.single_channel]
        raw = self._tmp / "quantized.onnx"
        self._quantize(raw, [*exclude, *self.single_channel])
        model = _finish(raw, self.method, len(self.calibration), exclude, self.single_channel)
        verify(model, np.asarray(self.calibration[:2], dtype=np.float32), self.input_name, self.threads)
        return save(model, out_path)

    def _quantize(self, dst: Path, exclude: Sequence[str]) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        # The logits stay float: 256 levels across their range would turn near-ties into ties.
        extra = {
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
        }
        flush = _flush_every(-(-len(self.calibration) // CALIBRATION_BATCH))
        if self.method == "minmax" and flush:
            extra["CalibMaxIntermediateOutputs"] = flush
        quantize_static(
            str(self.prepared),
            str(dst),
            CalibrationReader(self.calibration, self.input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=self.calibrate_method,
            calibration_providers=["CPUExecutionProvider"],
            extra_options=extra,
            calibration_cache_path=str(self._cache),
        )


def single_channel_convs(model: Any) -> list[str]:
    """Names of the Conv nodes of ``model`` that read a one-channel tensor (group 1, weight ``[out, 1, ...]``)."""
    shapes = {i.name: list(i.dims) for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        shape = shapes.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if shape is not None and len(shape) > 1 and shape[1] == 1 and group == 1:
            out.append(node.name)
    return out


def _flush_every(batches: int) -> int | None:
    """Batches between min/max reductions: ONNX Runtime 1.32 raises "No data is collected" when the last
    reduction leaves no batch behind, so a count that divides ``batches`` is avoided."""
    if batches <= _MINMAX_FLUSH:
        return None
    return next((f for f in range(_MINMAX_FLUSH, 1, -1) if batches % f), None)


def quantize_static_file(
    static_path: str | Path,
    out_path: str | Path,
    calibration: np.ndarray,
    method: str = "minmax",
    exclude: Sequence[str] = (),
    threads: int | None = None,
) -> Path:
    """The INT8 Q/DQ file of ``static_path`` at ``out_path`` (module docstring), calibrated on ``calibration``.

    Args:
        calibration: standardised float32 images ``[N, C, H, W]`` (or anything with
            ``len`` and slicing that yields them), never the test images.
        method: ``minmax``, ``entropy`` or ``percentile``.
        exclude: names of Conv/Gemm/MatMul nodes (of the pre-processed graph, which
            keeps the static file's names) to keep in FP32, besides the
            single-channel convolutions, which always are.
        threads: ONNX Runtime threads of the checks (the calibrator uses its default).

    Raises:
        NonFiniteActivations: a calibration image makes a tensor NaN or infinite.
        ValueError: an unknown method, no images, or an unknown node in ``exclude``.
    """
    with Quantizer(static_path, calibration, method, threads) as q:
        return q.write(out_path, exclude)


def _preprocess(src: Path, dst: Path) -> Path:
    """``quant_pre_process``: shape inference, and ONNX Runtime's optimiser folding BatchNorm into Conv."""
    import logging

    from onnxruntime.quantization.shape_inference import quant_pre_process

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # it logs a recommendation per run at WARNING
    try:
        quant_pre_process(str(src), str(dst))
    finally:
        logging.getLogger().setLevel(quiet)
    return dst


def _finish(path: Path, method: str, count: int, exclude: Sequence[str], single_channel: Sequence[str] = ()) -> Any:
    """The quantized model as this project saves files: its IR version, metadata saying how it was made."""
    import json

    import onnx

    from export.passes import IR_VERSION

    model = onnx.load(str(path))
    model.ir_version = IR_VERSION  # onnx 1.23 writes an IR newer than onnxruntime 1.32 reads
    # quant_pre_process imports every domain ONNX Runtime knows; keep those the nodes use.
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    info = {
        "method": method,
        "calibration_images": int(count),
        "fp32_layers": list(exclude),
        "fp32_single_channel": list(single_channel),
    }
    entries = {p.key: p.value for p in model.metadata_props}
    entries[META_INT8] = json.dumps(info)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, entries)
    return model


def verify(model: Any, x: np.ndarray, input_name: str, threads: int | None = None) -> None:
    """``onnx.checker`` (full) and one ONNX Runtime run whose outputs are finite; ``RuntimeError`` otherwise."""
    import onnx

    from export.sessions import open_session

    onnx.checker.check_model(model, full_check=True)
    outputs = open_session(model, threads=threads).run(None, {input_name: x})
    if not all(np.isfinite(o).all() for o in outputs):
        raise RuntimeError("the INT8 file gives non-finite outputs on calibration images")


def check_finite_activations(model: Any, images: Any, input_name: str, threads: int | None = None) -> None:
    """Every float tensor of ``model`` finite on ``images``; else ``NonFiniteActivations`` naming the first.

    The float model runs with every float tensor as an output (what the calibrator
    would range), in the calibrator's batches.
    """
    from export.sessions import open_session

    probe, producers = _all_tensors_as_outputs(model)
    session = open_session(probe, threads=threads, optimization="disable")  # tensors as the calibrator sees them
    names = [o.name for o in session.get_outputs()]
    for start in range(0, len(images), CALIBRATION_BATCH):
        x = np.ascontiguousarray(images[start : start + CALIBRATION_BATCH], dtype=np.float32)
        if not np.isfinite(x).all():
            image = start + int(np.argwhere(~np.isfinite(x.reshape(len(x), -1)).all(1))[0][0])
            raise NonFiniteActivations(
                f"calibration image {image} holds NaN or infinite values, expected finite images"
            )
        values = dict(zip(names, session.run(None, {input_name: x})))
        for name in [*producers, *names]:  # graph order: the first tensor that goes non-finite is named
            value = values.get(name)
            if value is None:
                continue
            bad = ~np.isfinite(value.reshape(len(x), -1)).all(1) if value.ndim and len(value) == len(x) else None
            if bad is not None and bad.any():
                image = start + int(np.argwhere(bad)[0][0])
                raise NonFiniteActivations(
                    f"calibration image {image} makes {producers.get(name, name)} output NaN or infinite values "
                    f"(tensor {name}), expected finite activations on the calibration images"
                )


def _all_tensors_as_outputs(model: Any) -> tuple[Any, dict[str, str]]:
    """A copy of ``model`` whose float node outputs are all graph outputs, and tensor -> 'op node' names."""
    import onnx
    from onnx import TensorProto, helper

    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {
        v.name
        for v in [*inferred.graph.value_info, *inferred.graph.output]
        if v.type.tensor_type.elem_type == TensorProto.FLOAT
    }
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    producers = {}
    for node in probe.graph.node:
        for out in node.output:
            if out in floats:
                producers[out] = f"{node.op_type} node {node.name}"
                if out not in have:
                    probe.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
    return probe, producers
