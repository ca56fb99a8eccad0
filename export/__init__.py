"""ONNX export of ACL models: static (baked kernels) and live (kernels from AKPs).

>>> from export import DOMAIN, OP_OF_SYMBOL
>>> DOMAIN, OP_OF_SYMBOL["G"]
('ai.acl', 'Gabor')
"""

from export.functions import DOMAIN, DOMAIN_VERSION, OP_OF_SYMBOL, OPSET, all_function_protos, function_proto
from export.onnx_export import INPUT_NAME, OUTPUT_NAME, bake, live_layers, to_onnx
from export.passes import IR_VERSION

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "INPUT_NAME",
    "IR_VERSION",
    "OPSET",
    "OP_OF_SYMBOL",
    "OUTPUT_NAME",
    "all_function_protos",
    "bake",
    "function_proto",
    "live_layers",
    "to_onnx",
]
