import re

import numpy as np
import pytest
from polygraphy.exception import PolygraphyException

from deploy.backends import ALL_BACKENDS, availability, cuda_device_present
from deploy.runners import OrtRunner, TorchRunner, ort_providers, quiet_polygraphy
from deploy.timing import measure_latency
from tests.conftest import torch_out

quiet_polygraphy()
META = {"input": (np.float32, [None, 1, 12, 12])}


@pytest.fixture()
def runners(anann, exported):
    return {
        "torch": TorchRunner(anann, META, ["logits"]),
        "static": OrtRunner(exported["static"]),
        "live": OrtRunner(exported["live"]),
        "live-akp": OrtRunner(exported["live-akp"]),
    }


@pytest.mark.parametrize("name", ["torch", "static", "live", "live-akp"])
def test_one_contract_for_every_runner(runners, anann, fresh_input, name):
    with runners[name] as r:
        assert r.is_active
        out = r.infer({"input": fresh_input})
        assert list(out) == ["logits"]
        assert out["logits"].shape == (5, 10) and out["logits"].dtype == np.float32
        assert np.abs(out["logits"] - torch_out(anann, fresh_input)).max() < 1e-5
        meta = r.get_input_metadata(use_numpy_dtypes=False)
        assert "input" in meta
    assert not runners[name].is_active


@pytest.mark.parametrize("name", ["torch", "static", "live-akp"])
@pytest.mark.parametrize(
    "feed, match",
    [
        (lambda x: {"input": x.astype(np.float64)}, r"Input tensor: input \| Received unexpected dtype: float64"),
        (lambda x: {"input": x[:, :, :6]}, r"Input tensor: input \| Received incompatible shape: \(5, 1, 6, 12\)"),
        (lambda x: {"image": x}, r"input"),
        (lambda x: {"input": x, "extra": x}, r"extra"),
    ],
    ids=["dtype", "shape", "missing", "unknown"],
)
def test_bad_feeds_name_the_tensor_and_what_was_expected(runners, fresh_input, name, feed, match):
    with runners[name] as r, pytest.raises(PolygraphyException, match=match):
        r.infer(feed(fresh_input))


def test_akp_inputs_are_optional_and_checked(runners, fresh_input):
    with runners["live-akp"] as r:
        meta = r.get_input_metadata(use_numpy_dtypes=False)
        akps = [n for n in meta if n != "input"]
        assert akps and all(".akp" in n for n in akps)
        default = r.infer({"input": fresh_input})["logits"].copy()
        name = akps[0]
        shape = [int(d) for d in meta[name].shape]
        ones = np.ones(shape, dtype=np.float32)
        assert np.abs(r.infer({"input": fresh_input, name: ones})["logits"] - default).max() > 1e-4
        with pytest.raises(PolygraphyException, match=rf"Input tensor: {name} \| Received incompatible shape"):
            r.infer({"input": fresh_input, name: np.ones([shape[0] + 1, shape[1]], dtype=np.float32)})


def test_latency_statistics(runners, fresh_input):
    with runners["static"] as r:
        s = measure_latency(r, {"input": fresh_input}, warmup=2, min_iters=30, min_seconds=0.0)
    assert s.batch_size == 5 and s.iterations >= 30
    assert 0 < s.min_ms <= s.p50_ms <= s.p90_ms <= s.p99_ms
    assert s.throughput == pytest.approx(5 * s.iterations / (s.mean_ms * s.iterations / 1e3), rel=1e-6)


def test_latency_checks_inputs_before_timing(runners, fresh_input):
    with runners["static"] as r, pytest.raises(PolygraphyException, match="dtype"):
        measure_latency(r, {"input": fresh_input.astype(np.float64)}, min_iters=1, min_seconds=0)


def test_backend_availability_reasons(monkeypatch):
    assert availability("torch")[0] and availability("ort-cpu")[0]
    # Without nvidia-smi, every GPU backend is unavailable and says why in its own terms.
    import deploy.devices

    monkeypatch.setattr(deploy.devices.shutil, "which", lambda name: None)
    expected = {
        "ort-cuda": "CUDA",
        "ort-trt": "Tensorrt|TensorRT|CUDA",
        "trt": "TensorRT|CUDA",
        "trt-fp16": "TensorRT|CUDA",
    }
    for b, words in expected.items():
        ok, reason = availability(b)
        assert not ok, f"{b} claims to be available without a CUDA device"
        assert re.search(words, reason), f"{b}: reason {reason!r} does not name what is missing"
    ok, reason = cuda_device_present()
    assert (ok, reason) == (False, "no CUDA device (nvidia-smi not found)")
    with pytest.raises(ValueError, match="unknown backend 'trt-x'"):
        availability("trt-x")
    assert set(ALL_BACKENDS) == {"torch", "ort-cpu", "ort-cuda", "ort-trt", "trt", "trt-fp16", "openvino"}


def test_provider_options_follow_the_documented_names(tmp_path):
    trt = ort_providers("tensorrt", cache_dir=tmp_path, fp16=True)
    name, opts = trt[0]
    assert name == "TensorrtExecutionProvider"
    assert opts == {
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": True,
    }
    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown ONNX Runtime provider"):
        ort_providers("rocm")


GPU, GPU_REASON = cuda_device_present()


@pytest.mark.gpu
@pytest.mark.skipif(
    not (GPU and availability("ort-cuda")[0]), reason=f"ort-cuda not available: {availability('ort-cuda')[1]}"
)
def test_ort_cuda_matches_pytorch(anann, exported, fresh_input):
    with OrtRunner(exported["live"], ort_providers("cuda")) as r:
        assert "CUDAExecutionProvider" in r.active_providers
        assert np.abs(r.infer({"input": fresh_input})["logits"] - torch_out(anann, fresh_input)).max() < 1e-4


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(
    not (GPU and availability("ort-trt")[0]), reason=f"ort-trt not available: {availability('ort-trt')[1]}"
)
def test_ort_tensorrt_ep_matches_pytorch(anann, exported, fresh_input, tmp_path):
    with OrtRunner(exported["static"], ort_providers("tensorrt", cache_dir=tmp_path)) as r:
        assert np.abs(r.infer({"input": fresh_input})["logits"] - torch_out(anann, fresh_input)).max() < 1e-3
