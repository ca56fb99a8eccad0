"""ONNX export of ACL models: static (baked kernels) and live (kernels from AKPs)."""
