"""Live-akp files convolve constant kernels in their own ``Conv`` (``export.conv_split``, issue 24 item 2).

The model of ``test_banks`` (BatchNorm, residual blocks with a 1x1 downsample, a
depthwise conv, 3x3, 5x5 with a bias and a 7x7 stem): every ACL whose plain kernels
fill whole output channels is split, the others stay one Conv, and the file gives
the static file's and PyTorch's outputs on new inputs, also with fed AKPs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import acl
import export
from deploy.hotswap import KernelGenerator
from export.akp_inputs import ort_session
from export.conv_split import join_split_weights, split_convs
from export.functions import OP_OF_SYMBOL
from export.verify import perturbed_akps
from tests.export.test_banks import SHAPE, Net, _check
from tests.export.test_real_blocks import SPEC, _randomise_bn


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(1)
    return acl.convert(_randomise_bn(Net()), SPEC, layers="all").eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("split")
    return export.export_files(model, {k: d / f"{k}.onnx" for k in ("static", "live", "live-akp")}, SHAPE)


def _splittable(layer: nn.Module) -> bool:
    """Independently of the pass: constant and generated runs each fill whole output channels (no groups)."""
    runs: list[list] = []
    for sym, start, stop, _ in layer.segment_params():
        constant = sym not in OP_OF_SYMBOL
        if not runs or runs[-1][0] != constant:
            runs.append([constant, 0])
        runs[-1][1] += stop - start
    return layer.groups == 1 and len(runs) > 1 and all(n % layer.weight.shape[1] == 0 for _, n in runs)


def _convs(proto: onnx.ModelProto, layer: str) -> list[onnx.NodeProto]:
    """The Convs of one ACL, in channel order."""
    convs = [n for n in proto.graph.node if n.op_type == "Conv" and n.input[1].startswith(f"{layer}.weight")]
    return sorted(convs, key=lambda n: n.input[1])


def test_plain_kernels_are_a_constant_conv_in_live_akp_files_only(model, files):
    live_akp, live = (onnx.load(str(files[k])) for k in ("live-akp", "live"))
    inits = {t.name: t for t in live_akp.graph.initializer}
    layers = dict(acl.acl_layers(model))
    split = [name for name, layer in layers.items() if _splittable(layer)]
    assert {"stem.0", "block1.conv1", "head.0"} <= set(split) and "mobile.dw" not in split, split
    for name, layer in layers.items():
        assert [n.input[1] for n in _convs(live, name)] == [f"{name}.weight"]  # the live file: one Conv each
        convs = _convs(live_akp, name)
        if name not in split:
            assert [n.input[1] for n in convs] == [f"{name}.weight"], name
            continue
        assert [n.input[1] for n in convs] == [f"{name}.weight.0", f"{name}.weight.1"], name
        # the constant run: a Reshape of the plain kernels' initializer (folded at load, then pre-packed)
        made = {o: n for n in live_akp.graph.node for o in n.output}
        reshape = made[f"{name}.weight.1"]
        assert reshape.op_type == "Reshape" and reshape.input[0].startswith(f"{name}.plain"), reshape
        plain = numpy_helper.to_array(inits[reshape.input[0]])
        kernels = layer.weight.detach().numpy().reshape(plain.shape[0] * 2, *plain.shape[1:])  # SPEC: half plain
        np.testing.assert_array_equal(plain, kernels[plain.shape[0] :])
        generated = made[made[f"{name}.weight.0"].input[0]]  # Reshape of a Concat of the banks' slices
        assert generated.op_type == "Concat" and not set(generated.input) & set(inits), generated
        if layer.bias is not None:
            parts = [numpy_helper.to_array(inits[n.input[2]]) for n in convs]
            np.testing.assert_array_equal(np.concatenate(parts), layer.bias.detach().numpy())


def test_outputs_and_fed_akps_match_the_static_file_and_pytorch(model, files):
    x = np.random.default_rng(7).standard_normal((3, *SHAPE[1:])).astype(np.float32)
    sess = ort_session(str(files["live-akp"]))
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    _check(ort_session(str(files["static"])).run(None, {"input": x})[0], sess.run(None, {"input": x})[0], "static")
    _check(ref, sess.run(None, {"input": x})[0], "PyTorch")
    moved, feed = perturbed_akps(model, seed=12)
    with torch.inference_mode():
        ref_moved = moved(torch.from_numpy(x)).numpy()
    assert np.abs(ref_moved - ref).max() > 1e-3
    _check(ref_moved, sess.run(None, {"input": x, **feed})[0], "fed AKPs")


class _TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b = nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.b(self.a(x) + x).mean((2, 3))


@pytest.mark.parametrize(
    ("spec", "convs"),
    [("Tf0.25P0.25G0.25P0.25", 4), ("P0.5Lg0.25Lt0.25", 2), ("G0.3P0.7", 1), ("G0.5Lg0.5", 1)],
)
def test_runs_of_any_order_split_only_on_whole_channels(spec, convs, tmp_path):
    torch.manual_seed(2)
    net = acl.convert(_randomise_bn(_TwoConvs()), spec, layers="all").eval()
    path = export.to_onnx(net, tmp_path / "m.onnx", (1, 16, 8, 8), mode="live", akp_inputs=True)  # verifies too
    proto = onnx.load(str(path))
    assert [len(_convs(proto, n)) for n in ("a.0", "b")] == [convs, convs]
    x = np.random.default_rng(3).standard_normal((2, 16, 8, 8)).astype(np.float32)
    moved, feed = perturbed_akps(net, seed=4)
    with torch.inference_mode():
        ref = moved(torch.from_numpy(x)).numpy()
    _check(ref, ort_session(str(path)).run(None, {"input": x, **feed})[0], spec)


def test_whole_weights_are_joined_again_for_the_kernel_generator(model, files):
    live_akp, live = (onnx.load(str(files[k])) for k in ("live-akp", "live"))
    _, feed = perturbed_akps(model, seed=13)
    want, got = KernelGenerator(live)(feed), KernelGenerator(live_akp)(feed)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-6, err_msg=name)
    # a file with no split layer is left as it is
    assert join_split_weights(live).graph.node == live.graph.node
    assert len(split_convs(live).graph.node) > len(live.graph.node)  # the pass itself works on a live graph
