"""GuidedSteer (acl.guided, ``acl.fix_spatial(..., "guidedsteer", guide=...)``): Algorithm 1 of ExplainFix.

The statistics are checked in a basis the test computes itself (eigenvectors of the
shape group's ``G^T G``): the drawn kernels' steering weights there must have the guide
layer's per-column mean and standard deviation and be uncorrelated. A basis of the
wrong group (per layer, or all shapes mixed) fails the std and correlation checks,
since the test's two 3x3 guide layers steer very differently.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import acl
from acl.guided import draw_guided, guide_bases, guide_basis, guided_steer
from pipeline import archs
from tests.acl.test_fixing import model, snapshot, spatial_and_rest, steps

N = 40_000  # drawn kernels for the statistics: their standard error is 0.5 % of a column's std


def correlated(n: int, h: int, w: int, seed: int, scale: float, offset: float) -> torch.Tensor:
    """``n`` ``h x w`` kernels with correlated entries and a non-zero mean (as trained kernels have)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(h * w, h * w, generator=g, dtype=torch.float64) * scale
    base = torch.randn(n, h * w, generator=g, dtype=torch.float64) @ mix + offset * torch.randn(h * w, generator=g)
    return base.reshape(n, h, w).float()


def guide_net_kernels() -> dict[str, torch.Tensor]:
    # two 3x3 layers that steer very differently, one 5x5 layer (conv weights: [out, in, h, w])
    return {
        "a": correlated(64 * 3, 3, 3, 1, 1.0, 0.5).reshape(64, 3, 3, 3),
        "b": correlated(500, 3, 3, 2, 0.2, -1.0).reshape(50, 10, 3, 3),
        "c": correlated(300, 5, 5, 3, 0.5, 0.2).reshape(30, 10, 5, 5),
    }


def eig_basis(*kernels: torch.Tensor) -> torch.Tensor:
    """The test's own basis of a shape group: eigenvectors of ``G^T G`` as rows."""
    g = torch.cat([k.reshape(-1, k.shape[-2] * k.shape[-1]) for k in kernels]).double()
    _, vecs = torch.linalg.eigh(g.T @ g)
    return vecs.T


def test_the_basis_is_orthonormal_and_diagonalises_the_guides_gram_matrix():
    guide = guide_net_kernels()
    for shape, members in (((3, 3), ("a", "b")), ((5, 5), ("c",))):
        b = guide_bases(guide)[shape]
        g = torch.cat([guide[m].reshape(-1, shape[0] * shape[1]) for m in members]).double()
        assert torch.allclose(b @ b.T, torch.eye(b.shape[0], dtype=b.dtype), atol=1e-10)
        gram = b @ (g.T @ g) @ b.T
        off = gram - torch.diag(torch.diagonal(gram))
        assert off.abs().max() < 1e-9 * gram.abs().max(), shape
        assert torch.equal(b, guide_basis(torch.cat([guide[m].reshape(-1, *shape) for m in members])))
    assert set(guide_bases(guide)) == {(3, 3), (5, 5)}


@pytest.mark.parametrize("layer", ["a", "b", "c"])
def test_drawn_kernels_have_the_guide_layers_statistics_in_the_shape_groups_basis(layer):
    guide = guide_net_kernels()
    shape = tuple(guide[layer].shape[-2:])
    group = [k for k in guide.values() if tuple(k.shape[-2:]) == shape]
    basis = eig_basis(*group)
    out = guided_steer(guide, {layer: (N, *shape)}, torch.Generator().manual_seed(0))[layer]
    assert out.shape == (N, *shape) and out.dtype == torch.float32
    drawn = out.reshape(N, -1).double() @ basis.T
    want = guide[layer].reshape(-1, shape[0] * shape[1]).double() @ basis.T
    mu, sigma = want.mean(0), want.std(0, correction=0)
    assert ((drawn.mean(0) - mu).abs() < 0.03 * sigma + 1e-6).all(), (drawn.mean(0) - mu) / sigma
    assert ((drawn.std(0) / sigma - 1).abs() < 0.03).all(), drawn.std(0) / sigma
    corr = torch.corrcoef(drawn.T)
    assert (corr - torch.eye(len(mu), dtype=corr.dtype)).abs().max() < 0.04, "independent in the group's basis"


def test_a_per_layer_basis_would_not_give_those_statistics():
    """The check above can fail: layer b drawn in its own basis (not the 3x3 group's) misses them."""
    guide = guide_net_kernels()
    basis = eig_basis(guide["a"], guide["b"])
    own = draw_guided(guide["b"], guide_basis(guide["b"]), N, torch.Generator().manual_seed(0))
    drawn = own.reshape(N, -1).double() @ basis.T
    want = guide["b"].reshape(-1, 9).double() @ basis.T
    corr = torch.corrcoef(drawn.T)
    ratio = drawn.std(0) / want.std(0, correction=0)
    assert (ratio - 1).abs().max() > 0.1 or (corr - torch.eye(9, dtype=corr.dtype)).abs().max() > 0.1


def test_the_same_seed_draws_the_same_kernels_and_another_seed_others():
    guide = guide_net_kernels()
    targets = {"c": (20, 5, 5), "a": (7, 3, 3), "b": (33, 3, 3)}
    first = guided_steer(guide, targets, torch.Generator().manual_seed(4))
    again = guided_steer(guide, targets, torch.Generator().manual_seed(4))
    other = guided_steer(guide, targets, torch.Generator().manual_seed(5))
    assert list(first) == ["c", "a", "b"] and all(first[k].shape == targets[k] for k in targets)
    assert all(torch.equal(first[k], again[k]) for k in targets)
    assert not any(torch.equal(first[k], other[k]) for k in targets)


def test_a_target_layer_the_guide_lacks_or_shapes_otherwise_is_refused_by_name():
    guide = guide_net_kernels()
    with pytest.raises(ValueError, match=r"the guide has no layer d \(3x3 kernels\), expected a network of the same"):
        guided_steer(guide, {"a": (4, 3, 3), "d": (4, 3, 3)})
    with pytest.raises(ValueError, match="the guide's layer c has 5x5 kernels, expected 3x3 kernels there"):
        guided_steer(guide, {"c": (4, 3, 3)})


class Mixed(nn.Module):
    """3x3, 5x5 and 1x1 convolutions with BatchNorm, a depthwise 3x3 and a residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.wide = nn.Conv2d(16, 16, 5, padding=2)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 8, 1)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.bn(self.stem(x)))
        x = x + torch.relu(self.dw(self.wide(x)))
        return self.head(self.pw(x).mean((2, 3)))


def spatial_kernels(net: nn.Module) -> dict[str, torch.Tensor]:
    spatial, _, _ = spatial_and_rest(net)
    return {n: m.weight.detach().clone() for n, m in spatial}


def test_fix_spatial_groups_shapes_draws_per_layer_and_leaves_1x1_untouched():
    torch.manual_seed(1)
    guide = spatial_kernels(Mixed())  # the same architecture from another seed
    torch.manual_seed(0)
    net = Mixed()
    before = copy.deepcopy(net)
    summary = acl.fix_spatial(net, "guidedsteer", generator=torch.Generator().manual_seed(3), guide=guide)
    assert summary.method == "guidedsteer" and summary.fixed == ("stem", "wide", "dw") and summary.learning == ("pw",)
    targets = {"stem": (16 * 3, 3, 3), "wide": (16 * 16, 5, 5), "dw": (16, 3, 3)}
    expected = guided_steer(guide, targets, torch.Generator().manual_seed(3))  # 3x3: stem and dw's basis
    for name, kernels in expected.items():
        assert torch.equal(getattr(net, name).weight.detach().reshape(-1, *targets[name][1:]), kernels), name
        assert torch.equal(getattr(net, name).bias, getattr(before, name).bias), "the bias is frozen as it was"
    assert torch.equal(net.pw.weight, before.pw.weight) and net.pw.weight.requires_grad, "1x1: untouched, learning"
    assert not any(p.requires_grad for n in targets for p in getattr(net, n).parameters())


def test_a_guide_missing_a_layer_changes_nothing():
    torch.manual_seed(0)
    net, guide = Mixed(), spatial_kernels(Mixed())
    before = copy.deepcopy(net.state_dict())
    del guide["dw"]
    with pytest.raises(ValueError, match=r"the guide has no layer dw \(3x3 kernels\)"):
        acl.fix_spatial(net, "guidedsteer", guide=guide)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.requires_grad for p in net.parameters())


def test_guidedsteer_needs_a_guide_and_only_it_takes_one():
    with pytest.raises(ValueError, match="'guidedsteer' with no guide, expected guide kernels with 'guidedsteer' only"):
        acl.fix_spatial(nn.Conv2d(1, 2, 3), "guidedsteer")
    with pytest.raises(ValueError, match="'dct2' with guide kernels, expected guide kernels with 'guidedsteer' only"):
        acl.fix_spatial(nn.Conv2d(1, 2, 3), "dct2", guide={"": torch.zeros(2, 1, 3, 3)})


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("arch", "spec"),
    [
        pytest.param("mobilenet_v2", "G0.2Lg0.1D0.1H0.1P0.5", id="anann-mobilenet_v2"),  # depthwise, 1x1, BN
        pytest.param("mobilenet_v2", None, id="plain-mobilenet_v2", marks=SLOW),
        pytest.param("resnet18_cifar", None, id="plain-resnet18_cifar", marks=SLOW),
        pytest.param("resnet18_cifar", "G0.2Lg0.1D0.1H0.1P0.5", id="anann-resnet18_cifar", marks=SLOW),
    ],
)
def test_guidedsteer_weights_stay_bit_identical_through_training(arch, spec):
    torch.manual_seed(1)
    guide = spatial_kernels(archs.create(arch, in_channels=3, num_classes=10))  # the plain arch, another seed
    net = model(arch, spec)
    plain = {k: v.clone() for k, v in net.state_dict().items() if ".plain" in k}
    summary = acl.fix_spatial(net, "guidedsteer", generator=torch.Generator().manual_seed(2), guide=guide)
    spatial, pointwise, others = spatial_and_rest(net)
    assert list(summary.fixed) == [n for n, _ in spatial] and pointwise
    assert bool(plain) == bool(spec) and all(not torch.equal(net.state_dict()[k], v) for k, v in plain.items())
    kernels = {n: m.weight.detach().clone() for n, m in spatial}
    fixed, learning = snapshot(spatial), snapshot(pointwise + others)
    steps(net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4))
    for name, value in snapshot(spatial).items():
        assert torch.equal(value, fixed[name]), name
    for n, m in spatial:
        assert torch.equal(m.weight.detach(), kernels[n]), n
    moved = [k for k, v in snapshot(pointwise + others).items() if not torch.equal(v, learning[k])]
    assert len(moved) == len(learning)
