"""Runtimes for exported ACL models: runners, backend discovery, timing.

Nothing heavy is imported here: onnxruntime and TensorRT load when a runner is built.
"""
