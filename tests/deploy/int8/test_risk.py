"""The INT8 risk report: ONNX Runtime's own scales, family parts that add up to the layer's error, and the flag.

Realistic models (resnet18_cifar, mobilenet_v2 with depthwise and 1x1 convs, a
grouped AnaNN with every family) with trained-looking BatchNorm, on random inputs
that are not the ones any file was exported or calibrated with.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acl
from acl.interpret import conv_input
from deploy.int8.risk import (
    MIN_BITS,
    QMAX,
    batchnorm_after,
    fake_quantize,
    family_errors,
    fold_batchnorm,
    kernel_groups,
    risk_report,
    weight_scales,
)
from pipeline.archs import DEFAULT_SPEC, build
from tests.conftest import small_anann, trained_looking_bn

# ONNX Runtime's settings for the Q/DQ file, as the INT8 stage uses them.
QDQ_OPTIONS = {"ActivationSymmetric": True, "WeightSymmetric": True}


def _qdq_net() -> nn.Module:
    """An ACL stem and an ACL with BatchNorm, a plain depthwise conv with BatchNorm, a plain 1x1 conv without."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, groups=12),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 8, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    net = acl.convert(net, {"0": "G0.25Lg0.25P0.5", "3": "Lg0.1G0.3Tf0.2P0.4"}, layers=["0", "3"])
    return trained_looking_bn(net, (3, 16, 16))


def _ort_qdq(model: nn.Module, folder) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """``quantize_static`` (QDQ, per channel, symmetric INT8) of the static file: per Conv, in graph order,
    its INT8 weight, scales and axis."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import export

    static = export.to_onnx(model, folder / "m.static.onnx", (1, 3, 16, 16), mode="static")
    quant_pre_process(str(static), str(folder / "m.pre.onnx"))
    rng = np.random.default_rng(7)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": rng.standard_normal((2, 3, 16, 16)).astype(np.float32)} for _ in range(3)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        str(folder / "m.pre.onnx"),
        str(folder / "m.qdq.onnx"),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QInt8,
        extra_options=QDQ_OPTIONS,
    )
    graph = onnx.load(folder / "m.qdq.onnx").graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for node in (n for n in graph.node if n.op_type == "Conv"):
        dq = producer[node.input[1]]
        assert dq.op_type == "DequantizeLinear", f"{node.name}'s weight is not dequantized"
        axis = next((a.i for a in dq.attribute if a.name == "axis"), None)
        out[node.name] = (inits[dq.input[0]], inits[dq.input[1]], axis)
    return out


def test_scales_and_int8_weights_are_those_onnx_runtime_writes(tmp_path):
    net = _qdq_net()
    written = list(_ort_qdq(net, tmp_path).values())
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, acl.AnalyticConv2d))]
    folded = batchnorm_after(net, torch.randn(1, 3, 16, 16))
    assert {c: bn for c, (bn, _) in folded.items()} == {"0": "1", "3": "4", "6": "7"}
    assert len(written) == len(convs)
    for (name, layer), (q, scale, axis) in zip(convs, written):
        w = layer.weight.detach()
        if name in folded:
            w = fold_batchnorm(w, folded[name][1])
        mine = weight_scales(w).numpy()
        assert axis == 0 and scale.dtype == np.float32 and scale.shape == (w.shape[0],)
        rel = np.abs(mine.astype(np.float64) / scale - 1).max()
        assert np.array_equal(mine, scale), f"layer {name}: scales differ, max relative difference {rel:.3g}"
        ints = torch.round(w / torch.from_numpy(mine).view(-1, 1, 1, 1)).numpy()
        assert np.array_equal(ints, q), f"layer {name}: {(ints != q).sum()} INT8 weights differ"
        deq = fake_quantize(w, torch.from_numpy(mine)).numpy()
        assert np.array_equal(deq, q.astype(np.float32) * scale.reshape(-1, 1, 1, 1)), f"layer {name}: Q(W)"


def _inputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every convolution's input on ``x``."""
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, args, name=n: seen.__setitem__(name, args[0].detach()))
        for n, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, acl.AnalyticConv2d))
    ]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return seen


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30))


MODELS = {
    "resnet18_cifar": lambda: trained_looking_bn(
        build("resnet18_cifar", DEFAULT_SPEC, layers="all", in_channels=3), (3, 16, 16)
    ),
    "mobilenet_v2": lambda: trained_looking_bn(
        build("mobilenet_v2", DEFAULT_SPEC, layers="all", in_channels=3), (3, 16, 16)
    ),
    "anann-grouped": lambda: small_anann(),
    # families alternating kernel by kernel, so every stacked part spans both convolution groups
    "interleaved-grouped": lambda: trained_looking_bn(
        nn.Sequential(acl.AnalyticConv2d(4, 8, 3, padding=1, groups=2, spec="G1Lg1P2" * 4), nn.BatchNorm2d(8)),
        (4, 8, 8),
    ),
}


@pytest.mark.parametrize("arch", list(MODELS))
def test_family_parts_add_up_to_the_layers_weight_quantization_error(arch):
    torch.manual_seed(1)
    model = MODELS[arch]().eval()
    channels = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, acl.AnalyticConv2d))).in_channels
    x = torch.randn(2, channels, 16, 16)
    inputs, folded = _inputs(model, x), batchnorm_after(model, x[:1])
    layers = dict(m for m in model.named_modules() if isinstance(m[1], (nn.Conv2d, acl.AnalyticConv2d)))
    assert any(len(kernel_groups(m)[0]) > 1 for m in layers.values()), "some layer mixes families"
    for name, layer in layers.items():
        w = layer.weight.detach()
        bn = folded.get(name, (None, None))[1]
        w = fold_batchnorm(w, bn) if bn is not None else w
        names, index = kernel_groups(layer)
        parts = family_errors(layer, inputs[name], w, index, len(names))
        xp, padding = conv_input(layer, inputs[name])
        dw = fake_quantize(w, weight_scales(w)) - w
        whole = F.conv2d(xp, dw, None, layer.stride, padding, layer.dilation, layer.groups)
        rel = _rel(parts.sum(1), whole)
        assert rel < 1e-5, f"{arch} {name}: the families' parts differ from conv(x, dW) by {rel:.3g} (relative max)"
        if bn is not None:  # the unfused layer, in float64: BN(conv(x, Q(W_folded) / alpha)) - BN(conv(x, W))
            # 1e-4, not 1e-5: folding in float32 (as the file does) moves a weight by up to an ulp, 2^-24 of the
            # channel's max |w|, which is 127 * 2^-24 = 8e-6 of a quantization step, and errors add over a kernel.
            rel = _rel(parts.sum(1), _unfused_error(layer, bn, inputs[name], w))
            assert rel < 1e-4, f"{arch} {name}: folded vs unfused error differ by {rel:.3g} (relative max)"


@torch.no_grad()
def _unfused_error(layer: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor, folded: torch.Tensor) -> torch.Tensor:
    alpha = (bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)).view(-1, 1, 1, 1)
    xp, padding = conv_input(layer, x.double())
    bn64 = nn.BatchNorm2d(bn.num_features, bn.eps).double().eval()
    bn64.load_state_dict(bn.state_dict())

    def out(w: torch.Tensor) -> torch.Tensor:
        return bn64(F.conv2d(xp, w, None, layer.stride, padding, layer.dilation, layer.groups))

    quantized = fake_quantize(folded, weight_scales(folded)).double() / alpha
    return out(quantized) - out(layer.weight.detach().double())


def test_the_report_on_a_resnet_matches_a_direct_measurement_and_reads_every_layer():
    torch.manual_seed(2)
    model = MODELS["resnet18_cifar"]().eval()
    x = torch.randn(5, 3, 16, 16)
    report = risk_report(model, x, batch=2)  # 3 batches: the sums run over them
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, acl.AnalyticConv2d))]
    assert list(report["layers"]) == convs and report["images"] == 5 and report["min_bits"] == MIN_BITS
    stem = report["layers"]["conv1"]
    assert stem["kind"] == "acl" and stem["batchnorm"] == "bn1" and stem["kernels"] == 3 * 64
    w = fold_batchnorm(model.conv1.weight.detach(), model.bn1).double()
    xp, padding = conv_input(model.conv1, x.double())  # the stem reads the images themselves
    ref = F.conv2d(xp, w, None, model.conv1.stride, padding)
    err = F.conv2d(xp, fake_quantize(w.float(), weight_scales(w.float())).double() - w, None, 1, padding)
    direct = math.sqrt(float(err.square().sum() / ref.square().sum()))
    assert stem["relative_error"] == pytest.approx(direct, rel=1e-4)
    shortcut = report["layers"]["layer2.0.downsample.0"]  # a plain 1x1 conv with its BatchNorm
    assert shortcut["kind"] == "conv" and shortcut["batchnorm"] == "layer2.0.downsample.1"
    assert list(shortcut["families"]) == ["plain"] and shortcut["families"]["plain"]["error_share"] == 1.0
    assert shortcut["families"]["plain"]["bits_min"] == pytest.approx(math.log2(QMAX))
    for name, e in report["layers"].items():
        shares = sum(f["error_share"] for f in e["families"].values())
        assert shares == pytest.approx(1.0), f"{name}: error shares add up to {shares}"
        assert sum(f["kernels"] for f in e["families"].values()) == e["kernels"]


def _mixed_layer(sigma: float) -> acl.AnalyticConv2d:
    """Two output channels of two kernels: channel 0 holds a LoG and a Gabor, channel 1 two Gabors."""
    torch.manual_seed(0)
    layer = acl.AnalyticConv2d(2, 2, 5, padding=2, bias=False, spec="Lg1G3").eval()
    with torch.no_grad():
        layer.akp0_Lg.fill_(sigma)  # LoG's centre is -1 / (pi sigma^4): 39 at 0.3, 0.3 at 1.0
    return layer


def test_a_family_whose_big_kernels_set_the_scale_flags_the_family_it_starves():
    x = torch.randn(4, 2, 12, 12)
    report = risk_report(nn.Sequential(_mixed_layer(0.3)), x)["layers"]["0"]
    lg, gabor = report["families"]["LoG"], report["families"]["Gabor"]
    assert lg["max_abs"] > 30 > 2 > gabor["max_abs"], "LoG's centre is far above the Gabors"
    assert lg["sets_scale"] == 1 and gabor["sets_scale"] == 1
    assert gabor["bits_min"] < MIN_BITS < gabor["bits_median"] + 1, gabor
    assert report["flags"] == [
        {
            "setter": "LoG",
            "family": "Gabor",
            "channels": 1,
            "of": 2,
            "bits_min": gabor["bits_min"],
            "error_share": gabor["error_share"],
        }
    ]
    calm = risk_report(nn.Sequential(_mixed_layer(1.0)), x)["layers"]["0"]
    assert calm["flags"] == [], "ranges within a factor 8 of each other are not flagged"
    assert min(f["bits_min"] for f in calm["families"].values()) > MIN_BITS
    assert risk_report(nn.Sequential(_mixed_layer(0.3)), x, min_bits=1.0)["layers"]["0"]["flags"] == []


def test_the_model_is_left_as_it_was():
    model = MODELS["anann-grouped"]().train()
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    risk_report(model, torch.randn(3, 1, 12, 12))
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
