"""``deploy.openvino``: the OpenVINO runner on a Conv-BN-residual net's static and inlined live files.

OpenVINO lives in the serve environment (``make test-serve``); here only the
availability reason is checked, and the parity test skips with its reason.
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


def test_availability_names_what_is_missing():
    ok, reason = availability("openvino")
    assert ok == HAVE_OPENVINO
    assert ("OpenVINO" in reason) and (ok or "not installed" in reason), reason


@pytest.mark.serve
@pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed here (serve extra: `make test-serve`)")
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
            stats = measure_latency(runner, {export.INPUT_NAME: x[:1]}, warmup=2, min_iters=5, min_seconds=0.0)
            assert stats.iterations >= 5 and stats.p50_ms > 0
