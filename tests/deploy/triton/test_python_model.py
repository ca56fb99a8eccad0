"""The python-backend model.py outside Triton, with a stand-in for ``triton_python_backend_utils``.

What Triton's python backend provides is reduced to what ``model.py`` uses:
``get_input_tensor_by_name(request, name).as_numpy()``, ``Tensor``,
``InferenceResponse(output_tensors, error)`` and ``TritonError``. The real
backend runs the same file in ``test_server.py`` (serve environment).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest

from deploy.triton import write_repository
from export.compare import TOLERANCES, compare_outputs
from tests.deploy.triton.conftest import IMAGE, torch_out


class _Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def as_numpy(self):
        return self.array


class _Response:
    def __init__(self, output_tensors=(), error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


class _Error(Exception):
    def message(self):
        return str(self)


@pytest.fixture()
def model_py(monkeypatch, small_files, tmp_path):
    fake = types.ModuleType("triton_python_backend_utils")
    fake.Tensor = _Tensor
    fake.InferenceResponse = _Response
    fake.TritonError = _Error
    fake.get_input_tensor_by_name = lambda request, name: _Tensor(name, request[name])
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake)
    write_repository(tmp_path / "repo", small_files, latency={1: 1.0, 8: 5.0}, validate=False)
    path = tmp_path / "repo/acl_python/1/model.py"
    spec = importlib.util.spec_from_file_location("acl_triton_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    config = {
        "max_batch_size": 8,
        "input": [{"name": "input", "data_type": "TYPE_FP32", "dims": list(IMAGE)}],
        "output": [{"name": "logits", "data_type": "TYPE_FP32", "dims": [10]}],
        "parameters": {"onnx_file": {"string_value": "model.onnx"}, "intra_op_threads": {"string_value": "1"}},
    }
    model.initialize(
        {
            "model_config": json.dumps(config),
            "model_instance_kind": "CPU",
            "model_instance_device_id": "0",
            "model_repository": str(tmp_path / "repo/acl_python"),
            "model_version": "1",
            "model_name": "acl_python",
        }
    )
    yield model
    model.finalize()


def _check(ref, got, what):
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}"


def test_requests_of_one_batch_are_run_together_and_split_back(model_py, small_model, images):
    sizes = [1, 3, 2]
    chunks = np.split(images, np.cumsum(sizes)[:-1])
    calls = []
    run = model_py.session.run
    model_py.session = types.SimpleNamespace(
        run=lambda names, feed: calls.append(feed["input"].shape) or run(names, feed)
    )
    responses = model_py.execute([{"input": c} for c in chunks])
    assert calls == [(6, *IMAGE)]  # one ONNX Runtime call for the whole batch
    assert [r.error for r in responses] == [None, None, None]
    for chunk, r in zip(chunks, responses):
        assert r.outputs["logits"].shape == (len(chunk), 10)
        _check(torch_out(small_model, chunk), r.outputs["logits"], f"request of {len(chunk)}")


def test_a_bad_request_fails_alone_with_the_reason(model_py, small_model, images):
    bad = images[:2, :, :8]  # wrong height
    responses = model_py.execute([{"input": images[:2]}, {"input": bad}, {"input": images[2:3].astype(np.float64)}])
    assert responses[0].error is None
    _check(torch_out(small_model, images[:2]), responses[0].outputs["logits"], "good request")
    assert "expected float32 [batch, 3, 16, 16]" in str(responses[1].error) and "[2, 3, 8, 16]" in str(
        responses[1].error
    )
    assert "float64" in str(responses[2].error)
