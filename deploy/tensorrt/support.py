"""What TensorRT's ONNX parser accepts, checked on the CPU: ``check_onnx``.

The operator table is onnx-tensorrt's support matrix (``docs/operators.md`` of the
TensorRT 10.x parser: ops, data types and restrictions). Model-local functions are
expanded the way the parser expands them (``onnx.inliner``), so the ops of the
``ai.acl`` function bodies are checked too, with the data types shape inference
gives them. Custom-domain op names that are also ONNX built-in ops are refused:
the parser would import the built-in (the old ``ai.acl.Mean``).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import onnx.defs
from onnx import TensorProto

from export.functions import DOMAIN, LEGACY_OPS

__all__ = ["KNOWN_PLUGINS", "OPSET_RANGE", "PARSER_MAX_IR", "SUPPORTED_OPS", "check_onnx"]

PARSER_MAX_IR = 10
"""Newest IR version the TensorRT 10.x parsers read (built against ONNX 1.16-1.17)."""

OPSET_RANGE = (9, 20)
"""Default-domain opsets every TensorRT 10.x parser supports (10.0: 9-20; later 10.x up to 24)."""

F = ("FP32", "FP16", "BF16")
REDUCE_OPS = (
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSum",
    "ReduceSumSquare",
)
FI = (*F, "INT32", "INT64")
FIB = (*FI, "BOOL")

# op -> supported input data types (onnx-tensorrt operators.md, TensorRT 10.x).
SUPPORTED_OPS: dict[str, tuple[str, ...]] = {
    **{op: FI for op in REDUCE_OPS},
    **{
        op: F
        for op in (
            "Acos",
            "Acosh",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "AveragePool",
            "BatchNormalization",
            "Ceil",
            "Celu",
            "Clip",
            "Conv",
            "ConvTranspose",
            "Cos",
            "Cosh",
            "CumSum",
            "Dropout",
            "Einsum",
            "Elu",
            "Erf",
            "Exp",
            "Floor",
            "Gemm",
            "GlobalAveragePool",
            "GlobalLpPool",
            "GlobalMaxPool",
            "GroupNormalization",
            "GRU",
            "HardSigmoid",
            "HardSwish",
            "Hardmax",
            "ImageScaler",
            "InstanceNormalization",
            "IsInf",
            "LayerNormalization",
            "LeakyRelu",
            "Log",
            "LogSoftmax",
            "LRN",
            "LSTM",
            "LpNormalization",
            "LpPool",
            "MatMul",
            "MaxPool",
            "MeanVarianceNormalization",
            "ParametricSoftplus",
            "PRelu",
            "QuantizeLinear",
            "RandomNormal",
            "RandomNormalLike",
            "RandomUniform",
            "RandomUniformLike",
            "Reciprocal",
            "Resize",
            "RNN",
            "Round",
            "ScaledTanh",
            "Scan",
            "Selu",
            "Sigmoid",
            "Sin",
            "Sinh",
            "Softmax",
            "Softplus",
            "Softsign",
            "Sqrt",
            "Tan",
            "Tanh",
            "ThresholdedRelu",
            "Upsample",
            "RMSNormalization",
        )
    },
    **{
        op: FI
        for op in (
            "Abs",
            "Add",
            "ArgMax",
            "ArgMin",
            "DepthToSpace",
            "Div",
            "Equal",
            "Greater",
            "GreaterOrEqual",
            "IsNaN",
            "Less",
            "LessOrEqual",
            "Max",
            "Mean",
            "Min",
            "Mod",
            "Mul",
            "Neg",
            "Pad",
            "Pow",
            "Range",
            "Relu",
            "Scatter",
            "ScatterElements",
            "ScatterND",
            "Shrink",
            "Sign",
            "SpaceToDepth",
            "Sub",
            "Sum",
            "TopK",
        )
    },
    **{
        op: FIB
        for op in (
            "Concat",
            "Expand",
            "EyeLike",
            "Flatten",
            "Gather",
            "GatherElements",
            "GatherND",
            "Identity",
            "If",
            "Loop",
            "OneHot",
            "Reshape",
            "ReverseSequence",
            "Shape",
            "Size",
            "Slice",
            "Split",
            "Squeeze",
            "Tile",
            "Transpose",
            "Trilu",
            "Unsqueeze",
            "Where",
        )
    },
    "Cast": (*FIB, "UINT8"),
    "CastLike": (*FIB, "UINT8"),
    "Constant": (*FIB, "FP8", "INT4"),
    "ConstantOfShape": (*FIB, "FP8", "INT4"),
    "DequantizeLinear": ("INT8", "FP8", "INT4"),
    "NonMaxSuppression": ("FP32", "FP16"),
    "NonZero": ("FP32", "FP16"),
    "GridSample": ("FP32", "FP16"),
    "RoiAlign": ("FP32", "FP16"),
    "DeformConv": ("FP32", "FP16"),
    "Mish": ("FP32", "FP16"),
    "Gelu": (*FI, "INT8"),
    "And": ("BOOL",),
    "Or": ("BOOL",),
    "Xor": ("BOOL",),
    "Not": ("BOOL",),
}

# Ops whose listed input must be a build-time constant (initializer or Constant output).
CONSTANT_INPUTS: dict[str, tuple[int, str]] = {
    **{
        op: (1, "axes")
        for op in (
            *REDUCE_OPS,
            "Squeeze",
            "Unsqueeze",
        )
    },
    "CumSum": (1, "axis"),
    "TopK": (1, "K"),
    "OneHot": (1, "depth"),
    "Dropout": (2, "training_mode"),
}

KNOWN_PLUGINS: dict[str, set[str]] = {}
"""``domain -> op names`` with a TensorRT plugin registered; none of ours need one."""

_TYPE_NAMES = {
    TensorProto.FLOAT: "FP32",
    TensorProto.FLOAT16: "FP16",
    TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.INT8: "INT8",
    TensorProto.DOUBLE: "DOUBLE",
    TensorProto.FLOAT8E4M3FN: "FP8",
    TensorProto.INT4: "INT4",
}
_ALWAYS_ALLOWED = {"DOUBLE"}  # the parser casts DOUBLE down to FLOAT


def _type_name(elem_type: int) -> str:
    return _TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type))


def _expanded(model: onnx.ModelProto) -> onnx.ModelProto:
    """Local functions inlined, as the parser expands them, then shapes and types inferred."""
    import onnx.inliner

    inlined = onnx.inliner.inline_local_functions(model) if model.functions else model
    try:
        return onnx.shape_inference.infer_shapes(inlined, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: types found are still checked
        return inlined


def _pool_rank(node: onnx.NodeProto) -> int | None:
    for a in node.attribute:
        if a.name == "kernel_shape":
            return len(a.ints)
    return None


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return None


def check_onnx(model_or_path: str | Path | onnx.ModelProto, *, opset_range: tuple[int, int] = OPSET_RANGE) -> list[str]:
    """Problems TensorRT's ONNX parser would have with a model; empty when none.

    Checks the IR version and default-domain opset, every node (local functions
    expanded) against the operator table (op, input data types, restrictions such as
    2D/3D pooling or constant ``axes``), nodes of custom domains that have neither a
    model-local function nor a known plugin, tensor types TensorRT lacks, and graph
    inputs that also have an initializer (the parser imports them as constants, so
    values fed at run time would be ignored).

    Examples:
        >>> from onnx import helper, TensorProto
        >>> g = helper.make_graph([helper.make_node("Mod", ["x", "x"], ["y"], name="mod", fmod=0),
        ...                        helper.make_node("Det", ["y"], ["z"], name="det")], "g",
        ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])],
        ...     [helper.make_tensor_value_info("z", TensorProto.FLOAT, [])])
        >>> m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]); m.ir_version = 10
        >>> check_onnx(m)
        ["node 1 'det' (Det): op Det is not supported by TensorRT's ONNX parser"]
    """
    model = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    expanded = _expanded(model)
    return [
        *_version_problems(model, opset_range),
        *_builtin_name_problems(model),
        *_custom_domain_problems(model),
        *_graph_io_problems(model),
        *_node_problems(expanded),
        *_tensor_type_problems(expanded),
    ]


def _version_problems(model: onnx.ModelProto, opset_range: tuple[int, int]) -> list[str]:
    problems = []
    if model.ir_version > PARSER_MAX_IR:
        problems.append(
            f"IR version {model.ir_version} is newer than {PARSER_MAX_IR}, the newest TensorRT 10's parser reads"
        )
    opsets = {o.domain or "": o.version for o in model.opset_import}
    lo, hi = opset_range
    default = opsets.get("", opsets.get("ai.onnx"))
    if default is None or not lo <= default <= hi:
        problems.append(f"default-domain opset {default} is outside {lo}-{hi}, the range TensorRT 10's parser supports")
    return problems


def _builtin_name_problems(model: onnx.ModelProto) -> list[str]:
    """Custom-domain ops (functions or plugin nodes) named like an ONNX built-in op.

    onnx-tensorrt's ``ModelImporter`` (``parseNode``, 10.1) looks importers up by op
    type alone, built-ins first, then local functions, then plugins: such an op is
    imported as the built-in, whatever its domain and body.
    """
    named = {(f.domain, f.name): "function" for f in model.functions}
    for node in model.graph.node:
        named.setdefault((node.domain, node.op_type), "op")
    return [
        f"{kind} {domain}.{name} has the name of ONNX's built-in op {name}: TensorRT's ONNX parser picks importers "
        f"by op type alone, built-ins first, and would import the built-in {name} instead"
        + (
            f" (a file from before the rename to {domain}.{LEGACY_OPS[name]}: upgrade it with export.legacy.renamed "
            "or export it again)"
            if domain == DOMAIN and name in LEGACY_OPS
            else ""
        )
        for (domain, name), kind in sorted(named.items())
        if domain not in ("", "ai.onnx") and onnx.defs.has(name)
    ]


def _custom_domain_problems(model: onnx.ModelProto) -> list[str]:
    functions = {(f.domain, f.name) for f in model.functions}
    return [
        f"node {i} {node.name!r} ({node.domain}.{node.op_type}): custom-domain op with neither a "
        "model-local function nor a known TensorRT plugin"
        for i, node in enumerate(model.graph.node)
        if node.domain not in ("", "ai.onnx")
        and (node.domain, node.op_type) not in functions
        and node.op_type not in KNOWN_PLUGINS.get(node.domain, set())
    ]


def _graph_io_problems(model: onnx.ModelProto) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    problems = [
        f"graph input {inp.name!r} also has an initializer: TensorRT's parser imports it as a constant "
        "weight, so values fed at run time would be ignored (make it a required input, without initializer)"
        for inp in model.graph.input
        if inp.name in inits
    ]
    problems += [
        f"graph input/output {vi.name!r} is not a tensor (sequences, maps and optionals are unsupported)"
        for vi in [*model.graph.input, *model.graph.output]
        if not vi.type.HasField("tensor_type")
    ]
    return problems


def _node_problems(expanded: onnx.ModelProto) -> list[str]:
    """Every default-domain node of the expanded graph against ``SUPPORTED_OPS`` and the parser's restrictions."""
    types = {
        vi.name: vi.type.tensor_type.elem_type
        for vi in [*expanded.graph.value_info, *expanded.graph.input, *expanded.graph.output]
    }
    types.update({t.name: t.data_type for t in expanded.graph.initializer})
    constants = {t.name for t in expanded.graph.initializer} | {
        o for n in expanded.graph.node if n.op_type == "Constant" for o in n.output
    }
    problems = []
    for i, node in enumerate(expanded.graph.node):
        where = f"node {i} {node.name!r} ({node.op_type})"
        if node.domain not in ("", "ai.onnx"):
            continue  # reported by _custom_domain_problems (a function that could not be inlined, or a plugin)
        if node.op_type not in SUPPORTED_OPS:
            problems.append(f"{where}: op {node.op_type} is not supported by TensorRT's ONNX parser")
            continue
        problems += _input_type_problems(node, where, types)
        problems += _constant_input_problems(node, where, constants)
        problems += _attribute_problems(node, where)
    return problems


TYPED_INPUTS = {"QuantizeLinear": 1, "DequantizeLinear": 1}
"""Ops whose support-matrix types are those of their first inputs only (scales and zero points have their own
rules: ``deploy.int8.tensorrt.qdq_problems``)."""


def _input_type_problems(node: onnx.NodeProto, where: str, types: dict[str, int]) -> list[str]:
    allowed = set(SUPPORTED_OPS[node.op_type]) | _ALWAYS_ALLOWED
    problems = []
    for name in node.input[: TYPED_INPUTS.get(node.op_type)]:
        if name and name in types and types[name]:
            t = _type_name(types[name])
            if t not in allowed and node.op_type not in ("Shape", "Size"):
                problems.append(
                    f"{where}: input {name!r} has type {t}; TensorRT supports {', '.join(SUPPORTED_OPS[node.op_type])} here"
                )
    return problems


def _constant_input_problems(node: onnx.NodeProto, where: str, constants: set[str]) -> list[str]:
    if node.op_type not in CONSTANT_INPUTS:
        return []
    idx, label = CONSTANT_INPUTS[node.op_type]
    if len(node.input) > idx and node.input[idx] and node.input[idx] not in constants:
        return [f"{where}: input {label!r} ({node.input[idx]!r}) must be a build-time constant"]
    return []


def _attribute_problems(node: onnx.NodeProto, where: str) -> list[str]:
    """Attribute values the parser refuses for an op it otherwise supports."""
    problems = []
    if node.op_type in ("MaxPool", "AveragePool", "LpPool", "Conv", "ConvTranspose"):
        rank = _pool_rank(node)
        if rank is not None and rank not in (2, 3) and node.op_type != "Conv":
            problems.append(f"{where}: {rank}D pooling; TensorRT supports 2D or 3D only")
        dil = _attr(node, "dilations")
        if node.op_type in ("MaxPool", "AveragePool", "LpPool") and dil and any(d != 1 for d in dil):
            problems.append(f"{where}: dilations {list(dil)}; TensorRT needs empty or all ones")
    if node.op_type == "MaxPool" and len([o for o in node.output if o]) > 1:
        problems.append(f"{where}: the Indices output is unsupported")
    if node.op_type == "Constant":
        for a in node.attribute:
            if a.name in ("sparse_value", "value_string", "value_strings"):
                problems.append(f"{where}: attribute {a.name} is unsupported")
    if node.op_type == "Resize":
        mode = _attr(node, "mode")
        if mode and mode.decode() not in ("nearest", "linear"):
            problems.append(f"{where}: resize mode {mode.decode()!r}; TensorRT supports nearest and linear")
        if _attr(node, "antialias"):
            problems.append(f"{where}: antialiasing is unsupported")
    if node.op_type == "TopK" and _attr(node, "sorted") == 0:
        problems.append(f"{where}: sorted=0 is unsupported")
    return problems


def _tensor_type_problems(expanded: onnx.ModelProto) -> list[str]:
    problems = []
    for vi in expanded.graph.value_info:
        if vi.type.HasField("tensor_type"):
            t = _type_name(vi.type.tensor_type.elem_type)
            if t in ("STRING", "COMPLEX64", "COMPLEX128", "UINT16", "UINT32", "UINT64", "INT16"):
                problems.append(f"tensor {vi.name!r} has type {t}, which TensorRT does not support")
    return problems
