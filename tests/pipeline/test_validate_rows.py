"""Row construction for every backend, without TensorRT: availability and builds simulated."""

import numpy as np
import pytest

import deploy.tensorrt.build as trt_build
from pipeline.validate import backend_rows, perturbed_akps, run_parity


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
