"""``deploy.int8.ort_cpu``: the INT8 file as ONNX Runtime's x86 kernels run it fast, computing what the file means."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from deploy.int8.ort_cpu import SEVEN_BIT, has_vnni, ort_cpu_form, seven_bit_weights, u8_activations
from deploy.int8.quantize import quantize_static_file
from export.sessions import open_session
from tests.deploy.int8.models import export_static, resnet_like, splits


@pytest.fixture(scope="module")
def int8_file(tmp_path_factory):
    """A residual depthwise block: its input feeds the depthwise conv and the addition (two consumers)."""
    folder = tmp_path_factory.mktemp("ortcpu")
    static = export_static(resnet_like(), folder / "model.static.onnx")
    path = quantize_static_file(static, folder / "model.static-int8.onnx", splits()["calibration"][0][:40])
    return onnx.load(str(path))


def _run(model, x, **options) -> np.ndarray:
    return open_session(model, threads=1, **options).run(None, {"input": x})[0]


def _ops(model, tmp_path, name: str) -> list[str]:
    out = tmp_path / f"{name}.optimized.onnx"
    open_session(model, threads=1, optimized_model_filepath=str(out))
    return [n.op_type for n in onnx.load(str(out)).graph.node]


def test_uint8_activations_compute_exactly_what_the_file_means(int8_file):
    x = splits()["test"][0][:64]
    u8 = u8_activations(int8_file)
    assert np.array_equal(_run(u8, x, optimization="disable"), _run(int8_file, x, optimization="disable"))
    types = {i.name: i.data_type for i in u8.graph.initializer}
    for node in u8.graph.node:
        if node.op_type == "QuantizeLinear":
            assert types[node.input[2]] == onnx.TensorProto.UINT8, node.name


def test_every_int8_convolution_runs_as_qlinearconv_in_the_cpu_form(int8_file, tmp_path):
    """ONNX Runtime's own int8-to-uint8 rewrite skips a tensor read twice: the depthwise conv stays float there."""
    as_written = _ops(int8_file, tmp_path, "as-written")
    cpu = _ops(u8_activations(int8_file), tmp_path, "cpu")
    quantized = sum(
        n.op_type == "Conv" and n.input[1] not in {i.name for i in int8_file.graph.initializer}
        for n in int8_file.graph.node
    )
    assert quantized == 2, "depthwise and pointwise (the one-channel stem stays FP32)"
    assert cpu.count("QLinearConv") == quantized and as_written.count("QLinearConv") < quantized


def test_seven_bit_weights_keep_the_values_and_cannot_saturate(int8_file, tmp_path):
    seven = seven_bit_weights(int8_file)
    before = {i.name: numpy_helper.to_array(i) for i in int8_file.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in seven.graph.initializer}
    producers = {o: n for n in int8_file.graph.node for o in n.output}
    weighted = [n for n in int8_file.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in producers]
    for node in weighted:
        q, s = (producers[node.input[1]].input[k] for k in (0, 1))
        assert np.abs(after[q]).max() == SEVEN_BIT, node.name
        shape = [-1] + [1] * (before[q].ndim - 1)
        real_before = before[q] * before[s].reshape(shape)
        real_after = after[q] * after[s].reshape(shape)
        assert np.all(np.abs(real_after - real_before) <= after[s].reshape(shape) / 2 + 1e-7), node.name
    cpu_form = ort_cpu_form(int8_file, seven_bit=True)
    assert _ops(cpu_form, tmp_path, "seven").count("QLinearConv") == 2, "bias scales follow: still fused"
    # No 16-bit saturation: the fused kernels compute what the 7-bit file means, up to float rounding.
    x = splits()["test"][0][:64]
    fast, exact = _run(cpu_form, x), _run(seven, x, optimization="disable")
    assert np.abs(fast - exact).max() <= 0.02 * np.abs(exact).max()


def test_vnni_is_read_from_the_cpu_flags():
    assert has_vnni("processor : 0\nflags : fpu sse avx2 fma\n") is False
    assert has_vnni("flags\t\t: fpu avx2 avx512f avx512_vnni\n") is True
    assert has_vnni("flags : avx2 avx_vnni\n") is True
    assert has_vnni("Processor : ARMv8\nFeatures : fp asimd\n") is None
