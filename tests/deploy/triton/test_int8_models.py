"""The INT8 (Q/DQ) file as Triton models of its own, beside the FP32 ones, served by a real Triton server.

The model has BatchNorm, a residual depthwise block and 1x1 convolutions; its Q/DQ
file is made by ONNX Runtime under the project's INT8 settings (``tests.qdq_models``).
The server (marker ``serve``, the serve environment: ``make test-serve``) serves the
INT8 python-backend model; its answers are compared with ONNX Runtime on the same
file (the same runtime: fp32 tolerance) on inputs other than the calibration ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json

import numpy as np
import pytest

from deploy.triton import MARKER, check_repository, write_repository
from export.compare import TOLERANCES, compare_outputs
from export.sessions import open_session
from tests.deploy.triton.conftest import needs_tritonclient
from tests.qdq_models import images, int8_files


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return int8_files(tmp_path_factory.mktemp("int8"))


@pytest.fixture(scope="module")
def repo(made, tmp_path_factory):
    _, files = made
    return write_repository(tmp_path_factory.mktemp("triton") / "repo", files, name="m", validate=None)


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_int8_file_is_served_as_models_of_its_own(made, repo):
    _, files = made
    assert set(repo.models) == {"m_onnxruntime", "m_python", "m_int8_onnxruntime", "m_int8_python"}
    marker = json.loads((repo.path / MARKER).read_text())["models"]
    for name in ("m_int8_onnxruntime", "m_int8_python"):
        assert marker[name]["precision"] == "int8" and marker[name]["source"] == "static-int8"
        assert sha256(repo.path / name / "1" / "model.onnx") == sha256(files["static-int8"])
    assert "precision" not in marker["m_python"]
    assert sha256(repo.path / "m_python" / "1" / "model.onnx") == sha256(files["static"])
    assert marker["m_int8_python"]["served_by_a_server_here"] is True


def test_the_int8_configs_parse_with_tritons_protobuf(repo):
    needs_tritonclient()
    assert repo.validated
    result = check_repository(repo.path)
    assert {"m_int8_python/config.pbtxt", "m_int8_onnxruntime/config.pbtxt"} <= set(result)
    assert all(p == [] for p in result.values()), result


@pytest.mark.serve
@pytest.mark.slow
def test_a_real_triton_server_serves_the_int8_model_as_onnx_runtime_computes_it(made, repo):
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (Triton server) is not installed here: it pins numpy<2 (`make test-serve`)")
    import tritonclient.grpc as grpcclient

    from deploy.triton.server import start_server

    _, files = made
    x = images(12, seed=77)
    want_int8 = open_session(files["static-int8"]).run(None, {"input": x})[0]
    want_fp32 = open_session(files["static"]).run(None, {"input": x})[0]
    with start_server(repo.path, load_models=["m_python", "m_int8_python"], timeout=180) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        got = {}
        for model in ("m_python", "m_int8_python"):
            parts = []
            for batch in (x[:1], x[1:5], x[5:]):  # batch 1 and requests Triton may batch together
                inp = grpcclient.InferInput("input", list(batch.shape), "FP32")
                inp.set_data_from_numpy(np.ascontiguousarray(batch))
                parts.append(client.infer(model, [inp]).as_numpy("logits"))
            got[model] = np.concatenate(parts)
    res = compare_outputs(want_int8, got["m_int8_python"], TOLERANCES["fp32"])
    assert res["passed"], res
    assert compare_outputs(want_fp32, got["m_python"], TOLERANCES["fp32"])["passed"]
    # It is the INT8 model: its answers differ from the FP32 model's by INT8 rounding.
    assert np.max(np.abs(got["m_int8_python"] - got["m_python"])) > 1e-3
