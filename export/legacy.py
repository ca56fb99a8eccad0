"""Files written before an ``ai.acl`` op was renamed, upgraded: ``renamed``.

``ai.acl.Mean`` became ``ai.acl.MeanKernel`` (``export.functions.LEGACY_OPS``): its
old name is an ONNX built-in op, which TensorRT's ONNX parser would import instead
of the file's function. Renaming the nodes and the model-local function changes
nothing else: the function body is the same.
"""

from __future__ import annotations

import onnx

from export.functions import DOMAIN, LEGACY_OPS

__all__ = ["legacy_ops", "renamed"]


def legacy_ops(model: onnx.ModelProto) -> list[str]:
    """The old ``ai.acl`` op names ``model`` uses (nodes or functions), sorted."""
    used = {n.op_type for n in model.graph.node if n.domain == DOMAIN}
    used |= {f.name for f in model.functions if f.domain == DOMAIN}
    return sorted(used & set(LEGACY_OPS))


def renamed(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with today's ``ai.acl`` op names, and the old names it replaced."""
    old = legacy_ops(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for node in out.graph.node:
        if node.domain == DOMAIN and node.op_type in LEGACY_OPS:
            node.op_type = LEGACY_OPS[node.op_type]
    for function in out.functions:
        if function.domain == DOMAIN and function.name in LEGACY_OPS:
            function.name = LEGACY_OPS[function.name]
    return out, old
