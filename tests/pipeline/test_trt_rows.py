"""TensorRT rows of the INT8 file and of FP16 on TensorRT 11: which engines are asked for, from which files.

Builds are recorded and then fail as on a machine without a GPU (TensorRT is not
installed here); unavailable backends list the INT8 row with their reason.
"""

from __future__ import annotations

import pytest

import deploy.tensorrt.build as trt_build
from pipeline.validate import FP16_FILE, backend_rows, perturbed_akps, run_parity
from tests.qdq_models import images, int8_files


class FakeData:
    def __init__(self, x):
        self.x_test = x
        self.input_shape = tuple(x.shape[1:])


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    return int8_files(tmp_path_factory.mktemp("run"))


def _rows(model, files, backends, staging, monkeypatch, int8=True):
    calls = []

    def failing_build(src, dst, *, precision="fp32", **kw):
        calls.append({"src": str(src), "dst": str(dst), "precision": precision, **kw})
        raise RuntimeError("no CUDA device (simulated)")

    monkeypatch.setattr(trt_build, "build_engine", failing_build)
    paths = {m: files[m] for m in ("static", "live")}
    x = images(4, seed=3)
    moved = perturbed_akps(model, 0)
    rows = backend_rows(
        model, moved, FakeData(x), paths, backends, 1, staging, (1, 2), lambda m: None,
        int8=files["static-int8"] if int8 else None,
    )  # fmt: skip
    return {r.key: r for r in rows}, calls, x, moved[0]


def test_the_int8_file_gets_a_trt_row_built_at_int8_and_its_failure_fails_the_verdict(run_files, tmp_path, monkeypatch):
    model, files = run_files
    backends = {"torch": (True, ""), "trt": (True, "simulated"), "trt-fp16": (True, "simulated")}
    rows, calls, x, moved = _rows(model, files, backends, tmp_path, monkeypatch)
    row = rows["trt:static-int8"]
    assert row.precision == "int8" and row.error == "engine build failed: no CUDA device (simulated)"
    (int8_call,) = [c for c in calls if c["precision"] == "int8"]
    assert int8_call["src"] == str(files["static-int8"]) and int8_call["dst"].endswith("static-int8.int8.engine")
    assert "trt-fp16:static-int8" not in rows and "trt-int8:static-int8" not in rows
    # FP16 on TensorRT 11 comes from the run's FP16 file: the static FP16 engine is given it.
    (fp16_static,) = [c for c in calls if c["precision"] == "fp16" and c["src"] == str(files["static"])]
    assert fp16_static["fp16_onnx"] == tmp_path / FP16_FILE and (tmp_path / FP16_FILE).is_file()
    parity = run_parity(model, moved, list(rows.values()), x)
    assert parity["trt:static-int8"] == {
        "precision": "int8",
        "passed": False,
        "error": "engine build failed: no CUDA device (simulated)",
    }
    from pipeline.stages import _verdict

    assert "trt:static-int8" in _verdict(parity)["failed"]


def test_without_tensorrt_the_int8_row_is_listed_with_the_reason(run_files, tmp_path, monkeypatch):
    model, files = run_files
    why = "TensorRT is not installed (simulated)"
    backends = {"torch": (True, ""), "trt": (False, why), "trt-fp16": (False, why)}
    rows, calls, x, moved = _rows(model, files, backends, tmp_path, monkeypatch)
    assert calls == []
    assert rows["trt:static-int8"].make is None and rows["trt:static-int8"].reason == why
    assert run_parity(model, moved, list(rows.values()), x)["trt:static-int8"] == {"available": False, "reason": why}
    rows, _, _, _ = _rows(model, files, backends, tmp_path, monkeypatch, int8=False)
    assert not any("int8" in k for k in rows), "no INT8 file, no INT8 row"
