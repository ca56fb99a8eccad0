"""acl.explainsteer and acl.model_spectra (ExplainFix Eqs. 3, 5, 6) against the design brief's definitions."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import acl
from acl.fixed_families import dct1d
from acl.steering import display_order, explainsteer, model_spectra
from pipeline.archs import DEFAULT_SPEC, build
from tests.qdq_models import IMAGE, DwNet, dw_net


def by_the_definitions(kernels: torch.Tensor, weights: torch.Tensor) -> tuple[list, list, list | None]:
    """Algo. 2 written out: e_d from each basis kernel b_a outer b_b, e_1 by a loop over the basis, e_0 per Eq. 6."""
    h, w = kernels.shape[-2:]
    flat = kernels.reshape(-1, h, w).double()
    rows, cols = dct1d(h), dct1d(w)
    e_d = []
    for a in range(h):
        for b in range(w):
            basis = torch.outer(rows[a], cols[b])
            e_d.append(sum(float(wj) * abs(float((f * basis).sum())) for f, wj in zip(flat, weights)))
    e1_h, e1_w = [0.0] * h, [0.0] * w
    for i, e in enumerate(e_d):
        a, b = divmod(i, w)
        e1_h[a] += e ** (1 / 2)
        e1_w[b] += e ** (1 / 2)
    e_0 = [(x + y) / 2 for x, y in zip(e1_h, e1_w)] if h == w else None
    return e_d, e1_h + e1_w, e_0


@pytest.mark.parametrize("shape", [(7, 3, 3), (4, 5, 5, 5), (6, 3, 5), (3, 2, 1, 2)])
@pytest.mark.parametrize("weighted", [False, True])
def test_spectra_match_the_definitions_on_random_kernels(shape, weighted):
    g = torch.Generator().manual_seed(sum(shape))
    kernels = torch.randn(shape, generator=g)
    n = math.prod(shape[:-2])
    weights = torch.rand(n, generator=g) if weighted else torch.full((n,), 1 / n)
    got = explainsteer(kernels, weights if weighted else None)
    e_d, e_1, e_0 = by_the_definitions(kernels, weights)
    assert got.kernels == n and got.kernel_size == shape[-2:]
    torch.testing.assert_close(got.e_d, torch.tensor(e_d, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.e_1, torch.tensor(e_1, dtype=torch.float64), rtol=1e-5, atol=1e-6)
    if e_0 is None:
        assert got.e_0 is None  # Eq. 6 is not defined for h != w
    else:
        torch.testing.assert_close(got.e_0, torch.tensor(e_0, dtype=torch.float64), rtol=1e-5, atol=1e-6)
        # e_0 is the mean of the two rows of E^(1); each row sums the roots of e_d.
        h = shape[-2]
        roots = got.e_d.sqrt().sum()
        assert float(got.e_1[:h].sum()) == pytest.approx(float(roots)) == pytest.approx(float(got.e_1[h:].sum()))
        assert float(got.e_0.sum()) == pytest.approx(float(roots))


def test_display_order_is_the_papers():
    assert [divmod(i, 3) for i in display_order(3)] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (0, 2),
        (2, 0),
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    order5 = display_order(5)
    assert sorted(order5) == list(range(25)) and order5[0] == 0 and order5[-1] == 24
    sums = [sum(divmod(i, 5)) for i in order5]
    assert sums == sorted(sums)  # low to high frequency
    s = explainsteer(torch.randn(4, 3, 3))
    assert s.displayed().tolist() == [s.e_d[i].item() for i in display_order(3)]


@pytest.mark.parametrize("kernel, n", [(3, 20), (5, 6), ((3, 5), 31)])
def test_a_dct2_fixed_layer_has_the_flat_balanced_spectrum(kernel, n):
    """Each kernel is one basis row: e_d[i] = (uses of row i) / n, every row used floor or ceil of n/m times."""
    conv = nn.Conv2d(1, n, kernel)
    acl.fix_spatial(conv, "dct2", generator=torch.Generator().manual_seed(0))
    s = explainsteer(conv.weight)
    m = s.e_d.numel()
    uses = torch.round(s.e_d * n)
    torch.testing.assert_close(s.e_d, uses / n, atol=1e-6, rtol=0)
    assert set(uses.tolist()) <= {n // m, -(-n // m)} and int(uses.sum()) == n
    if n < m:  # fewer kernels than rows: not just the first n raster rows (the reference's pitfall)
        assert int((uses > 0).sum()) == n


def test_ones_psine_and_acl_dct_segments():
    ones = explainsteer(torch.ones(8, 3, 3))
    assert ones.e_d[0].item() == pytest.approx(3.0, abs=1e-6) and ones.e_d[1:].abs().max() < 1e-6
    assert ones.e_1.tolist() == pytest.approx([math.sqrt(3), 0, 0, math.sqrt(3), 0, 0], abs=1e-3)
    psine = explainsteer(acl.fixed_kernels("S", 50, 3, generator=torch.Generator().manual_seed(0)))
    assert psine.e_d[0] < 1e-6 < psine.e_d[1:].min()  # zero mean: no energy on the Mean basis kernel
    # An ACL of 9 DCT2 kernels (and learned ones): its D segment alone is flat.
    layer = acl.AnalyticConv2d(1, 18, 3, spec="D9P9")
    d = explainsteer(layer.weight.view(18, 9)[:9].view(9, 3, 3))
    torch.testing.assert_close(d.e_d, torch.full((9,), 1 / 9, dtype=torch.float64), atol=1e-6, rtol=0)


def _saliency(model, image, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, *image, generator=g), torch.randint(0, 10, (8,), generator=g)
    return acl.kernel_saliency(model, x, y, minibatches=2, batch_size=4)


@pytest.mark.parametrize("which", ["lenet", "anann-lenet", "dwnet", "anann-dwnet"])
def test_model_spectra_with_and_without_saliency(which):
    """Plain and ACL layers, with BatchNorm, a residual sum, a depthwise and 1x1 convolutions (dwnet)."""
    torch.manual_seed(0)
    if which.endswith("lenet"):
        model = build("lenet", DEFAULT_SPEC if which.startswith("anann") else None).eval()
        image = (1, 32, 32)
    else:
        model = (dw_net() if which.startswith("anann") else DwNet(IMAGE[0])).eval()
        image = IMAGE
    sal = _saliency(model, image)
    plain, weighted = model_spectra(model), model_spectra(model, sal)
    convs = {n: m for n, m in acl.bake(model).named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)}
    assert list(plain) == list(weighted) == list(convs) == list(sal.kernels)  # 1x1 convolutions have no spectrum
    total = sum(float(s.sum()) for s in sal.kernels.values())
    for name, conv in convs.items():
        n = conv.weight.shape[0] * conv.weight.shape[1]
        e_d, _, _ = by_the_definitions(conv.weight.detach(), torch.full((n,), 1 / n))
        torch.testing.assert_close(plain[name].e_d, torch.tensor(e_d, dtype=torch.float64), rtol=1e-5, atol=1e-7)
        w = sal.kernels[name].flatten() / total
        e_d, _, _ = by_the_definitions(conv.weight.detach(), w)
        torch.testing.assert_close(weighted[name].e_d, torch.tensor(e_d, dtype=torch.float64), rtol=1e-5, atol=1e-9)
    # With every kernel equally salient, the weighted spectrum is the plain one times the layer's share of kernels.
    flat = type(sal)(sal.variant, 1, 1, {k: torch.ones_like(v) for k, v in sal.kernels.items()}, sal.families)
    even = model_spectra(model, flat)
    count = sum(v.numel() for v in sal.kernels.values())
    for name in plain:
        torch.testing.assert_close(even[name].e_d, plain[name].e_d * plain[name].kernels / count)


def test_a_fixed_layer_keeps_its_spectrum_through_training():
    """The paper's sanity check (Sec. 4.4, obs. 3): a fixed initialisation is visibly unchanged after training."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 36, 3))
    acl.fix_spatial(net, "ghaar", generator=torch.Generator().manual_seed(0))
    before = explainsteer(net[0].weight)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 0])).backward()
        opt.step()
    assert torch.equal(explainsteer(net[0].weight).e_d, before.e_d)


def test_bad_input():
    with pytest.raises(ValueError, match="expected one weight per kernel"):
        explainsteer(torch.randn(4, 3, 3), torch.ones(3))
    with pytest.raises(ValueError, match="expected saliency weights >= 0"):
        explainsteer(torch.randn(2, 3, 3), torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="at least one kernel axis"):
        explainsteer(torch.randn(3, 3))
    with pytest.raises(ValueError, match="no spatial convolution"):
        model_spectra(nn.Sequential(nn.Conv2d(2, 2, 1)))
    sal = acl.Saliency("grad", 1, 1, {"0": torch.ones(2, 1)}, {})
    with pytest.raises(ValueError, match="saliency has no scores for layer 1"):
        model_spectra(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)), sal)
