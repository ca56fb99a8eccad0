"""``python -m deploy.tensorrt selfcheck``: its logic on the CPU, up to where TensorRT is needed.

What TensorRT would be handed is checked here for real (ONNX Runtime on images the
export never saw); no engine is built, and no check may pass without TensorRT.
"""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from deploy.tensorrt import available, check_onnx
from deploy.tensorrt import selfcheck as sc
from deploy.tensorrt.selfcheck_checks import CHECKS
from deploy.tensorrt.selfcheck_files import prepare
from export.compare import TOLERANCES, compare_outputs
from tests.conftest import ort_out, torch_out

TRT, TRT_REASON = available()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "deploy.tensorrt", "selfcheck", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return prepare(tmp_path_factory.mktemp("selfcheck") / "files")


@pytest.mark.skipif(TRT, reason="TensorRT and a GPU are here: the not-available path cannot be shown")
def test_cli_says_not_available_in_one_line_and_exits_3(tmp_path):
    proc = _cli("--out", str(tmp_path / "out"))
    assert proc.returncode == sc.EXIT_NOT_AVAILABLE == 3
    assert proc.stdout.splitlines() == [f"selfcheck: not available: {TRT_REASON}"] and proc.stderr == ""
    data = json.loads((tmp_path / "out" / sc.VERDICT_FILE).read_text())
    assert data["available"] is False and data["verified_on_gpu"] is False and data["checks"] == {}


def test_cli_refuses_a_file_as_out(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _cli("--out", str(tmp_path / "f"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: --out {tmp_path / 'f'} is a file, expected a folder (created if missing)"
    ]


def test_files_compute_what_tensorrt_must_reproduce(ctx):
    x = ctx.images
    want = {"fp32": torch_out(ctx.model, x), "moved": torch_out(ctx.moved, x), "plain": torch_out(ctx.plain, x)}
    runs = {
        "static": (ort_out(ctx.files["static"], x), want["fp32"], "fp32"),
        "live": (ort_out(ctx.files["live"], x), want["fp32"], "fp32"),
        "live-akp-required": (ort_out(ctx.files["live-akp-required"], x, ctx.moved_akps), want["moved"], "fp32"),
        "plain-static": (ort_out(ctx.files["plain-static"], x), want["plain"], "fp32"),
        "static-fp16": (ort_out(ctx.files["static-fp16"], x), want["fp32"], "fp16"),
        "static-int8": (ort_out(ctx.files["static-int8"], x), want["fp32"], "int8"),
    }
    for kind, (got, ref, precision) in runs.items():
        result = compare_outputs(ref, got, TOLERANCES[precision])
        assert result["passed"], (kind, result)
    assert not np.allclose(want["fp32"], want["moved"], atol=1e-3)  # the new AKPs change the answer
    for kind in ("static", "live", "live-akp-required", "plain-static", "static-fp16"):
        assert check_onnx(ctx.files[kind]) == [], kind


@pytest.mark.skipif(TRT, reason="TensorRT and a GPU are here: the checks would build engines")
def test_no_check_passes_without_tensorrt(ctx):
    results = sc.run_checks(ctx, CHECKS)
    assert [n for n, r in results.items() if r.status == "passed"] == []
    for name, result in results.items():
        if name == "ort-trt" and "TensorrtExecutionProvider" not in ort.get_available_providers():
            assert result.status == "not-available" and "TensorrtExecutionProvider" in result.detail
        else:
            assert result.status == "failed" and result.detail.startswith("TensorRTUnavailable: "), (name, result)


def test_verdict_exit_codes_and_summary():
    passed = sc.CheckResult("passed", "max abs 1e-06")
    failed = sc.CheckResult("failed", "RuntimeError: boom")
    na = sc.CheckResult("not-available", "no INT8 file")
    ok = sc.verdict(True, "TensorRT 10.16.1", {"a": passed, "int8": na})
    assert ok["exit_code"] == 0 and ok["verified_on_gpu"] is True
    assert ok["summary"] == "selfcheck: passed on TensorRT 10.16.1: 1/2 passed; not-available: int8"
    bad = sc.verdict(True, "TensorRT 11.1.0", {"a": passed, "b": failed})
    assert bad["exit_code"] == 1 and bad["summary"].startswith("selfcheck: FAILED on TensorRT 11.1.0: 1/2 passed")
    assert sc.verdict(True, "TensorRT 11.1.0", {"int8": na})["exit_code"] == 1  # nothing verified is no pass
    assert sc.verdict(False, "no GPU", {})["exit_code"] == 3


def test_run_checks_keeps_going_after_a_failure():
    def boom(_ctx):
        raise RuntimeError("CUDA error 700\nmore")

    def good(_ctx):
        return {"passed": True, "max_abs_err": 1e-6, "max_rel_err": 1e-5, "top1_agreement": 1.0}

    def missing(_ctx):
        raise sc.NotAvailable("no INT8 file")

    results = sc.run_checks(None, {"boom": boom, "good": good, "missing": missing})
    assert results["boom"].status == "failed" and results["boom"].detail == "RuntimeError: CUDA error 700"
    assert results["good"].status == "passed" and results["missing"].status == "not-available"


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.skipif(not TRT, reason=f"TensorRT not available: {TRT_REASON}")
def test_selfcheck_passes_on_this_gpu(tmp_path):
    data = sc.run(tmp_path)
    failed = {n: c["detail"] for n, c in data["checks"].items() if c["status"] == "failed"}
    assert data["exit_code"] == 0 and not failed, failed
    assert data["verified_on_gpu"] is True and data["rules"]
