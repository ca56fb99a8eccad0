"""The job with an INT8 file: TensorRT rows, the file's TensorRT form, replay commands, Triton models, the report.

The real job with ``--int8`` (``pipeline/stages/int8.py``: calibrated on training
images, accuracy-controlled), AnaNN-LeNet on the digits, two epochs. TensorRT is not installed here: its rows are listed as not
available. The ``serve`` test (the serve environment) serves the INT8 model on a
real Triton server.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shlex

import pytest

from pipeline.stages.base import JobConfig
from pipeline.stages.runner import run

INT8 = "model.static-int8.onnx"


def job(out, repo, monkeypatch, **kw):
    lines: list[str] = []
    cfg = JobConfig(
        out=out,
        epochs=2,  # one epoch leaves LeNet at ~81 %, its near-tied answers under the int8 agreement bar
        backends=("ort-cpu", "trt", "trt-fp16"),
        batch_sizes=(2,),
        latency_seconds=0.01,
        threads=1,  # one core per xdist worker (docs/testing.md)
        progress=False,
        triton_repo=repo,
        log=lines.append,
        int8=True,
        **kw,
    )
    return run(cfg), lines


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_with_an_int8_file(tmp_path, monkeypatch):
    out, repo = tmp_path / "run", tmp_path / "triton"
    r, _ = job(out, repo, monkeypatch)
    trt_reason = r["parity"]["trt:static"]["reason"]
    assert r["parity"]["trt:static-int8"] == {"available": False, "reason": trt_reason}
    assert r["verdict"]["passed"], r["verdict"]
    # TensorRT's form of the INT8 file beside the run's files, checked; the builds per version in the report.
    form = out / "model.static-int8.tensorrt.onnx"
    assert r["files"]["onnx:static-int8-tensorrt"] == form.name and form.is_file()
    (label,) = [k for k in r["tensorrt"]["check"] if k.startswith(INT8)]
    assert r["tensorrt"]["check"][label] == [] and form.name in label
    md = (out / "report.md").read_text()
    assert "| int8 | weakly typed, BuilderFlag.INT8, from the Q/DQ file | strongly typed, no precision flag" in md
    # Replay: TensorRT 11 commands carry no precision flag; the INT8 file points at its form.
    files = r["replay"]["files"]
    assert files[INT8]["commands"]["trtexec"].startswith("# ") and files[INT8]["precision"] == "int8"
    eleven = shlex.split(files[form.name]["commands"]["trtexec (TensorRT 11)"])
    assert "--int8" not in eleven and "--fp16" not in eleven
    assert "--int8" in shlex.split(files[form.name]["commands"]["trtexec (TensorRT 10)"])
    fp16 = files["model.static-fp16.onnx"]["commands"]
    assert "--fp16" not in fp16["trtexec (TensorRT 11)"] and "--stronglyTyped" in fp16["trtexec (TensorRT 10)"]
    # Triton: the INT8 file as models of its own, beside the FP32 ones.
    models = r["triton"]["models"]
    assert {"acl_onnxruntime", "acl_python", "acl_int8_onnxruntime", "acl_int8_python"} == set(models)
    assert models["acl_int8_python"]["precision"] == "int8" and models["acl_int8_python"]["source"] == "static-int8"
    assert "precision" not in models["acl_python"]
    for model in ("acl_int8_python", "acl_int8_onnxruntime"):
        assert sha256(repo / model / "1" / "model.onnx") == sha256(out / INT8)
    assert sha256(repo / "acl_python" / "1" / "model.onnx") == sha256(out / "model.static.onnx")


@pytest.mark.serve
@pytest.mark.slow
def test_serve_test_serves_the_int8_model_on_a_real_triton_server(tmp_path, monkeypatch):
    if importlib.util.find_spec("pytriton") is None:
        pytest.skip("nvidia-pytriton (Triton server) is not installed here: it pins numpy<2 (`make test-serve`)")
    out = tmp_path / "run"
    r, _ = job(out, out / "triton", monkeypatch, serve_test=True)
    s = r["serving"]
    assert s["available"] and s["parity"]["passed"], s
    i8 = s["int8"]
    assert i8["model"] == "acl_int8_python" and i8["reference"] == "ONNX Runtime on the same Q/DQ file"
    assert i8["parity"]["passed"] and i8["parity"]["max_abs_err"] < 1e-4, i8
    assert r["stages"]["triton"]["status"] == "ok" and r["verdict"]["passed"], r["verdict"]
    md = (out / "report.md").read_text()
    assert "`acl_int8_python` (INT8) against ONNX Runtime on the same Q/DQ file" in md
