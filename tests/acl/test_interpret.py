import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import acl
from acl.interpret import akp_summary, family_energy
from pipeline.archs import build
from pipeline.archs.calibrate import trained_looking_bn


def test_akp_summary_reads_the_registry_and_effective_scales():
    layer = acl.AnalyticConv2d(3, 8, 5, spec="G4Lg4Tf4P12")
    with torch.no_grad():
        layer.akp1_Lg.copy_(torch.tensor([[-2.0], [1.0], [3.0], [1e-9]]))  # scales act through clamp(|s|)
    rows = akp_summary(layer)
    assert [(r["family"], r["akp"]) for r in rows] == [
        ("Gabor", "lambda"),
        ("Gabor", "theta"),
        ("Gabor", "psi"),
        ("Gabor", "sigma"),
        ("LoG", "sigma"),
        ("TGD1st", "theta"),
        ("TGD1st", "gamma1"),
        ("TGD1st", "gamma2"),
    ]
    sigma = rows[4]
    assert (sigma["unit"], sigma["n"], sigma["min"], sigma["max"]) == ("px", 4, acl.families.SCALE_MIN, 3.0)
    assert sigma["median"] == pytest.approx(1.0)
    theta = rows[1]
    assert theta["unit"] == "rad" and theta["min"] == pytest.approx(float(layer.akp0_G[:, 1].min()))


def test_family_shares_are_the_energy_of_each_familys_kernels_alone():
    torch.manual_seed(0)
    layer = acl.AnalyticConv2d(2, 4, 3, spec="Lg3P5", padding=1, bias=True)
    x = torch.randn(5, 2, 7, 7)
    got = family_energy(nn.Sequential(layer), x)["0"]
    # by hand: zero the other family's kernels and convolve
    w = layer.weight.detach().reshape(-1, 3, 3)
    energies = {}
    for name, keep in (("LoG", slice(0, 3)), ("Plain", slice(3, 8))):
        part = torch.zeros_like(w)
        part[keep] = w[keep]
        energies[name] = float(F.conv2d(x, part.view(4, 2, 3, 3), padding=1).double().square().sum())
    total = sum(energies.values())
    for name, e in energies.items():
        assert got["share"][name] == pytest.approx(e / total, rel=1e-6), name
    whole = float(F.conv2d(x, layer.weight.detach(), padding=1).double().square().sum())
    assert got["cross"] == pytest.approx((whole - total) / whole, rel=1e-6, abs=1e-9)


def test_family_energy_on_a_resnet_covers_every_acl_and_ignores_other_layers():
    torch.manual_seed(0)
    net = trained_looking_bn(build("resnet18_cifar", "G0.25Lg0.25P0.5", in_channels=3), (3, 32, 32))
    before = {k: v.clone() for k, v in net.state_dict().items() if torch.is_tensor(v)}
    out = family_energy(net, torch.randn(4, 3, 32, 32))
    assert set(out) == {name for name, _ in acl.acl_layers(net)}
    for name, e in out.items():
        assert set(e["share"]) == {"Gabor", "LoG", "Plain"}, name
        assert math.isclose(sum(e["share"].values()), 1.0, rel_tol=1e-9), name
        assert all(0 <= s <= 1 for s in e["share"].values()), (name, e)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "measuring changed the model"
    assert not any(m._forward_pre_hooks for m in net.modules()), "hooks were left behind"


def test_reflect_padding_and_groups_are_honoured():
    torch.manual_seed(1)
    layer = acl.AnalyticConv2d(4, 4, 3, spec="Lt4P4", padding=1, groups=2, padding_mode="reflect")
    x = torch.randn(2, 4, 6, 6)
    got = family_energy(nn.Sequential(layer), x)["0"]
    w = layer.weight.detach().reshape(-1, 3, 3)
    xp = F.pad(x, [1, 1, 1, 1], mode="reflect")
    parts = {}
    for name, keep in (("LoT", slice(0, 4)), ("Plain", slice(4, 8))):
        part = torch.zeros_like(w)
        part[keep] = w[keep]
        parts[name] = F.conv2d(xp, part.view(4, 2, 3, 3), groups=2).double()
    # the parts add up to the layer's own output without its bias
    no_bias = (layer(x) - layer.bias[:, None, None]).detach().double()
    torch.testing.assert_close(parts["LoT"] + parts["Plain"], no_bias, rtol=1e-5, atol=1e-5)
    total = sum(float(p.square().sum()) for p in parts.values())
    for name, p in parts.items():
        assert got["share"][name] == pytest.approx(float(p.square().sum()) / total, rel=1e-6), name
