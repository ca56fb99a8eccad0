"""Row construction for every backend: TensorRT availability and builds simulated; OpenVINO real where installed."""

import importlib.util

import numpy as np
import pytest
import torch

import deploy.tensorrt.build as trt_build
from deploy.backends import availability
from export.compare import TOLERANCES
from pipeline.archs import DEFAULT_SPEC, build
from pipeline.validate import backend_rows, perturbed_akps, run_parity
from tests.deploy.triton.nets import small_resnet


class FakeData:
    def __init__(self, x):
        self.x_test = x
        self.input_shape = tuple(x.shape[1:])


@pytest.fixture()
def rows_with_failed_trt_builds(anann, exported, tmp_path, monkeypatch):
    calls = []

    def failing_build(src, dst, *, precision="fp32", **kw):
        calls.append((str(src), precision, kw.get("refittable", False)))
        raise RuntimeError("no CUDA device (simulated)")

    monkeypatch.setattr(trt_build, "build_engine", failing_build)
    paths = {m: exported[m] for m in ("static", "live", "live-akp")}
    backends = {
        "torch": (True, ""),
        "trt": (True, "simulated"),
        "trt-fp16": (True, "simulated"),
        "ort-cuda": (False, "no CUDA device"),
    }
    x = np.random.default_rng(0).standard_normal((4, 1, 12, 12)).astype(np.float32)
    moved = perturbed_akps(anann, 0)
    rows = backend_rows(anann, moved, FakeData(x), paths, backends, 1, tmp_path, (1, 2), lambda m: None)
    return rows, calls, x, moved[0]


def test_tensorrt_rows_and_their_precisions(rows_with_failed_trt_builds):
    rows, calls, _, _ = rows_with_failed_trt_builds
    by_key = {r.key: r for r in rows}
    assert {"trt:static", "trt:live", "trt:live-akp", "trt:refit", "trt-fp16:static", "trt-fp16:live"} <= set(by_key)
    assert "trt-fp16:live-akp" not in by_key and "trt-fp16:refit" not in by_key
    assert by_key["trt-fp16:static"].precision == "fp16" and by_key["trt:static"].precision == "fp32"
    assert all(
        by_key[k].error.startswith("engine build failed: no CUDA device (simulated)")
        for k in ("trt:static", "trt-fp16:live")
    )
    assert by_key["trt:refit"].error.startswith("refittable engine build failed")
    # the AKP-input engine is built from the variant whose AKPs are required inputs
    assert any(src.endswith("model.live-akp.required.onnx") for src, _, _ in calls)
    assert ("fp16" in {p for _, p, _ in calls}) and any(refit for _, _, refit in calls)
    unavailable = [r for r in rows if r.key.startswith("ort-cuda")]
    assert unavailable and all(r.reason == "no CUDA device" and r.make is None for r in unavailable)


def test_failed_builds_fail_parity_and_unavailable_rows_do_not(rows_with_failed_trt_builds, anann):
    rows, _, x, moved = rows_with_failed_trt_builds
    parity = run_parity(anann, moved, rows, x)
    assert parity["trt:static"] == {
        "precision": "fp32",
        "passed": False,
        "error": "engine build failed: no CUDA device (simulated)",
    }
    assert parity["ort-cuda:static"] == {"available": False, "reason": "no CUDA device"}
    assert parity["torch:baked"]["passed"]
    from pipeline.stages import _verdict

    v = _verdict(parity)
    assert not v["passed"] and "trt:static" in v["failed"] and "ort-cuda:static" in v["not_available"]


HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None


def _default_job_model():
    """The default job's architecture and spec (AnaNN-LeNet), untrained."""
    torch.manual_seed(3)
    return build("lenet", DEFAULT_SPEC).eval()


def _openvino_parity(model, image, tmp_path, backends=None):
    import export

    paths = export.export_files(model, {k: tmp_path / f"m.{k}.onnx" for k in ("static", "live")}, (1, *image))
    x = np.random.default_rng(29).standard_normal((16, *image)).astype(np.float32)  # not the export inputs
    backends = backends or {"torch": (True, ""), "openvino": availability("openvino")}
    moved = perturbed_akps(model, 0)
    rows = backend_rows(model, moved, FakeData(x), paths, backends, 1, tmp_path, (1,), lambda m: None)
    return rows, run_parity(model, moved[0], rows, x)


@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed here (pip install openvino)")
@pytest.mark.parametrize("which", ["anann-lenet", "small-resnet"])
def test_openvino_fp32_rows_compute_in_fp32_and_bf16_has_its_own_row(which, tmp_path):
    """Left to itself, OpenVINO computes in bf16 on a CPU with native bf16 and fails FP32 parity."""
    from deploy.openvino import bf16_available

    model, image = (_default_job_model(), (1, 32, 32)) if which == "anann-lenet" else (small_resnet(4), (3, 16, 16))
    _, parity = _openvino_parity(model, image, tmp_path)
    for key in ("openvino:static", "openvino:live"):
        p = parity[key]
        assert p["passed"] and p["atol"] == TOLERANCES["fp32"].atol, (key, p)
        assert p["precision"] == "fp32" and p["runtime_precision"] == "fp32", (key, p)
    bf16, (native, reason) = parity["openvino:static-bf16"], bf16_available()
    if native:
        assert bf16["passed"] and bf16["runtime_precision"] == "bf16" and bf16["atol"] == TOLERANCES["bf16"].atol, bf16
        assert bf16["max_abs_err"] > 0, "computed in bf16, so not bit-identical to FP32"
    else:
        assert bf16 == {"available": False, "reason": reason} and "has no native bf16" in reason


@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed here (pip install openvino)")
def test_a_bf16_row_that_ran_in_another_precision_fails(tmp_path, monkeypatch):
    """A CPU without native bf16 computes in f32 when asked for bf16: the row must not pass as bf16."""
    import deploy.openvino as dov

    if dov.bf16_available()[0]:
        pytest.skip("this CPU computes bf16 natively: OpenVINO honours the bf16 request here")
    monkeypatch.setattr(dov, "bf16_available", lambda device="CPU": (True, "claimed for the test"))
    _, parity = _openvino_parity(small_resnet(5), (3, 16, 16), tmp_path)
    p = parity["openvino:static-bf16"]
    assert p["precision"] == "bf16" and p["runtime_precision"] == "fp32" and not p["passed"], p
    assert p["error"] == "the runtime computed in fp32, not bf16 as this row requires"
    from pipeline.stages import _verdict

    assert "openvino:static-bf16" in _verdict(parity)["failed"]


def test_openvino_rows_when_openvino_is_missing(anann, exported, tmp_path):
    backends = {"torch": (True, ""), "openvino": (False, "OpenVINO is not installed (simulated)")}
    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12)).astype(np.float32)
    paths = {m: exported[m] for m in ("static", "live", "live-akp")}
    rows = backend_rows(anann, perturbed_akps(anann, 0), FakeData(x), paths, backends, 1, tmp_path, (1,), print)
    ov = {r.key: r for r in rows if r.key.startswith("openvino")}
    assert set(ov) == {"openvino:static", "openvino:live", "openvino:static-bf16"}
    assert all(r.make is None and r.reason == "OpenVINO is not installed (simulated)" for r in ov.values())
