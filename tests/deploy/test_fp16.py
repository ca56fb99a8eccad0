import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from deploy.fp16 import FP16_MAX, fp16_range_report, to_fp16_onnx
from export.compare import TOLERANCES, compare_outputs
from tests.conftest import ort_out, small_anann, torch_out


@pytest.mark.parametrize("mode", ["static", "live"])
def test_fp16_onnx_keeps_fp32_io_and_stays_within_fp16_tolerance(anann, exported, fresh_input, tmp_path, mode):
    out = tmp_path / f"{mode}.fp16.onnx"
    m = to_fp16_onnx(exported[mode], out)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    halves = [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT16]
    assert halves, "weights are stored in FP16"
    if mode == "live":  # the kernel generators keep their FP32 AKPs
        akps = {t.name: t.data_type for t in m.graph.initializer if ".akp" in t.name}
        assert akps and set(akps.values()) == {TensorProto.FLOAT}
    got = ort_out(out, fresh_input)
    res = compare_outputs(torch_out(anann, fresh_input), got, TOLERANCES["fp16"])
    assert res["passed"], res
    assert res["max_abs_err"] > 1e-6  # it did compute in half precision


def test_range_report_is_clean_for_a_normal_model(anann, fresh_input):
    report = fp16_range_report(anann, fresh_input)
    assert [r.name for r in report] == ["0", "2", "6"]
    assert all(not r.flags for r in report), [r.flags for r in report]
    assert all(0 < r.fp16_rel_error < 1e-2 for r in report)


def test_range_report_flags_a_tiny_log_sigma(fresh_input):
    model = small_anann()
    with torch.no_grad():
        # 5x5 layer: LoG centre -1/(pi sigma^4) ~ -3.9e5, beyond FP16. (The (4, 3) layer has no
        # centre sample, so a tiny sigma there gives zeros, not overflow.)
        model[0].akp1_Lg[0, 0] = 0.03
    report = {r.name: r for r in fp16_range_report(model, fresh_input)}
    flags = report["0"].flags
    assert report["0"].weight_max_abs > FP16_MAX
    assert any(f.startswith("weight overflow") for f in flags), flags
    assert any(f.startswith("activation overflow") for f in flags), flags


def test_range_report_flags_weights_below_fp16_normal_range(fresh_input):
    model = small_anann()
    with torch.no_grad():
        model[0].plain5.mul_(1e-6)  # plain kernels of the first layer become tiny
    report = {r.name: r for r in fp16_range_report(model, fresh_input)}
    assert report["0"].weight_subnormal_share > 0.01
    assert any("below FP16 normal range" in f for f in report["0"].flags)


def test_fp16_onnx_of_the_live_file_is_valid(exported, tmp_path):
    m = to_fp16_onnx(exported["live"])
    onnx.checker.check_model(m, full_check=True)
    assert {f.name for f in m.functions} == {f.name for f in onnx.load(str(exported["live"])).functions}
    assert np.isfinite(ort_out_model(m)).all()


def ort_out_model(m):
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": np.zeros((2, 1, 12, 12), np.float32)})[0]


def test_fp16_file_keeps_large_weights_up_to_the_fp16_maximum(exported, tmp_path):
    """The converter's default would clamp at 1e4; half precision holds up to 65504."""
    m = onnx.load(str(exported["static"]))
    for t in m.graph.initializer:
        if t.name == "0.weight":
            arr = onnx.numpy_helper.to_array(t).copy()
            arr.flat[0] = 30000.0
            t.CopyFrom(onnx.numpy_helper.from_array(arr, t.name))
    out = to_fp16_onnx(m)
    w = {t.name: onnx.numpy_helper.to_array(t) for t in out.graph.initializer}["0.weight"]
    assert w.dtype == np.float16 and float(w.flat[0]) == 30000.0


def test_fp16_file_of_a_resnet_agrees_with_fp32(tmp_path):
    # A deep BatchNorm net is where half precision goes wrong: BatchNormalization
    # run in FP16 moved these logits by 0.5 and flipped a quarter of the argmaxes.
    import export
    from pipeline.archs import build
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(0)
    net = trained_looking_bn(build("resnet18_cifar", in_channels=3), (3, 32, 32))
    static = export.export_files(net, {"static": tmp_path / "s.onnx"}, (1, 3, 32, 32))["static"]
    m = to_fp16_onnx(static, tmp_path / "s.fp16.onnx")
    assert {n.op_type for n in m.graph.node if n.op_type == "Conv"}, "convolutions are converted"
    x = np.random.default_rng(7).standard_normal((16, 3, 32, 32), dtype=np.float32)
    res = compare_outputs(ort_out(static, x), ort_out(tmp_path / "s.fp16.onnx", x), TOLERANCES["fp16"])
    assert res["passed"] and res["top1_agreement"] == 1.0, res
