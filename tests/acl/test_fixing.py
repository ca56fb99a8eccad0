"""acl.fix_spatial on plain CNNs and AnaNNs: resnet18_cifar (BatchNorm, residual, 1x1 shortcuts) and
mobilenet_v2 (depthwise 3x3, 1x1 expansions and projections)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import acl
from acl import AnalyticConv2d
from acl.fixed_families import dct2_basis
from acl.fixing import METHODS
from pipeline import archs

SPEC = "G0.2Lg0.1D0.1H0.1P0.5"  # analytic, fixed and plain kernels in every ACL


def model(arch: str, spec: str | None) -> nn.Module:
    torch.manual_seed(0)
    return archs.convert(archs.create(arch, in_channels=3, num_classes=10), spec)


def spatial_and_rest(net: nn.Module):
    """(spatial convolutions, 1x1 convolutions, norm and linear layers) of ``net``."""
    convs = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, AnalyticConv2d))]
    spatial = [(n, m) for n, m in convs if tuple(m.kernel_size) != (1, 1)]
    pointwise = [(n, m) for n, m in convs if tuple(m.kernel_size) == (1, 1)]
    others = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.Linear))]
    return spatial, pointwise, others


def snapshot(modules) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, m in modules for k, v in m.named_parameters()}


def steps(net: nn.Module, opt: torch.optim.Optimizer, n: int = 1) -> None:
    net.train()
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        opt.zero_grad()
        x = torch.randn(4, 3, 16, 16, generator=g)
        nn.functional.cross_entropy(net(x), torch.randint(0, 10, (4,), generator=g)).backward()
        opt.step()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18_cifar", "mobilenet_v2"])
@pytest.mark.parametrize("spec", [None, SPEC], ids=["plain", "anann"])
def test_spatial_weights_stay_bit_identical_and_the_rest_learns(arch, spec):
    net = model(arch, spec)
    summary = acl.fix_spatial(net, "ghaar", generator=torch.Generator().manual_seed(2))
    spatial, pointwise, others = spatial_and_rest(net)
    assert pointwise and any(getattr(m, "groups", 1) > 1 for _, m in spatial) == (arch == "mobilenet_v2")
    assert list(summary.fixed) == [n for n, _ in spatial] and list(summary.learning) == [n for n, _ in pointwise]
    assert all(not p.requires_grad for _, m in spatial for p in m.parameters())
    assert all(p.requires_grad for _, m in pointwise + others for p in m.parameters())
    assert summary.learnable == sum(p.numel() for p in net.parameters() if p.requires_grad) > 0
    kernels = {n: m.weight.detach().clone() for n, m in spatial}
    fixed, learning = snapshot(spatial), snapshot(pointwise + others)
    # every parameter handed to the optimizers, as a careless training loop would: frozen ones still never move
    steps(net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4))
    steps(net, torch.optim.Adam(net.parameters(), lr=1e-2))
    for name, value in snapshot(spatial).items():
        assert torch.equal(value, fixed[name]), name
    for n, m in spatial:
        assert torch.equal(m.weight.detach(), kernels[n]), n  # an ACL's generated kernels too
    moved = [k for k, v in snapshot(pointwise + others).items() if not torch.equal(v, learning[k])]
    assert len(moved) == len(learning), sorted(set(learning) - set(moved))[:5]


def test_methods_set_the_kernels_they_name():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 20, 3), nn.ReLU(), nn.Conv2d(20, 20, (1, 3), groups=20), nn.Conv2d(20, 4, 1))
    # GuidedSteer's guide (its statistics are tested in tests/acl/test_guided.py)
    guide = {"0": 10 * base[0].weight.detach(), "2": 10 * base[2].weight.detach()}
    for method in METHODS:
        net = copy.deepcopy(base)
        acl.fix_spatial(
            net, method, generator=torch.Generator().manual_seed(3), guide=guide if method == "guidedsteer" else None
        )
        w = net[0].weight.detach().reshape(-1, 3, 3)
        if method == "none":
            assert all(p.requires_grad for p in net.parameters())
            continue
        assert not net[2].weight.requires_grad, "1x3 is spatial for ExplainFix"
        if method == "unchanged":
            assert torch.equal(w, base[0].weight.detach().reshape(-1, 3, 3))
        elif method == "ones":
            assert torch.equal(w, torch.ones_like(w))
        elif method == "dct2":
            coeff = (w.flatten(1).double() @ dct2_basis(3, dtype=torch.float64).T).abs()
            assert torch.allclose(coeff.max(1).values, torch.ones(60, dtype=torch.float64), atol=1e-6)
            counts = torch.bincount(coeff.argmax(1), minlength=9)
            assert set(counts.tolist()) <= {6, 7}, "60 kernels over 9 rows: 6 or 7 each"
        elif method == "psine":
            assert w.mean((1, 2)).abs().max() < 1e-6 and torch.allclose(w.norm(dim=(1, 2)), torch.ones(60), atol=1e-5)
        else:
            assert w.std() > 0.1 and not torch.equal(w, base[0].weight.detach().reshape(-1, 3, 3))
        assert not net[0].bias.requires_grad and torch.equal(net[0].bias, base[0].bias), "bias frozen as it was"
        assert net[3].weight.requires_grad


def test_fixing_an_acl_freezes_its_akps_and_replaces_its_plain_kernels():
    torch.manual_seed(0)
    layer = AnalyticConv2d(4, 8, 3, spec="G4Lg4D8H4P12")
    akps = {k: v.detach().clone() for k, v in layer.akps().items()}
    fixed = {k: v.clone() for k, v in layer.named_buffers() if k.startswith("fixed")}
    spec_before = str(layer.spec)
    acl.fix_spatial(layer, "dct2", generator=torch.Generator().manual_seed(0))
    assert str(layer.spec) == spec_before, "the ACL keeps its spec and parameter names"
    assert not any(p.requires_grad for p in layer.parameters())
    assert all(torch.equal(layer.akps()[k], v) for k, v in akps.items())
    assert all(torch.equal(getattr(layer, k), v) for k, v in fixed.items())
    plain = layer.plain4.detach().flatten(1).double() @ dct2_basis(3, dtype=torch.float64).T
    assert torch.allclose(plain.abs().max(1).values, torch.ones(12, dtype=torch.float64), atol=1e-6)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown fix_spatial method 'haar', expected one of none, unchanged, ones"):
        acl.fix_spatial(nn.Conv2d(1, 1, 3), "haar")
