"""RECOS (acl.recos): the design brief's check 8 on LeNet, an AnaNN and a BatchNorm/residual/depthwise model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acl
from acl import recos
from pipeline.archs import build
from pipeline.archs.resnet import BasicBlock

SPEC = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
PAPER_TABLE1 = [(26, 6), (150, 16), (400, 120), (120, 84), (84, 10)]


def _digits(n: int = 24) -> torch.Tensor:
    """Standardised digits: real images, not the random tensors the layers were built with."""
    from pipeline.datasets.digits import load_digits_dataset

    data = load_digits_dataset()
    return data.normalize(data.test_set.images[:n])


class BlockNet(nn.Module):
    """A stem with BatchNorm, a residual block, a strided block with a 1x1 shortcut, a depthwise conv, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.block = BasicBlock(8, 8)
        down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.block2 = BasicBlock(8, 16, stride=2, downsample=down)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.block2(self.block(F.relu(self.bn(self.stem(x)))))
        return self.fc(F.relu(self.dw(x)).mean((2, 3)))


def block_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = BlockNet()
    for m in net.modules():  # BatchNorm statistics that are not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(-1.5, 1.5)  # negative scales flip an anchor's direction
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_anchor_table_of_lenet_is_the_papers_table1():
    for net in (build("lenet", None), build("lenet", SPEC, layers="all")):
        rows = recos.anchor_table(net)
        assert [(r["N"], r["K"]) for r in rows] == PAPER_TABLE1
        assert [r["augmented"] for r in rows] == [True, False, False, False, False]
        assert all(r["bias"] for r in rows)
    acl_rows = recos.anchor_table(build("lenet", SPEC, layers="all"))
    assert acl_rows[0]["kind"] == "acl" and sum(acl_rows[0]["families"].values()) == 6
    assert sum(acl_rows[1]["families"].values()) == 6 * 16


def _relu_identity(layer, x, bn=None, mode="bias"):
    """``Rec(layer output)`` and ``||x'|| ||a'|| Rec(cos theta')`` at every position, side by side."""
    A, b = recos.anchors(layer, bn)
    X = recos.patches(layer, x)
    c = recos.correlations(A, X, b, mode)
    model = c["x_norm"] * c["a_norm"] * F.relu(c["cos"])
    out = layer(x) if bn is None else bn(layer(x))
    if mode == "mean":  # Eqs. 5-8: the patch mean removed, no bias
        out = F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
        mu = F.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding, count_include_pad=True)
        out = out - mu * layer.weight.sum((1, 2, 3))[None, :, None, None]
    return F.relu(out).permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double(), model


@pytest.mark.parametrize("spec", [None, SPEC], ids=["lenet", "anann-lenet"])
@pytest.mark.parametrize("mode", ["bias", "mean"])
def test_conv1_relu_equals_rectified_correlations(spec, mode):
    torch.manual_seed(1)
    net = build("lenet", spec, layers="all").eval()
    with torch.no_grad():
        real, model = _relu_identity(net.conv1, _digits())
    assert real.shape == model.shape == (24 * 28 * 28, 6)
    assert (real - model).abs().max() < 1e-5
    assert (real == 0).float().mean() > 0.05  # the ReLU does discard something: the check is not vacuous


def test_rectified_correlations_with_batchnorm_and_groups():
    net = block_net()
    x = torch.randn(6, 1, 12, 12)
    with torch.no_grad():
        stem_out = net.stem(x)
        for layer, bn, inp in [(net.stem, net.bn, x), (net.block.conv1, net.block.bn1, F.relu(net.bn(stem_out)))]:
            real, model = _relu_identity(layer, inp, bn)
            assert (real - model).abs().max() < 1e-5
        dw_in = torch.randn(3, 16, 6, 6)
        real, model = _relu_identity(net.dw, dw_in)
        assert (real - model).abs().max() < 1e-5


def test_analyse_finds_the_batchnorm_and_reports_what_relu_discards():
    net = block_net()
    x = torch.randn(8, 1, 12, 12)
    view = recos.analyse(net, x, max_patches=None)
    layers = view["layers"]
    assert layers["stem"]["bn"] == "bn" and layers["block.conv2"]["bn"] == "block.bn2"
    assert layers["block2.downsample.0"]["bn"] == "block2.downsample.1" and layers["dw"]["bn"] is None
    with torch.no_grad():
        pre = net.bn(net.stem(x))
    assert layers["stem"]["bias"]["negative"] == pytest.approx(float((pre < 0).double().mean()), abs=1e-12)
    assert layers["stem"]["patches"] == 8 * 12 * 12
    assert sum(layers["block.conv1"]["bias"]["hist"]) == layers["block.conv1"]["patches"] * 8
    assert layers["dw"]["groups"] == 16 and layers["dw"]["coherence"] == 0.0  # disjoint inputs: orthogonal anchors
    assert "mean" in layers["stem"] and "mean" not in layers["block.conv1"]


def test_analyse_splits_acls_by_family():
    torch.manual_seed(0)
    net = build("lenet", SPEC, layers="all").eval()
    layers = recos.analyse(net, _digits(8))["layers"]
    fams = layers["conv2"]["families"]
    assert set(fams) == {"Gabor", "LoG", "LoT", "TGD1st", "Plain"}
    assert sum(f["anchors"] for f in fams.values()) >= 16  # each output channel has kernels of several families
    assert "families" not in layers["fc1"]
    masks = recos.family_masks(net.conv2)
    assert torch.equal(sum(masks.values()), torch.ones_like(masks["Plain"]))


def test_gram_stats():
    s = recos.gram_stats(torch.tensor([[1.0, 0.0], [3.0, 1.0], [0.0, 0.0], [-1.0, 2.0]]))
    assert s["anchors"] == 3  # the zero anchor has no direction
    assert s["coherence"] == pytest.approx(3 / 10**0.5)
    assert s["rank"] == 2
    # 18.4, 98.1 and 116.6 degrees, in 5-degree bins
    assert [i for i, n in enumerate(s["angles"]) for _ in range(n)] == [3, 19, 23]
    many = recos.gram_stats(torch.randn(2000, 600))  # more anchors than a Gram matrix takes: evenly sampled
    assert many["anchors"] == 2000 and many["sampled"] == recos.MAX_GRAM and many["rank"] == 600
    same = recos.gram_stats(torch.tensor([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]]))
    assert same["effective_rank"] == pytest.approx(1.0) and same["coherence"] == pytest.approx(1.0)


def test_negating_the_first_layer_swaps_original_and_reversed_exactly():
    torch.manual_seed(0)
    for net in (build("lenet", None).eval(), build("lenet", SPEC, layers="all").eval(), block_net()):
        x = _digits(16) if net.__class__.__name__ != "BlockNet" else torch.randn(16, 1, 12, 12)
        flipped = recos.negate_first_layer(net)
        with torch.no_grad():
            assert torch.equal(flipped(-x), acl.bake(net)(x))
            assert torch.equal(flipped(x), acl.bake(net)(-x))


def test_composite_kernel_of_lenet_equals_the_two_layer_linear_path():
    torch.manual_seed(0)
    for spec in (None, SPEC):
        net = build("lenet", spec, layers="all").eval()
        c = recos.composite_check(net.conv1, net.conv2, _digits(), subsample=2)
        assert c["kernel"] == [16, 1, 13, 13] and c["stride"] == [2, 2] and c["positions"] == 100
        assert c["max_abs"] < 1e-5


def test_composite_kernel_with_batchnorm_residual_block_and_padding():
    net = block_net()
    x = torch.randn(4, 8, 10, 10)
    blk = net.block
    c = recos.composite_check(blk.conv1, blk.conv2, x, subsample=1, first_bn=blk.bn1, second_bn=blk.bn2)
    assert c["kernel"] == [8, 8, 5, 5] and c["positions"] == 8 * 8  # the border windows see padding
    assert c["max_abs"] < 1e-5
    blk2 = net.block2  # strided first conv, subsampling, padding on both
    c = recos.composite_check(blk2.conv1, blk2.conv2, x, subsample=2, first_bn=blk2.bn1, second_bn=blk2.bn2)
    assert c["stride"] == [4, 4] and c["max_abs"] < 1e-5
    # A grouped second layer: its dense equivalent.
    c = recos.composite_check(blk2.conv2, net.dw, torch.randn(2, 16, 9, 9), subsample=1)
    assert c["kernel"] == [16, 16, 5, 5] and c["max_abs"] < 1e-5


def test_rectified_composite_kernel():
    torch.manual_seed(0)
    w1, w2 = torch.randn(6, 1, 5, 5, dtype=torch.float64), torch.randn(16, 6, 5, 5, dtype=torch.float64)
    c = recos.composite_kernel(w1, w2)
    terms = torch.einsum("lcij,cduv->lduvij", w2, w1)
    # Rec per window before the overlapping windows are summed (Eq. 17), by a plain loop.
    ref = torch.zeros(16, 1, 13, 13, dtype=torch.float64)
    for i in range(5):
        for j in range(5):
            ref[:, :, 2 * i : 2 * i + 5, 2 * j : 2 * j + 5] += terms[:, :, :, :, i, j].clamp_min(0)
    assert torch.allclose(recos.composite_kernel(w1, w2, rectify=True), ref, atol=1e-12)
    assert (ref >= c - 1e-12).all()  # rectifying the parts can only raise the sum
