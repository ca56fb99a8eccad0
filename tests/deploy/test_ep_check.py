"""Issue 21: a silent ONNX Runtime fallback from the TensorRT (or CUDA) provider is caught and reported."""

from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
import pytest

from deploy.ep_check import ProviderFallback, provider_fallback
from deploy.runners import OrtRunner, TorchRunner, ort_providers
from pipeline.rows import Row
from pipeline.validate import run_latency, run_parity

TRT_EP = "TensorrtExecutionProvider"
NO_TRT_EP = pytest.mark.skipif(
    TRT_EP in ort.get_available_providers(), reason="this onnxruntime has the TensorRT provider: no fallback to show"
)


def _session(providers, options, subgraphs=()):
    return SimpleNamespace(
        get_providers=lambda: providers,
        get_provider_options=lambda: options,
        get_provider_graph_assignment_info=lambda: list(subgraphs),
    )


def _subgraph(ep, *ops):
    return SimpleNamespace(ep_name=ep, get_nodes=lambda: [SimpleNamespace(op_type=o) for o in ops])


@NO_TRT_EP
def test_ort_trt_runner_refuses_to_run_on_the_cpu(exported):
    runner = OrtRunner(exported["static"], ort_providers("tensorrt", fp16=True))
    with pytest.raises(ProviderFallback, match=f"fell back from {TRT_EP} to CPUExecutionProvider"):
        runner.activate()
    assert not runner.is_active


@NO_TRT_EP
def test_fallback_rows_are_not_available_in_parity_and_latency(anann, exported, fresh_input):
    rows = [
        Row(
            "torch:eager",
            lambda: TorchRunner(anann, {"input": (np.float32, [None, 1, 12, 12])}, ["logits"]),
            reference="none",
        ),
        Row("ort-cpu:static", lambda: OrtRunner(exported["static"], ort_providers("cpu"), threads=1)),
        Row("ort-trt:static", lambda: OrtRunner(exported["static"], ort_providers("tensorrt"), threads=1)),
    ]
    parity = run_parity(anann, anann, rows, fresh_input)
    assert parity["ort-cpu:static"]["passed"]
    assert parity["ort-trt:static"]["available"] is False
    assert TRT_EP in parity["ort-trt:static"]["reason"]
    latency = run_latency(rows, fresh_input, [1], 0.01)
    assert latency["ort-trt:static"]["available"] is False and "1" in latency["ort-cpu:static"]


def test_options_not_applied_are_a_fallback():
    providers = ort_providers("tensorrt", fp16=True)
    session = _session([TRT_EP, "CPUExecutionProvider"], {TRT_EP: {"trt_fp16_enable": "0"}})
    assert "trt_fp16_enable='0' (asked '1')" in provider_fallback(session, providers)
    applied = _session([TRT_EP, "CPUExecutionProvider"], {TRT_EP: {"trt_fp16_enable": "True"}})
    assert provider_fallback(applied, providers) is None


def test_nodes_on_another_provider_are_a_fallback():
    providers = ort_providers("tensorrt")
    options = {TRT_EP: {"trt_fp16_enable": "0"}}
    split = [_subgraph(TRT_EP, "Conv", "Relu"), _subgraph("CUDAExecutionProvider", "ConstantOfShape", "Sqrt")]
    reason = provider_fallback(_session([TRT_EP, "CUDAExecutionProvider"], options, split), providers)
    assert reason == (
        f"{TRT_EP} did not take the whole graph: 2 node(s) on CUDAExecutionProvider (ConstantOfShape, Sqrt)"
    )
    whole = [_subgraph(TRT_EP, "Conv", "Relu", "Gemm")]
    assert provider_fallback(_session([TRT_EP, "CUDAExecutionProvider"], options, whole), providers) is None


def test_cpu_rows_are_not_checked(exported):
    with OrtRunner(exported["static"], ort_providers("cpu"), threads=1) as runner:
        assert runner.active_providers == ["CPUExecutionProvider"]


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_ort_cuda_runner_refuses_to_run_on_the_cpu(exported):
    with pytest.raises(ProviderFallback, match="fell back from CUDAExecutionProvider to CPUExecutionProvider"):
        OrtRunner(exported["static"], ort_providers("cuda")).activate()
