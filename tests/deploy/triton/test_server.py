"""A real Triton server (nvidia-pytriton's tritonserver 2.51) serving the generated python-backend models.

ResNet-18 for 32x32 images with every 3x3 convolution an ACL and trained-looking
BatchNorm, exported static and live; one repository serves the static file, a
second the live file (ONNX Runtime generates the kernels from the AKPs when the
model loads). Queried with tritonclient over HTTP and gRPC; outputs compared with
PyTorch on inputs other than the export example (fp32 row of export.compare).
Then a bounded load test at 1, 4 and 16 clients, and new AKPs as a new model
version, loaded while a client keeps sending requests.

Marker ``serve``: runs in the serve environment (``make test-serve``); elsewhere
the module skips with the reason. The tests of this module share one server and
run in file order (the last one moves the models to version 2).
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import export
from deploy.runners import OrtRunner
from deploy.timing import measure_latency
from deploy.triton import check_repository, write_repository
from export.compare import TOLERANCES, compare_outputs
from export.verify import perturbed_akps
from tests.deploy.triton.conftest import has_pytriton, torch_out
from tests.deploy.triton.nets import resnet18

pytestmark = [pytest.mark.serve, pytest.mark.slow]

if not has_pytriton():
    pytest.skip(
        "nvidia-pytriton (Triton server) is not installed in this environment: it pins numpy<2, so the serving "
        "tests run in the serve environment (`make test-serve`)",
        allow_module_level=True,
    )

import tritonclient.grpc as grpcclient  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

from deploy.triton.load import load_test  # noqa: E402
from deploy.triton.server import start_server  # noqa: E402

SHAPE = (1, 3, 32, 32)
STATIC, LIVE = "r18_python", "r18live_python"


@pytest.fixture(scope="module")
def r18():
    return resnet18(seed=0)


@pytest.fixture(scope="module")
def files(r18, tmp_path_factory):
    d = tmp_path_factory.mktemp("r18-onnx")
    return export.export_files(r18, {"static": d / "r18.static.onnx", "live": d / "r18.live.onnx"}, SHAPE)


@pytest.fixture(scope="module")
def curve(files):
    """Measured ONNX Runtime p50 per batch size: the input of the batching rule."""
    out = {}
    with OrtRunner(files["static"]) as runner:
        for b in (1, 4, 8, 16):
            x = np.zeros((b, *SHAPE[1:]), np.float32)
            out[b] = measure_latency(
                runner, {"input": x}, warmup=3, min_iters=20, min_seconds=0.2, max_seconds=2
            ).p50_ms
    return out


@pytest.fixture(scope="module")
def repos(files, curve, tmp_path_factory):
    d = tmp_path_factory.mktemp("triton")
    static = write_repository(d / "static", files, name="r18", latency=curve, validate=True)
    live = write_repository(d / "live", files, name="r18live", latency=curve, python_source="live", validate=True)
    return {"static": static, "live": live}


@pytest.fixture(scope="module")
def server(repos):
    s = start_server([repos["static"].path, repos["live"].path], load_models=[STATIC, LIVE], timeout=180)
    yield s
    assert s.stop() is not None, "the server did not stop"


@pytest.fixture()
def images():
    return np.random.default_rng(11).standard_normal((5, *SHAPE[1:])).astype(np.float32)


def _infer(protocol: str, server, model: str, x: np.ndarray):
    mod, url = (httpclient, server.http_url) if protocol == "http" else (grpcclient, server.grpc_url)
    client = mod.InferenceServerClient(url)
    inp = mod.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer(model, [inp])
    version = result.get_response()["model_version"] if protocol == "http" else result.get_response().model_version
    return result.as_numpy("logits"), version


def _assert_parity(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], (
        f"{what}: Triton differs from PyTorch by max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}, "
        f"top-1 agreement {res.get('top1_agreement')} ({res.get('error', 'fp32 tolerance')})"
    )


def test_server_is_ready_and_serves_the_generated_configs(server, repos):
    assert server.alive() and server.start_seconds > 0
    print(f"\nserver ready in {server.start_seconds:.2f} s")
    for model, info in ((STATIC, repos["static"]), (LIVE, repos["live"])):
        client = httpclient.InferenceServerClient(server.http_url)
        assert client.is_model_ready(model)
        config = client.get_model_config(model)
        plan = info.batching
        assert config["max_batch_size"] == plan.max_batch_size
        # Triton's NormalizeModelConfig sets an empty preferred_batch_size to [max_batch_size]
        # (the plan leaves it empty when no batch size gained enough in the measured latency)
        assert config["dynamic_batching"]["preferred_batch_size"] == (plan.preferred or [plan.max_batch_size])
        assert config["input"][0]["dims"] == list(SHAPE[1:]) and config["output"][0]["dims"] == [10]
        assert [w["batch_size"] for w in config["model_warmup"]] == sorted({1, *plan.preferred})
        assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready(model)
    assert all(p == [] for p in check_repository(repos["static"].path).values())


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("model", [STATIC, LIVE])
def test_parity_with_pytorch(server, r18, images, protocol, model):
    for x in (images, images[:1]):
        got, version = _infer(protocol, server, model, x)
        assert version == "1"
        _assert_parity(torch_out(r18, x), got, f"{model} over {protocol}, batch {len(x)}")


def test_a_bad_request_is_refused_with_the_reason(server, images):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = images[:, :, :16]
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(x))
    with pytest.raises(Exception, match=r"Expected \[-1,3,32,32\], got \[5,3,16,32\]"):
        client.infer(STATIC, [inp])


def test_the_server_accepts_the_onnxruntime_config_up_to_the_missing_backend(server, repos):
    """The C++ onnxruntime backend is not in nvidia-pytriton: the server parses the config, then finds no backend."""
    client = httpclient.InferenceServerClient(server.http_url)
    with pytest.raises(Exception) as err:
        client.load_model("r18_onnxruntime")
    assert "unable to find backend library for backend 'onnxruntime'" in str(err.value)
    broken = repos["static"].path / "r18broken_onnxruntime"
    broken.mkdir()
    (broken / "1").mkdir()
    text = (repos["static"].path / "r18_onnxruntime" / "config.pbtxt").read_text()
    (broken / "config.pbtxt").write_text(
        text.replace('name: "r18_onnxruntime"', 'name: "r18broken_onnxruntime"\nbogus: 1')
    )
    try:
        with pytest.raises(Exception) as err:
            client.load_model("r18broken_onnxruntime")
        assert "unable to find backend library" not in str(err.value)
        assert "bogus" in server.log(), "the server log does not name the unknown field"
    finally:
        import shutil

        shutil.rmtree(broken)


def test_load_at_1_4_16_clients(server, images):
    pool = np.random.default_rng(3).standard_normal((64, *SHAPE[1:])).astype(np.float32)
    result = load_test(server.grpc_url, STATIC, pool, protocol="grpc", requests_per_level=200, seconds_per_level=8)
    print("\n" + json.dumps({"server_start_s": server.start_seconds, **result}, indent=1, default=str))
    for level in result["levels"].values():
        assert level["errors"] == 0, level["error_messages"]
        assert level["requests"] > 0 and level["images"] == level["requests"]
        assert sum(level["server_batches"].values()) == level["server_executions"]
        assert sum(b * n for b, n in level["server_batches"].items()) == level["requests"]
    assert max(result["levels"][16]["server_batches"]) > 1, "16 clients never got a dynamic batch larger than 1"
    http = load_test(server.http_url, STATIC, pool, protocol="http", concurrency=(4,), requests_per_level=60)
    assert http["levels"][4]["errors"] == 0, http["levels"][4]["error_messages"]


def test_new_akps_as_a_new_version_without_downtime(server, repos, files, r18, images):
    from deploy.hotswap import triton_version

    moved, akps = perturbed_akps(r18, seed=5)
    ref_old, ref_new = torch_out(r18, images), torch_out(moved, images)
    assert np.abs(ref_old - ref_new).max() > 1e-2  # the move is visible in the outputs
    made = {**triton_version(repos["static"].path, akps, files["live"], models=[STATIC])}
    made.update(triton_version(repos["live"].path, akps, files["live"], models=[LIVE]))
    assert sorted(p.name for p in made.values()) == ["2", "2"]

    answers, failures, stop = [], [], threading.Event()

    def keep_asking():
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inp = grpcclient.InferInput("input", list(images.shape), "FP32")
        inp.set_data_from_numpy(images)
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = client.infer(STATIC, [inp])
                answers.append((r.get_response().model_version, r.as_numpy("logits")))
            except Exception as e:
                failures.append(str(e))

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    time.sleep(0.3)
    client = httpclient.InferenceServerClient(server.http_url)
    client.load_model(STATIC)
    client.load_model(LIVE)
    time.sleep(0.3)
    stop.set()
    asker.join(30)
    assert not failures, f"{len(failures)} requests failed during the reload: {failures[:3]}"
    versions = [v for v, _ in answers]
    assert versions and versions[-1] == "2", versions[-5:]
    for version, out in answers:  # every answer is one model or the other, never a mix
        _assert_parity(ref_old if version == "1" else ref_new, out, f"answer of version {version} during the reload")
    for protocol in ("http", "grpc"):
        for model in (STATIC, LIVE):
            got, version = _infer(protocol, server, model, images)
            assert version == "2"
            _assert_parity(ref_new, got, f"{model} version 2 over {protocol}")
