import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto

from deploy.fp16 import FP16_MAX, kept_fp32, to_fp16_onnx
from deploy.fp16_range import fp16_range_report, overflow_plan
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


def _static(model, path, shape=(1, 1, 12, 12)):
    import export

    return export.export_files(model, {"static": path}, shape)["static"]


def test_range_report_is_clean_for_a_normal_model(exported, fresh_input):
    report = fp16_range_report(exported["static"], fresh_input)
    assert [r.name for r in report.layers] == ["0", "2", "6"]
    for r in report.layers:
        for form, f in r.forms.items():
            assert f.precision == "fp16" and not f.flags, (r.name, form, f)
            assert 0 < f.fp16_rel_error < 1e-2
    assert report.overflow == {"onnx-fp16": {}, "tensorrt": {}} and report.kept_fp32 == {}


def test_range_report_flags_a_tiny_log_sigma(fresh_input, tmp_path):
    model = small_anann()
    with torch.no_grad():
        # 5x5 layer: LoG centre -1/(pi sigma^4) ~ -3.9e5, beyond FP16. (The (4, 3) layer has no
        # centre sample, so a tiny sigma there gives zeros, not overflow.)
        model[0].akp1_Lg[0, 0] = 0.03
    static = _static(model, tmp_path / "s.onnx")
    report = fp16_range_report(static, fresh_input)
    trt = {r.name: r.forms["tensorrt"] for r in report.layers}["0"]
    assert trt.weight_max_abs > FP16_MAX
    assert any(f.startswith("weight overflow") for f in trt.flags), trt.flags
    assert any(f.startswith("activation overflow") for f in trt.flags), trt.flags
    assert "0" in report.overflow["tensorrt"]
    # The FP16 file keeps that layer FP32 instead of clipping its weights, so it does not overflow.
    in_file = {r.name: r.forms["onnx-fp16"] for r in report.layers}["0"]
    assert in_file.precision == "fp32" and in_file.note.startswith("weight `0.weight` reaches")
    assert "0" not in report.overflow["onnx-fp16"]


def test_range_report_flags_weights_below_fp16_normal_range(fresh_input, tmp_path):
    model = small_anann()
    with torch.no_grad():
        model[0].plain5.mul_(1e-6)  # plain kernels of the first layer become tiny
    report = {r.name: r for r in fp16_range_report(_static(model, tmp_path / "s.onnx"), fresh_input).layers}
    f = report["0"].forms["onnx-fp16"]
    assert f.weight_subnormal_share > 0.01
    assert any("below FP16 normal range" in x for x in f.flags)


def test_fp16_onnx_of_the_live_file_is_valid(exported, tmp_path):
    m = to_fp16_onnx(exported["live"])
    onnx.checker.check_model(m, full_check=True)
    assert {f.name for f in m.functions} == {f.name for f in onnx.load(str(exported["live"])).functions}
    assert np.isfinite(ort_out_model(m)).all()


def ort_out_model(m, feed=None):
    import onnxruntime as ort

    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed or {"input": np.zeros((2, 1, 12, 12), np.float32)})[0]


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


# A 3x3 convolution whose outputs reach ~7.9e5, brought back to ~1 by BatchNorm (tests/fp16_models.py).


def _images(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 1, 32, 32)).astype(np.float32)


def _ops(path):
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def _weights(path):
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_overflowing_conv_that_the_exporter_folds_raises_no_alarm(tmp_path):
    from tests.fp16_models import overflow_net

    net = overflow_net()
    x = _images(16, 1)
    with torch.no_grad():
        assert net[0](torch.from_numpy(x)).abs().max() > 5e5  # the module alone would overflow FP16
    static = _static(net, tmp_path / "s.onnx", (1, 1, 32, 32))
    assert "BatchNormalization" not in _ops(static), "the exporter folds BatchNorm into the plain convolution"
    assert overflow_plan(static, x) == {}
    report = fp16_range_report(static, x)
    assert all(not f.flags for r in report.layers for f in r.forms.values()), report.layers
    assert report.overflow == {"onnx-fp16": {}, "tensorrt": {}} and report.kept_fp32 == {}
    to_fp16_onnx(static, tmp_path / "s.fp16.onnx")
    assert _weights(tmp_path / "s.fp16.onnx")["0.weight"].dtype == np.float16  # nothing kept FP32


def test_acl_whose_conv_overflows_before_batchnorm_is_kept_fp32_never_clipped(tmp_path):
    import acl
    from tests.fp16_models import WEIGHT_MAX, overflow_net

    net = acl.convert(overflow_net(), "G0.25Lg0.25P0.5", layers="all")
    static = _static(net, tmp_path / "s.onnx", (1, 1, 32, 32))
    assert "BatchNormalization" in _ops(static), "an ACL's BatchNorm stays a node of its own"
    x = _images(16, 1)
    out = tmp_path / "s.fp16.onnx"
    to_fp16_onnx(static, out, keep_fp32=overflow_plan(static, x))
    w = _weights(out)["0.weight"]
    assert w.dtype == np.float32 and float(np.abs(w).max()) == pytest.approx(WEIGHT_MAX, rel=1e-6), "not clipped"
    (conv,) = [n.name for n in onnx.load(str(out)).graph.node if n.op_type == "Conv"]
    why = kept_fp32(out)[conv]
    assert "weight `0.weight` reaches 2.3e+05" in why and "output" in why and "on 16 images" in why
    fresh = _images(8, 2)  # not the images the plan saw
    res = compare_outputs(ort_out(static, fresh), ort_out(out, fresh), TOLERANCES["fp16"])
    assert res["passed"] and res["top1_agreement"] == 1.0, res
    report = fp16_range_report(static, x, fp16=out)
    layer = {r.name: r for r in report.layers}["0"]
    assert layer.forms["onnx-fp16"].precision == "fp32" and layer.forms["onnx-fp16"].note == why
    trt = layer.forms["tensorrt"]  # BatchNorm folded first: small weights and outputs
    assert trt.note.startswith("BatchNorm `") and trt.weight_max_abs < 10 and trt.activation_max_abs < 100
    assert report.overflow == {"onnx-fp16": {}, "tensorrt": {}} and report.kept_fp32 == {conv: why}


def test_fp16_conv_overflowing_before_an_fp32_batchnorm_is_flagged_though_ort_cpu_hides_it(tmp_path):
    """An FP16 file with the convolution in FP16 (weights fit; outputs do not), BatchNorm FP32 after it."""
    import acl
    from deploy.fp16_computed import computed_precision
    from tests.fp16_models import overflow_net

    net = acl.convert(overflow_net(weight_max=4e4), "G0.25Lg0.25P0.5", layers="all")
    static = _static(net, tmp_path / "s.onnx", (1, 1, 32, 32))
    x = _images(16, 1)
    out = tmp_path / "s.fp16.onnx"
    to_fp16_onnx(static, out)  # without the data's plan: the convolution is FP16 in this file
    assert _weights(out)["0.weight"].dtype == np.float16
    report = fp16_range_report(static, x, fp16=out)
    f = {r.name: r for r in report.layers}["0"].forms["onnx-fp16"]
    assert f.precision == "fp16" and f.activation_max_abs > FP16_MAX
    assert any(x.startswith("non-finite in FP16") for x in f.flags), f.flags
    assert "0" in report.overflow["onnx-fp16"] and report.overflow["tensorrt"] == {}
    # ONNX Runtime's CPU provider computes that convolution in FP32 and skips the FP16
    # rounding of its output: finite logits that agree with FP32, where an FP16 device gives Inf.
    res = compare_outputs(ort_out(static, x), ort_out(out, x), TOLERANCES["fp16"])
    assert res["passed"], res
    done = computed_precision(out, ["CPUExecutionProvider"], {"input": x[:2]})
    assert done["fp32"].get("Conv", 0) >= 1 and "Conv" not in done["fp16"], done


def test_batchnorm_that_does_not_normalise_back_overflows_in_tensorrt_form(tmp_path):
    from tests.fp16_models import overflow_net

    static = _static(overflow_net(normalised=False), tmp_path / "s.onnx", (1, 1, 32, 32))
    x = _images(16, 1)
    out = tmp_path / "s.fp16.onnx"
    to_fp16_onnx(static, out, keep_fp32=overflow_plan(static, x))
    report = fp16_range_report(static, x, fp16=out)
    assert "0" in report.overflow["tensorrt"], report.overflow
    assert report.overflow["onnx-fp16"] == {}, "the FP16 file keeps FP32 whatever exceeds FP16 on the data"
    assert np.isfinite(ort_out(out, _images(4, 3))).all()


def test_fp16_file_passes_values_between_kept_nodes_without_rounding_them_to_fp16(tmp_path):
    """onnxconverter-common sends a kept node's output through FP16 when two kept nodes read it,
    and leaves the graph output FP16 when the last node is kept."""
    from onnx import helper

    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Mul", ["x", "big"], ["y"], name="up"),
        helper.make_node("Relu", ["y"], ["r"], name="relu"),
        helper.make_node("Neg", ["y"], ["n"], name="neg"),
        helper.make_node("Add", ["r", "n"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "small"], ["z"], name="down"),
    ]
    consts = [
        onnx.numpy_helper.from_array(np.array(1e5, np.float32), "big"),
        onnx.numpy_helper.from_array(np.array(1e-5, np.float32), "small"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", f, [None, 4])],
        [helper.make_tensor_value_info("z", f, None)],
        initializer=consts,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    plan = overflow_plan(model, x)
    assert set(plan) == {"up", "relu", "neg", "add", "down"}, plan
    m = to_fp16_onnx(model, keep_fp32=plan)
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    got = ort_out_model(m, {"x": x})
    want = np.minimum(x, 0) * -1.0  # relu(1e5 x) - 1e5 x, times 1e-5
    assert np.isfinite(got).all() and np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_fp16_keeps_the_akps_of_a_generator_bank_fp32(tmp_path):
    """Two ACLs of one kernel size share one generator call, fed by a Concat of their AKPs (export.banks)."""
    import acl
    import export

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 10),
    )
    model = acl.convert(net, "G0.25Lg0.25P0.5", layers="all").eval()
    live = export.to_onnx(model, tmp_path / "live.onnx", (1, 1, 12, 12), mode="live")
    assert any(n.op_type == "Concat" and n.name.startswith("acl/bank/") for n in onnx.load(str(live)).graph.node)
    m = to_fp16_onnx(live)
    akps = {t.name: t.data_type for t in m.graph.initializer if ".akp" in t.name}
    assert len(akps) == 4 and set(akps.values()) == {TensorProto.FLOAT}
    x = np.random.default_rng(1).standard_normal((3, 1, 12, 12)).astype(np.float32)
    res = compare_outputs(torch_out(model, x), ort_out_model(m, {"input": x}), TOLERANCES["fp16"])
    assert res["passed"], res
