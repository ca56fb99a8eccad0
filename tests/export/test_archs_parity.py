"""Every built-in architecture as ACL-X and AnaNN-X, exported static, live and live-akp, run in ONNX Runtime.

BatchNorm statistics are randomised (a fresh net's are the identity, which hides
folding mistakes); inputs are not the export example; the live-akp file is also
fed moved AKPs and compared with the PyTorch model holding them.
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
from pipeline.archs import DEFAULT_SPEC, build
from tests.conftest import trained_looking_bn

# arch -> input (C, H, W): small but enough for every stride of the net
ARCHS = {
    "lenet": (1, 32, 32),
    "cnn4": (1, 32, 32),
    "resnet18_cifar": (3, 32, 32),
    "resnet18": (3, 64, 64),
    "resnet34_cifar": (3, 32, 32),
    "resnet34": (3, 64, 64),
    "mobilenet_v2": (3, 64, 64),
    "vgg11_bn": (3, 32, 32),
    "densenet_cifar": (3, 32, 32),
}
SLOW = {"resnet34", "resnet34_cifar", "densenet_cifar"}


def _check(ref: np.ndarray, got: np.ndarray, what: str) -> dict:
    res = compare_outputs(ref, got, TOLERANCES["fp32"])
    assert res["passed"], f"{what}: max abs {res.get('max_abs_err')}, max rel {res.get('max_rel_err')}: {res}"
    return res


CASES = [
    pytest.param(arch, layers, marks=[pytest.mark.slow] if arch in SLOW else [], id=f"{arch}-{layers}")
    for arch in ARCHS
    for layers in ("first", "all")
]


@pytest.mark.parametrize(("arch", "layers"), CASES)
def test_static_live_and_live_akp_match_pytorch(arch, layers, tmp_path):
    image = ARCHS[arch]
    torch.manual_seed(0)
    model = build(arch, DEFAULT_SPEC, layers=layers, in_channels=image[0], num_classes=10)
    trained_looking_bn(model, image)
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
    for mode in ("static", "live", "live-akp"):
        path = export.to_onnx(
            model,
            tmp_path / f"{mode}.onnx",
            shape,
            mode="static" if mode == "static" else "live",
            akp_inputs=mode == "live-akp",
        )
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        _check(ref, sess.run(None, {"input": x.numpy()})[0], f"{arch} {layers} {mode}")
        if mode == "live-akp":
            _check(ref_moved, sess.run(None, {"input": x.numpy(), **feed})[0], f"{arch} {layers} live-akp fed")
