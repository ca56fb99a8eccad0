"""FP16 range analysis of an exported ONNX file, in the form each runtime runs it.

The analysis reads the FP32 static file (weights from its initializers, every
activation from a run of the file itself: ``deploy.fp16_tensors``), never the
PyTorch module: an exporter that folded BatchNorm into a convolution changed what
overflows. Two forms are described (``FORMS``):

* ``onnx-fp16``: the FP16 file ``to_fp16_onnx`` writes: every node FP16 except
  those it keeps FP32 (BatchNorm, the ``ai.acl`` generators, the converter's
  block list, and nodes whose weights or outputs exceed FP16's range). A
  convolution followed by BatchNorm rounds its output to FP16 *before* the FP32
  BatchNorm sees it.
* ``tensorrt``: TensorRT building FP16 kernels from the FP32 file: BatchNorm that
  follows a convolution is folded into its weights first, then every layer is FP16.

Per layer (Conv, ConvTranspose, Gemm, MatMul, named after its weight), per form:
the largest weight, the share of weights below FP16's normal range, the largest
output on the data, and the error of the layer emulated in FP16 (inputs, weights
and output rounded to FP16, products summed in FP32, as FP16 GPU kernels do) on
the first ``EMULATED_IMAGES`` images. ``overflow_plan`` lists the nodes the FP16
file must keep FP32 so that no value it holds exceeds FP16 on the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from deploy.fp16 import FP16_MAX, FP16_MIN_NORMAL, fp32_nodes, kept_fp32, weight_overflow
from deploy.fp16_emulate import Emulation, fold_batchnorm
from deploy.fp16_tensors import initializer_arrays, max_abs

__all__ = [
    "DRIFT_LIMIT",
    "EMULATED_IMAGES",
    "FORMS",
    "FormRange",
    "LayerRange",
    "RangeReport",
    "fp16_range_report",
    "overflow_plan",
]

FORMS = {
    "onnx-fp16": "the FP16 ONNX file as written: FP16 nodes, with the nodes it keeps FP32 "
    "(BatchNorm stays a separate FP32 node after an FP16 convolution)",
    "tensorrt": "TensorRT FP16 from the FP32 file: BatchNorm folded into the convolution first, every layer FP16",
}
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
EMULATED_IMAGES = 128  # images the per-layer FP16 emulation runs on (the ranges use every image)
DRIFT_LIMIT = 1e-2  # relative (to the layer's output range) FP16-vs-FP32 error that is flagged
SUBNORMAL_SHARE_LIMIT = 0.01  # share of non-zero weights below FP16's normal range that is flagged


@dataclass
class FormRange:
    """One layer in one form."""

    precision: str  # "fp16", or "fp32": this form computes the layer in FP32 (``note`` says why)
    weight_max_abs: float
    weight_subnormal_share: float  # share of non-zero weights with |w| < FP16_MIN_NORMAL
    activation_max_abs: float  # largest |output| in FP32 on the data (after the folded BatchNorm, if any)
    fp16_rel_error: float | None  # max |out16 - out32| / max |out32| emulated; None when computed in FP32
    note: str = ""
    flags: list[str] = field(default_factory=list)


@dataclass
class LayerRange:
    name: str
    kind: str
    node: str
    forms: dict[str, FormRange]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RangeReport:
    layers: list[LayerRange]
    overflow: dict[str, dict[str, float]]  # form -> {layer or "node (Op)": max |x|} computed in FP16 beyond FP16_MAX
    kept_fp32: dict[str, str]  # node -> reason: kept FP32 in the FP16 file beyond the op policy
    images: int
    emulated_images: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "forms": dict(FORMS),
            "layers": [r.to_dict() for r in self.layers],
            "overflow": self.overflow,
            "kept_fp32": self.kept_fp32,
            "images": self.images,
            "emulated_images": self.emulated_images,
        }


def _load(src: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    return src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))


def _beyond(v: float) -> bool:
    return not v <= FP16_MAX  # NaN counts as beyond


def _consumers(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for i in node.input:
            out.setdefault(i, []).append(node)
    return out


def overflow_plan(src: str | Path | onnx.ModelProto, inputs: Any, *, threads: int | None = None) -> dict[str, str]:
    """``{node: reason}``: the nodes an FP16 file of ``src`` must keep FP32 for ``inputs`` to stay in range.

    A tensor beyond FP16's range on ``inputs`` must not be FP16: its producer and
    every consumer that would compute in FP16 are listed.
    """
    model = _load(src)
    top = max_abs(model, inputs, threads=threads)
    by_weight = weight_overflow(model)  # kept FP32 anyway; the plan adds what their outputs reach
    fp32 = {n: why for n, why in fp32_nodes(model).items() if n not in by_weight}
    consumers = _consumers(model)
    plan: dict[str, str] = {}
    for node in model.graph.node:
        for t in node.output:
            if t not in top or not _beyond(top[t]):
                continue
            why = f"`{t}` reaches {top[t]:.3g} > {FP16_MAX:g} on {len(inputs)} images"
            if node.name not in fp32:
                plan.setdefault(node.name, f"output {why}")
            for c in consumers.get(t, []):
                if c.name not in fp32:
                    plan.setdefault(c.name, f"input {why}")
    return plan


@dataclass
class _Layer:
    node: onnx.NodeProto
    name: str
    bn: onnx.NodeProto | None  # the BatchNormalization TensorRT folds into this convolution


def _layers(model: onnx.ModelProto, inits: Mapping[str, np.ndarray]) -> list[_Layer]:
    consumers = _consumers(model)
    outputs = {o.name for o in model.graph.output}
    layers = []
    for node in model.graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        w = next((i for i in node.input[1:] if i in inits), None)
        name = w.removesuffix(".weight") if w else node.name
        users = consumers.get(node.output[0], [])
        bn = None
        if (
            node.op_type == "Conv"
            and node.output[0] not in outputs
            and len(users) == 1
            and users[0].op_type == "BatchNormalization"
            and all(i in inits for i in users[0].input[1:5])
        ):
            bn = users[0]
        layers.append(_Layer(node, name, bn))
    return layers


def _weights(node: onnx.NodeProto, arrays: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """Largest |w| over the node's weights and biases; share of non-zero weights below FP16's normal range."""
    ws = [arrays[i] for i in node.input[1:] if i in arrays]
    top = max((float(np.abs(w).max(initial=0.0)) for w in ws), default=0.0)
    if not ws:
        return top, 0.0
    nz = np.abs(ws[0][ws[0] != 0])
    return top, float((nz < FP16_MIN_NORMAL).mean()) if nz.size else 0.0


def _flags(r: FormRange, finite: bool) -> list[str]:
    flags = []
    if r.precision == "fp16":
        if _beyond(r.weight_max_abs):
            flags.append(f"weight overflow: max |w| {r.weight_max_abs:.3g} > {FP16_MAX:g}")
        if _beyond(r.activation_max_abs):
            flags.append(f"activation overflow: max |y| {r.activation_max_abs:.3g} > {FP16_MAX:g}")
        if not finite:
            flags.append("non-finite in FP16: the layer's FP16 output has Inf or NaN")
    if r.precision == "fp16" and r.weight_subnormal_share > SUBNORMAL_SHARE_LIMIT:
        flags.append(
            f"weights below FP16 normal range: {r.weight_subnormal_share * 100:.1f} % of non-zero "
            f"|w| < {FP16_MIN_NORMAL:.2g}"
        )
    if finite and r.fp16_rel_error is not None and r.fp16_rel_error > DRIFT_LIMIT:
        flags.append(f"precision loss: FP16 output differs by {r.fp16_rel_error:.2g} of its range")
    return flags


@dataclass
class _Plan:
    """How one form computes one layer."""

    node: onnx.NodeProto  # the node as the form computes it (a folded convolution, say)
    arrays: Mapping[str, np.ndarray]  # its weights
    reference: str  # the FP32 tensor its output equals
    emulation: Emulation | None  # None: the form computes it in FP32
    note: str

    def result(self, top: Mapping[str, float]) -> FormRange:
        w_max, sub = _weights(self.node, self.arrays)
        emu = self.emulation
        r = FormRange(
            precision="fp16" if emu else "fp32",
            weight_max_abs=w_max,
            weight_subnormal_share=sub,
            activation_max_abs=top[self.reference],
            fp16_rel_error=emu.rel_error if emu else None,
            note=self.note,
        )
        r.flags = _flags(r, emu.finite if emu else True)
        return r


def _plans(model, layer: _Layer, inits, fp32: Mapping[str, str]) -> dict[str, _Plan]:
    node, out = layer.node, layer.node.output[0]
    kept = node.name in fp32
    plans = {
        "onnx-fp16": _Plan(
            node, inits, out, None if kept else Emulation(model, node, inits, out), fp32.get(node.name, "")
        )
    }
    if layer.bn is None:
        plans["tensorrt"] = _Plan(node, inits, out, Emulation(model, node, inits, out), "")
    else:
        folded, arrays = fold_batchnorm(node, layer.bn, inits)
        ref = layer.bn.output[0]
        plans["tensorrt"] = _Plan(
            folded, arrays, ref, Emulation(model, folded, arrays, ref), f"BatchNorm `{layer.bn.name}` folded in"
        )
    return plans


def fp16_range_report(
    src: str | Path | onnx.ModelProto,
    inputs: Any,
    *,
    fp16: str | Path | onnx.ModelProto | None = None,
    threads: int | None = None,
) -> RangeReport:
    """The FP16 range report of the FP32 static file ``src`` on ``inputs``.

    Args:
        src: the FP32 file.
        inputs: images, as the file's input takes them.
        fp16: the FP16 file made from ``src``, whose recorded FP32 nodes (``kept_fp32``)
            describe the ``onnx-fp16`` form; without it, the nodes ``to_fp16_onnx``
            would keep for these inputs (``overflow_plan``).
        threads: ONNX Runtime threads.
    """
    model = _load(src)
    kept = kept_fp32(fp16) if fp16 is not None else overflow_plan(model, inputs, threads=threads)
    fp32 = fp32_nodes(model, kept)
    inits = initializer_arrays(model)
    layers = _layers(model, inits)
    plans = {layer.node.name: _plans(model, layer, inits, fp32) for layer in layers}
    emus = [p.emulation for forms in plans.values() for p in forms.values() if p.emulation]
    seen = [0]

    def visit(values: dict[str, np.ndarray]) -> None:
        if seen[0] < EMULATED_IMAGES:
            for e in emus:
                e.update(values)
            seen[0] += len(next(iter(values.values())))

    top = max_abs(model, inputs, threads=threads, visit=visit)
    out = [
        LayerRange(
            layer.name,
            layer.node.op_type,
            layer.node.name,
            {form: p.result(top) for form, p in plans[layer.node.name].items()},
        )
        for layer in layers
    ]
    layer_nodes = {layer.node.name for layer in layers}
    folded_bns = {layer.bn.name for layer in layers if layer.bn is not None}
    overflow = {
        "onnx-fp16": _overflow(model, top, out, "onnx-fp16", skip=layer_nodes | set(fp32)),
        "tensorrt": _overflow(model, top, out, "tensorrt", skip=layer_nodes | folded_bns),
    }
    return RangeReport(out, overflow, kept, len(inputs), min(seen[0], len(inputs)))


def _overflow(model, top, layers: list[LayerRange], form: str, skip: set[str]) -> dict[str, float]:
    """What ``form`` computes in FP16 beyond FP16's range on the data: layers by name, other nodes by node.

    ``skip``: nodes not to look at beyond the layers (computed in FP32, or folded away).
    """
    bad = ("weight overflow", "activation overflow", "non-finite")
    where: dict[str, float] = {}
    for r in layers:
        f = r.forms[form]
        if any(x.startswith(bad) for x in f.flags):
            where[r.name] = max(f.weight_max_abs, f.activation_max_abs)
    for node in model.graph.node:
        if node.name in skip:
            continue
        for t in node.output:
            if t in top and _beyond(top[t]):
                where[f"{node.name} ({node.op_type})"] = top[t]
    return where
