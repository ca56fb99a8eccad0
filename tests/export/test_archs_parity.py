"""Every built-in architecture as ACL-X and AnaNN-X, exported static, live and live-akp, run in ONNX Runtime.

BatchNorm statistics are randomised (a fresh net's are the identity, which hides
folding mistakes); inputs are not the export example; the live-akp file is also
fed moved AKPs and compared with the PyTorch model holding them.

``make test`` runs LeNet (the default model) and ``blocks_mini``: the built-in
architectures' own blocks at the smallest width, holding every path the big nets
have (BatchNorm, ResNet blocks with identity and strided 1x1 projection shortcuts,
MobileNetV2 blocks with expansion, depthwise convolution, linear projection and
residual). The full architectures repeat that at scale, up to a minute and a half
each: marker ``slow`` (``make test-slow``).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

import acl
import export
from export.compare import TOLERANCES, compare_outputs
from export.verify import perturbed_akps
from pipeline.archs import DEFAULT_SPEC, build, convert
from pipeline.archs.mobilenet import InvertedResidual
from pipeline.archs.resnet import BasicBlock
from tests.conftest import trained_looking_bn

# arch -> input (C, H, W): the smallest that every stride of the net still halves (the ImageNet-sized
# ResNets and MobileNetV2 end on 1x1 feature maps at 32x32)
ARCHS = {
    "lenet": (1, 32, 32),
    "cnn4": (1, 32, 32),
    "resnet18_cifar": (3, 32, 32),
    "resnet18": (3, 32, 32),
    "resnet34_cifar": (3, 32, 32),
    "resnet34": (3, 32, 32),
    "mobilenet_v2": (3, 32, 32),
    "vgg11_bn": (3, 32, 32),
    "densenet_cifar": (3, 32, 32),
}
FAST = {"lenet"}


def blocks_mini(*, num_classes: int = 10, in_channels: int = 3) -> torch.nn.Sequential:
    """The built-in architectures' own blocks at the smallest width: what the full nets repeat at scale."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_channels, 16, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(inplace=True),
        BasicBlock(16, 16),  # identity shortcut
        # strided, with a 1x1 projection shortcut (ResNet's option B)
        BasicBlock(16, 32, 2, torch.nn.Sequential(torch.nn.Conv2d(16, 32, 1, 2, bias=False), torch.nn.BatchNorm2d(32))),
        InvertedResidual(32, 32, 1, 6),  # 1x1 expansion, 3x3 depthwise, linear 1x1 projection, residual
        InvertedResidual(32, 48, 2, 6),  # strided: no residual
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(48, num_classes),
    )


# name -> (factory, input (C, H, W))
MINI = {"blocks_mini": (blocks_mini, (3, 16, 16))}


def _check(ref: np.ndarray, got: np.ndarray, what: str) -> dict:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}: {res}"
    return res


CASES = [
    pytest.param(arch, layers, marks=[] if arch in FAST else [pytest.mark.slow], id=f"{arch}-{layers}")
    for arch in ARCHS
    for layers in ("first", "all")
] + [pytest.param(arch, "all", id=f"{arch}-all") for arch in MINI]


def _model(arch: str, layers: str) -> tuple[torch.nn.Module, tuple[int, int, int]]:
    torch.manual_seed(0)
    if arch in MINI:
        factory, image = MINI[arch]
        model = convert(factory(num_classes=10, in_channels=image[0]), DEFAULT_SPEC, layers=layers)
    else:
        image = ARCHS[arch]
        model = build(arch, DEFAULT_SPEC, layers=layers, in_channels=image[0], num_classes=10)
    return trained_looking_bn(model, image), image


@pytest.mark.parametrize(("arch", "layers"), CASES)
def test_static_live_and_live_akp_match_pytorch(arch, layers, tmp_path):
    model, image = _model(arch, layers)
    n_acl = len(acl.acl_layers(model))
    # "all" converts the spatial convolutions only; the 1x1 ones (downsample, pointwise) stay plain Conv2d's
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, acl.AnalyticConv2d))]
    n_spatial = sum(min(m.kernel_size) > 1 for m in convs)
    assert n_acl == (1 if layers == "first" else n_spatial), f"{n_acl} ACLs of {n_spatial} spatial convolutions"
    assert all(min(m.kernel_size) > 1 for _, m in acl.acl_layers(model))

    shape = (1, *image)
    x = torch.randn(4, *image, generator=torch.Generator().manual_seed(11))
    with torch.inference_mode():
        ref = model(x).numpy()
    moved, feed = perturbed_akps(model, seed=2)
    with torch.inference_mode():
        ref_moved = moved(x).numpy()
    # one trace for the three files, as the job's export stage does (export.to_onnx traces once per file)
    files = export.export_files(model, {mode: tmp_path / f"{mode}.onnx" for mode in export.KINDS}, shape)
    for mode, path in files.items():
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        _check(ref, sess.run(None, {"input": x.numpy()})[0], f"{arch} {layers} {mode}")
        if mode == "live-akp":
            _check(ref_moved, sess.run(None, {"input": x.numpy(), **feed})[0], f"{arch} {layers} live-akp fed")


def test_the_mini_net_holds_every_path_of_the_full_ones():
    model, _ = _model("blocks_mini", "all")
    basic = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert [b.downsample is not None for b in basic] == [False, True]
    inverted = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert [b.use_res_connect for b in inverted] == [True, False]
    depthwise = [n for n, m in acl.acl_layers(model) if m.groups == m.in_channels > 1]
    assert len(depthwise) == 2, "each inverted residual's depthwise convolution is an ACL"
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 12 and all(not torch.all(m.running_var == 1) for m in bn), "trained-looking statistics"
