"""ONNX export of ACL models: static (baked kernels) and live (kernels from AKPs).

``to_onnx`` needs PyTorch; everything that reads or rewrites ONNX files
(``bake``, the ``ai.acl`` functions) does not, and this
package imports PyTorch only when ``to_onnx`` or ``live_layers`` is first used.

>>> from export import DOMAIN, OP_OF_SYMBOL
>>> DOMAIN, OP_OF_SYMBOL["G"]
('ai.acl', 'Gabor')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from export.functions import DOMAIN, DOMAIN_VERSION, OP_OF_SYMBOL, OPSET, all_function_protos, function_proto
from export.inline import inline  # the function: `export.inline(path)`; the module stays importable as export.inline
from export.passes import IR_VERSION

INPUT_NAME = "input"
OUTPUT_NAME = "logits"

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "INPUT_NAME",
    "IR_VERSION",
    "KINDS",
    "OPSET",
    "OP_OF_SYMBOL",
    "OUTPUT_NAME",
    "all_function_protos",
    "bake",
    "export_files",
    "export_graph",
    "function_proto",
    "inline",
    "live_layers",
    "reproduce_commands",
    "to_onnx",
    "write_test_data",
]


def bake(src_path: str | Path, dst_path: str | Path) -> Path:
    """Live ONNX file -> static ONNX file, without PyTorch (see ``export.passes.bake``)."""
    import onnx

    from export import passes

    model = onnx.load(str(src_path))
    return passes.save(passes.bake(model), dst_path)


def __getattr__(name: str) -> Any:  # PEP 562: PyTorch-dependent parts load on first use
    if name in ("to_onnx", "live_layers", "export_graph", "export_files", "KINDS"):
        from export import onnx_export

        return getattr(onnx_export, name)
    if name in ("reproduce_commands", "write_test_data"):
        # Not imported with the package: `python -m export.test_data` would then find the
        # module already imported and runpy would warn at every call.
        from export import test_data

        return getattr(test_data, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
