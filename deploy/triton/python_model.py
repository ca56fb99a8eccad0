"""Triton python-backend model that runs an ONNX file in ONNX Runtime (copied as ``<model>/<version>/model.py``).

Standalone on purpose: it imports only NumPy, ONNX Runtime and Triton's
``triton_python_backend_utils``, so a server needs nothing of this project.
Settings come from the model configuration's ``parameters``:

- ``onnx_file``: the file beside ``model.py`` in the version directory (default ``model.onnx``);
- ``intra_op_threads``: ONNX Runtime intra-op threads (``0``: ONNX Runtime's default, all cores);
- ``providers``: comma-separated ONNX Runtime providers; default CPU, or CUDA then CPU
  on a ``KIND_GPU`` instance when this ONNX Runtime has CUDA.

Dynamic batching: Triton hands ``execute`` every request of one batch; their
inputs are concatenated along the batch axis, run in one ``session.run``, and the
outputs are split back per request. A request whose inputs do not fit the batch
(wrong shape or type) fails alone, with the reason; the others still run.
"""

from __future__ import annotations

import json
import os

import numpy as np

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (documentation, tests with a stand-in)
    pb_utils = None

_NUMPY = {
    "TYPE_BOOL": np.bool_,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}


class TritonPythonModel:
    """One ONNX Runtime session per model instance."""

    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file") or "model.onnx")
        # Not export.sessions.open_session: this file is copied alone into the model repository and runs in
        # Triton's python backend, where this project is not installed. Same choices as open_session (all
        # graph optimizations, errors-only log, CPU unless told), checked by tests/test_one_session_factory.py.
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(params.get("intra_op_threads") or 0)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if params.get("providers"):
            providers = [p.strip() for p in params["providers"].split(",") if p.strip()]
        elif args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            device = int(args.get("model_instance_device_id") or 0)
            providers = [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, opts, providers=providers)
        self.inputs = [(t["name"], _NUMPY[t["data_type"]], [int(d) for d in t["dims"]]) for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.batching = int(config.get("max_batch_size", 0)) > 0
        self.path = path

    def _check(self, arrays):
        for (name, dtype, dims), a in zip(self.inputs, arrays):
            shape = list(a.shape[1:] if self.batching else a.shape)
            if a.dtype != dtype or len(shape) != len(dims) or any(d != -1 and s != d for s, d in zip(shape, dims)):
                return f"input {name!r}: got {a.dtype} {list(a.shape)}, expected {np.dtype(dtype)} {'[batch, ' if self.batching else '['}{', '.join(map(str, dims))}]"
        return None

    def execute(self, requests):
        feeds, errors = [], []
        for request in requests:
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name, _, _ in self.inputs]
            error = self._check(arrays)
            errors.append(error)
            feeds.append(None if error else arrays)
        good = [k for k, f in enumerate(feeds) if f is not None]
        results = {}
        if good:
            try:
                if self.batching and len(good) > 1:
                    batch = {
                        name: np.concatenate([feeds[k][i] for k in good]) for i, (name, _, _) in enumerate(self.inputs)
                    }
                    outs = self.session.run(self.outputs, batch)
                    sizes = np.cumsum([feeds[k][0].shape[0] for k in good])[:-1]
                    parts = [np.split(o, sizes) for o in outs]
                    for j, k in enumerate(good):
                        results[k] = [p[j] for p in parts]
                else:
                    for k in good:
                        feed = {name: feeds[k][i] for i, (name, _, _) in enumerate(self.inputs)}
                        results[k] = self.session.run(self.outputs, feed)
            except Exception as e:  # an ONNX Runtime failure fails the whole batch, with its message
                for k in good:
                    errors[k] = f"ONNX Runtime failed on {self.path}: {e}"
                results = {}
        responses = []
        for k in range(len(requests)):
            if k in results:
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(a)) for name, a in zip(self.outputs, results[k])]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(errors[k])))
        return responses

    def finalize(self):
        self.session = None
