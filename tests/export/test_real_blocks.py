"""Static, live and live-akp exports of the blocks real CNNs are made of, checked in ONNX Runtime.

Every block has BatchNorm with non-trivial statistics where real nets have it
(the live export once dropped the folded BatchNorm scale silently). Each export
is compared with PyTorch on inputs other than the export example, and a live-akp
file is also fed moved AKPs and compared with the PyTorch model holding them.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import acl
import export
from export.compare import TOLERANCES, compare_outputs
from export.verify import ExportVerificationError, perturbed_akps, verify_onnx

SPEC = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) * 3 + 0.2)
            m.weight.data.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 2 - 1)
    return model


class BasicBlock(nn.Module):
    """ResNet basic block with a strided 1x1 downsample on the shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNetStem(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project, residual."""

    def __init__(self, c: int, expand: int = 4) -> None:
        super().__init__()
        h = c * expand
        self.conv = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU6(),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.conv(x)


def mobilenet_blocks() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU6(),
        InvertedResidual(8),
        InvertedResidual(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def vgg_bn() -> nn.Module:
    """Conv with bias followed by BatchNorm: both fold into one Conv in a static file."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(128, 10),
    )


def odd_convs() -> nn.Module:
    """Dilation, groups, every padding mode, non-square kernels with stride; no BatchNorm after some."""
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=2, dilation=2, padding_mode="reflect"),
        nn.BatchNorm2d(12),
        nn.ReLU(),
        nn.Conv2d(12, 12, 3, padding=1, groups=3, padding_mode="replicate", bias=False),
        nn.BatchNorm2d(12),
        nn.Conv2d(12, 16, (3, 5), stride=(2, 1), padding=(1, 2), padding_mode="circular"),
        nn.ReLU(),
        nn.Conv2d(16, 16, (5, 2), stride=2, padding=(2, 1)),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


BLOCKS = {"resnet": ResNetStem, "mobilenet": mobilenet_blocks, "vgg_bn": vgg_bn, "odd_convs": odd_convs}
SHAPE = (1, 3, 20, 20)


@pytest.fixture(scope="module", params=[(b, layers) for b in BLOCKS for layers in ("first", "all")], ids=str)
def block(request):
    name, layers = request.param
    torch.manual_seed(0)
    plain = _randomise_bn(BLOCKS[name]())
    return acl.convert(plain, SPEC, layers=layers).eval()


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _check(ref: np.ndarray, got: np.ndarray, what: str) -> None:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}, {res}"


@pytest.fixture(scope="module")
def block_files(block, tmp_path_factory) -> dict:
    """The three files of a block from one trace, as the job writes them (``export.to_onnx`` traces per file)."""
    d = tmp_path_factory.mktemp("block")
    return export.export_files(block, {mode: d / f"{mode}.onnx" for mode in export.KINDS}, SHAPE)


@pytest.mark.parametrize("mode", ["static", "live", "live-akp"])
def test_export_matches_pytorch(block, block_files, mode):
    path = block_files[mode]
    x = torch.randn(5, *SHAPE[1:], generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ref = block(x).numpy()
    sess = _session(path)
    _check(ref, sess.run(None, {"input": x.numpy()})[0], mode)
    if mode == "live-akp":
        moved, feed = perturbed_akps(block, seed=3)
        with torch.inference_mode():
            ref_moved = moved(x).numpy()
        assert np.abs(ref_moved - ref).max() > 1e-3, (
            "the moved AKPs must change the output for the check to mean anything"
        )
        _check(ref_moved, sess.run(None, {"input": x.numpy(), **feed})[0], "live-akp fed moved AKPs")


def test_live_keeps_batchnorm_unfolded_and_weights_generated(tmp_path):
    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(ResNetStem()), SPEC, layers="all").eval()
    live = onnx.load(str(export.to_onnx(model, tmp_path / "live.onnx", SHAPE, mode="live")))
    inits = {t.name for t in live.graph.initializer}
    for name, _ in acl.acl_layers(model):
        assert f"{name}.weight" not in inits, f"{name}.weight must be computed from AKPs, not stored"
    assert [i.name for i in live.graph.input] == ["input"]
    # stem + 2 blocks x (bn1, bn2): BatchNorm after an ACL stays; the 1x1 downsample convs are not ACLs under
    # "all" (acl.selection), so their BatchNorm folds into them as after any plain convolution
    assert len(acl.acl_layers(model)) == 5
    assert sum(n.op_type == "BatchNormalization" for n in live.graph.node) == 5


def test_make_live_refuses_a_stored_weight(tmp_path):
    from export import passes

    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(vgg_bn()), SPEC, layers="first").eval()
    static = onnx.load(str(export.to_onnx(model, tmp_path / "s.onnx", SHAPE)))
    with pytest.raises(ValueError, match="must be a graph input.*folded BatchNorm"):
        passes.make_live(static, export.live_layers(model))


def test_verify_raises_on_a_wrong_file_and_writes_nothing(tmp_path, monkeypatch):
    from export import onnx_export

    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(vgg_bn()), SPEC, layers="all").eval()
    proto = onnx.load(str(export.to_onnx(model, tmp_path / "ok.onnx", SHAPE, mode="live")))
    res = verify_onnx(model, proto, SHAPE)
    assert res["default"]["max_abs_err"] < 1e-4

    # The old make_live: the raw kernels replace a weight with BatchNorm folded in.
    def folded(model, input_shape, *, weights_as_inputs):
        return real(model, input_shape, weights_as_inputs=False)

    real = onnx_export.export_graph
    monkeypatch.setattr(onnx_export, "export_graph", folded)
    monkeypatch.setattr(onnx_export.passes, "make_live", _old_make_live)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ExportVerificationError, match=r"max abs [0-9.e+-]+, max rel"):
        export.to_onnx(model, target, SHAPE, mode="live")
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.onnx"]


def _old_make_live(static: onnx.ModelProto, layers) -> onnx.ModelProto:
    """The pre-fix pass: replace the stored (BatchNorm-folded) weight initializer by raw generated kernels."""
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(static)
    raw = {f"{ly.name}.weight": ly for ly in layers}
    for t in model.graph.initializer:
        if t.name in raw:
            layer = raw[t.name]
            kernels = np.concatenate(
                [
                    s.values if s.symbol == "P" else np.zeros((s.count, *layer.kernel_size), np.float32) + 0.1
                    for s in layer.segments
                ]
            )
            t.CopyFrom(numpy_helper.from_array(kernels.reshape(layer.weight_shape).astype(np.float32), t.name))
    return model


def test_verify_feeds_moved_akps(tmp_path):
    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(mobilenet_blocks()), SPEC, layers="all").eval()
    path = export.to_onnx(model, tmp_path / "akp.onnx", SHAPE, mode="live", akp_inputs=True)
    res = verify_onnx(model, path, SHAPE)
    assert set(res) == {"default", "fed AKPs"}
    assert all(r["passed"] for r in res.values())


def test_onnxruntime_folds_live_generation_and_batchnorm_like_static(tmp_path):
    """Why the live file runs at static speed: after session-load folding both graphs are the same ops."""
    from collections import Counter

    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(ResNetStem()), SPEC, layers="all").eval()
    counts = {}
    for mode in ("static", "live"):
        path = export.to_onnx(model, tmp_path / f"{mode}.onnx", SHAPE, mode=mode)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(tmp_path / f"{mode}.optimized.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        counts[mode] = Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)
    assert counts["live"] == counts["static"], counts
    assert "BatchNormalization" not in counts["live"]


def test_static_weight_is_the_acl_kernels_so_a_rewrite_follows_new_akps(tmp_path):
    """The static file's ``<layer>.weight`` holds the raw ACL kernels (no BatchNorm folded in):
    replacing it with a moved model's kernels (TensorRT refit, AKP hot-swap) gives the moved model."""
    from onnx import numpy_helper

    torch.manual_seed(0)
    model = acl.convert(_randomise_bn(ResNetStem()), SPEC, layers="all").eval()
    static = onnx.load(str(export.to_onnx(model, tmp_path / "s.onnx", SHAPE)))
    moved, _ = perturbed_akps(model, seed=5)
    new = {f"{n}.weight": layer.weight.detach().numpy() for n, layer in acl.acl_layers(moved)}
    for t in static.graph.initializer:
        if t.name in new:
            old = {f"{n}.weight": layer.weight.detach().numpy() for n, layer in acl.acl_layers(model)}[t.name]
            assert np.array_equal(numpy_helper.to_array(t), old), t.name
            t.CopyFrom(numpy_helper.from_array(new[t.name], t.name))
    x = torch.randn(4, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
    got = ort.InferenceSession(static.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )[0]
    with torch.inference_mode():
        _check(moved(x).numpy(), got, "static file with rewritten kernels")
