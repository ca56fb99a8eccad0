"""``deploy.openvino``: the OpenVINO runner on a Conv-BN-residual net's static and inlined live files.

OpenVINO is in the test extra; where it is not installed the availability reason
is checked and the other tests skip with theirs. The runner must ask for its
precision (a CPU with native bf16 computes in bf16 unless told f32) and report
the one OpenVINO used.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import export
from deploy.backends import availability
from deploy.openvino import OpenVinoRunner
from deploy.timing import measure_latency
from export.compare import TOLERANCES, compare_outputs
from export.inline import inline
from tests.conftest import torch_out
from tests.deploy.triton.nets import small_resnet

IMAGE = (3, 16, 16)
HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
NEEDS_OPENVINO = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed here (pip install openvino)")


def test_availability_names_what_is_missing():
    ok, reason = availability("openvino")
    assert ok == HAVE_OPENVINO
    assert ("OpenVINO" in reason) and (ok or "not installed" in reason), reason


@NEEDS_OPENVINO
def test_runner_matches_pytorch_on_static_and_inlined_live_files(tmp_path):
    model = small_resnet(seed=5, image=IMAGE)
    files = export.export_files(model, {"static": tmp_path / "s.onnx", "live": tmp_path / "l.onnx"}, (1, *IMAGE))
    files["live"] = inline(files["live"], tmp_path / "l.inlined.onnx")
    x = np.random.default_rng(17).standard_normal((4, *IMAGE)).astype(np.float32)
    ref = torch_out(model, x)
    for kind, path in files.items():
        with OpenVinoRunner(path, threads=1) as runner:
            assert list(runner.get_input_metadata(use_numpy_dtypes=False)[export.INPUT_NAME].shape)[1:] == list(IMAGE)
            got = runner.infer({export.INPUT_NAME: x})[export.OUTPUT_NAME]
            first = got.copy()
            runner.infer({export.INPUT_NAME: x[::-1].copy()})
            assert np.array_equal(first, got), "an answer changed after the next call"
            res = compare_outputs(ref, got, TOLERANCES["fp32"])
            assert res["passed"], f"OpenVINO on the {kind} file: max abs {res['max_abs_err']}"
            assert runner.inference_precision == "fp32"
            stats = measure_latency(runner, {export.INPUT_NAME: x[:1]}, warmup=2, min_iters=5, min_seconds=0.0)
            assert stats.iterations >= 5 and stats.p50_ms > 0


@NEEDS_OPENVINO
def test_runner_asks_for_its_precision_and_reads_back_the_one_used(tmp_path, monkeypatch):
    """Leaving the precision to the plugin gives bf16 on a CPU with native bf16: f32 must be asked for."""
    import openvino as ov
    import openvino.properties.hint as hints

    configs = []

    class RecordingCore(ov.Core):
        def compile_model(self, model, device, config):
            configs.append(dict(config))
            return super().compile_model(model, device, config)

    monkeypatch.setattr(ov, "Core", RecordingCore)
    path = export.to_onnx(small_resnet(seed=2, image=IMAGE), tmp_path / "s.onnx", (1, *IMAGE))
    with OpenVinoRunner(path, threads=1) as runner:
        assert runner.inference_precision == "fp32"
    asked = {str(k): v for k, v in configs[-1].items()}
    assert asked[hints.inference_precision()] == ov.Type.f32, asked
    with pytest.raises(ValueError, match="precision 'fp16'; expected one of fp32, bf16"):
        OpenVinoRunner(path, precision="fp16")


def test_bf16_availability_follows_the_device_capabilities():
    from deploy.openvino import bf16_available

    ok, reason = bf16_available()
    if not HAVE_OPENVINO:
        assert not ok and "not installed" in reason
        return
    import openvino as ov

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ok == native, reason
    assert ("natively" in reason) if ok else ("has no native bf16" in reason and "FP32" in reason), reason
