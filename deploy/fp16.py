"""FP16 ONNX files: ``to_fp16_onnx`` and which nodes such a file keeps in FP32, and why.

* ``to_fp16_onnx``: an FP16 copy of an exported file, inputs and outputs kept FP32
  (what TensorRT 11's strongly typed builds need, made with onnxconverter-common's
  float16 converter). The ``ai.acl`` kernel generators stay FP32: their AKPs and
  constants are not meant for half precision; the kernels are cast to FP16 after
  generation.
* No weight is ever clipped: a node holding a weight beyond FP16's range (|w| >
  65504) stays FP32, as do the nodes the caller names (``keep_fp32``, e.g. those
  whose outputs overflow FP16 on real data: ``deploy.fp16_range.overflow_plan``).
  The file records those nodes and the reasons (``kept_fp32``).
* ``fp32_nodes``: every node the FP16 file computes in FP32, with the reason.

The range analysis of such files is ``deploy.fp16_range``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from export import DOMAIN
from export.banks import BANK_PREFIX

__all__ = [
    "FP16_MAX",
    "FP16_MIN_NORMAL",
    "META_KEPT_FP32",
    "fp32_nodes",
    "kept_fp32",
    "to_fp16_onnx",
    "weight_overflow",
]

FP16_MAX = float(np.finfo(np.float16).max)  # 65504
FP16_MIN_NORMAL = float(np.finfo(np.float16).tiny)  # 6.1e-05
FP16_MIN_SUBNORMAL = float(np.finfo(np.float16).smallest_subnormal)  # 6e-08
META_KEPT_FP32 = "acl_deploy.fp16.kept_fp32"  # JSON {node: reason}: nodes kept FP32 beyond the op policy

# BatchNormalization in half precision was measured to move ResNet-18's logits by
# 0.5 (top-1 75 %) against 1e-3 kept in FP32; TensorRT folds it into the
# convolution at build time either way.
BATCHNORM_REASON = "BatchNormalization is kept FP32 (in FP16 it moved ResNet-18's logits by 0.5)"


def _block_ops() -> list[str]:
    from onnxconverter_common import float16

    return [*float16.DEFAULT_OP_BLOCK_LIST, "BatchNormalization"]


def _policy(node: onnx.NodeProto, blocked_ops: set[str]) -> str | None:
    """Why the FP16 file computes ``node`` in FP32 whatever its values, or None."""
    if node.domain == DOMAIN or node.name.startswith(BANK_PREFIX):  # a bank's Concat gathers AKPs
        return "ai.acl kernel generator: AKPs are kept FP32"
    if node.op_type == "BatchNormalization":
        return BATCHNORM_REASON
    if node.op_type in blocked_ops:
        return f"onnxconverter-common keeps {node.op_type} in FP32"
    return None


def _big_values(model: onnx.ModelProto) -> dict[str, float]:
    """``{tensor: max |x|}`` of the FP32 initializers and Constant outputs beyond FP16's range."""
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [
        (n.output[0], a.t) for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.t.dims
    ]
    big = {}
    for name, t in tensors:
        if t.data_type == TensorProto.FLOAT:
            top = float(np.abs(numpy_helper.to_array(t)).max(initial=0.0))
            if not top <= FP16_MAX:
                big[name] = top
    return big


def weight_overflow(model: onnx.ModelProto) -> dict[str, str]:
    """``{node: reason}`` for every node the FP16 file would otherwise convert that holds or reads |w| > FP16_MAX.

    A Constant beyond FP16 is kept FP32 along with its readers: its output would
    otherwise be cast to FP16 on the way to them.
    """
    blocked_ops = set(_block_ops())
    big = _big_values(model)
    out = {}
    for node in model.graph.node:
        over = {i: big[i] for i in [*node.input, *(node.output if node.op_type == "Constant" else [])] if i in big}
        if over and _policy(node, blocked_ops) is None:
            name, top = max(over.items(), key=lambda kv: kv[1])
            out[node.name] = f"weight `{name}` reaches {top:.3g} > {FP16_MAX:g}"
    return out


def fp32_nodes(model: onnx.ModelProto, keep_fp32: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{node: reason}`` for every node that ``to_fp16_onnx(model, keep_fp32=...)`` computes in FP32."""
    blocked_ops = set(_block_ops())
    extra = _kept(model, keep_fp32)
    out = {}
    for node in model.graph.node:
        why = _policy(node, blocked_ops) or extra.get(node.name)
        if why:
            out[node.name] = why
    return out


def _kept(model: onnx.ModelProto, keep_fp32: Mapping[str, str] | None) -> dict[str, str]:
    """The nodes kept FP32 beyond the op policy: weights beyond FP16, and ``keep_fp32``; reasons joined."""
    out = dict(weight_overflow(model))
    for node, why in (keep_fp32 or {}).items():
        if node not in out or out[node] in why:
            out[node] = why
        elif why not in out[node]:
            out[node] = f"{out[node]}; {why}"
    blocked_ops = set(_block_ops())
    policy = {n.name for n in model.graph.node if _policy(n, blocked_ops)}
    return {n: why for n, why in out.items() if n not in policy}


def kept_fp32(model: onnx.ModelProto | str | Path) -> dict[str, str]:
    """The nodes an FP16 file made by ``to_fp16_onnx`` keeps FP32 beyond the op policy, with reasons."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    meta = {p.key: p.value for p in model.metadata_props}
    return json.loads(meta.get(META_KEPT_FP32, "{}"))


def _drop_round_trips(graph: onnx.GraphProto, fp32: set[str]) -> None:
    """Let the output of a node kept FP32 reach FP32 consumers directly, not through FP16 and back.

    The converter puts a Cast to FP16 after every node it keeps FP32 (``fp32``) and a
    Cast to FP32 before every such consumer; onnxconverter-common 1.16 removes the
    pair only when the tensor has one consumer (with several, it compares the
    ``to`` attributes with 16 and 32, not 10 and 1). Left in, the round trip turns
    a kept node's output beyond 65504 into Inf on its way to another kept node.
    """
    producer = {o: n for n in graph.node for o in n.output}
    fp32_inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == TensorProto.FLOAT}

    def from_fp32(cast16: onnx.NodeProto | None) -> bool:
        if cast16 is None or _cast_to(cast16) != TensorProto.FLOAT16:
            return False
        source = producer.get(cast16.input[0])
        return (source is not None and source.name in fp32) or cast16.input[0] in fp32_inputs

    for node in graph.node:
        if _cast_to(node) == TensorProto.FLOAT and from_fp32(up := producer.get(node.input[0])):
            _identity(node, up.input[0])
    # With the last node kept FP32 the converter also leaves the graph output FP16
    # (through that node's Cast), though inputs and outputs are to stay FP32.
    for out in graph.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT16 and from_fp32(cast := producer.get(out.name)):
            _identity(cast, cast.input[0])
            out.type.tensor_type.elem_type = TensorProto.FLOAT
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for n in [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]:
        graph.node.remove(n)


def _identity(node: onnx.NodeProto, source: str) -> None:
    node.op_type = "Identity"
    node.input[0] = source
    del node.attribute[:]


def _cast_to(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "to"), -1) if node.op_type == "Cast" else -1


def to_fp16_onnx(
    src: str | Path | onnx.ModelProto,
    dst: str | Path | None = None,
    *,
    keep_fp32: Mapping[str, str] | None = None,
) -> onnx.ModelProto:
    """FP16 copy of an exported model with FP32 inputs/outputs; written to ``dst`` when given.

    Args:
        src: the FP32 file (or model).
        dst: where to write the FP16 file.
        keep_fp32: ``{node: reason}`` of further nodes to keep FP32 (nodes whose
            weights exceed FP16's range always are).
    """
    from onnxconverter_common import float16

    from export.passes import IR_VERSION, save

    model = src if isinstance(src, onnx.ModelProto) else onnx.load(str(src))
    policy = fp32_nodes(model, keep_fp32)
    kept = _kept(model, keep_fp32)
    # The converter clamps to [1e-7, 1e4] by default and warns per value; half
    # precision's real limits keep the model as FP16 stores it. Nothing reaches
    # the clamp at the top: such weights' nodes are in the block list.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        out = float16.convert_float_to_float16(
            model,
            min_positive_val=FP16_MIN_SUBNORMAL,
            max_finite_val=FP16_MAX,
            keep_io_types=True,
            node_block_list=list(policy),
            op_block_list=_block_ops(),
        )
    _drop_round_trips(out.graph, set(policy))
    out.ir_version = IR_VERSION
    if kept:
        onnx.helper.set_model_props(
            out, {**{p.key: p.value for p in out.metadata_props}, META_KEPT_FP32: json.dumps(kept)}
        )
    onnx.checker.check_model(out, full_check=True)
    if dst is not None:
        save(out, dst)
    return out
