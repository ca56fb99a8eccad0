"""ExplainFix's fixed kernel families (acl.fixed_families) in the registry, the spec and AnalyticConv2d."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import acl
from acl import AnalyticConv2d
from acl.fixed_families import balanced_indices, dct2_basis, draw_ghaar, draw_psine, ghaar

FIXED = "D0.3H0.2S0.1O0.05U0.15G0.1P0.1"  # every fixed family, beside an analytic and a plain one


def dct_row(k: int, n: int) -> list[float]:
    """Orthonormal DCT-II row ``k`` of length ``n``, written out from the definition (not the module's code)."""
    s = math.sqrt(1 / n) if k == 0 else math.sqrt(2 / n)
    return [s * math.cos(math.pi * k * (x + 0.5) / n) for x in range(n)]


@pytest.mark.parametrize("size", [(3, 3), (5, 5), (3, 5)])
def test_dct2_is_the_orthonormal_raster_basis(size):
    h, w = size
    b = dct2_basis(size, dtype=torch.float64)
    # raster order: row a*w + c is the outer product of 1-D rows a and c, flattened row-major
    want = torch.tensor(
        [[ra * cb for ra in dct_row(a, h) for cb in dct_row(c, w)] for a in range(h) for c in range(w)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(b, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(b @ b.T, torch.eye(h * w, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(b[0], torch.full((h * w,), 1 / math.sqrt(h * w), dtype=torch.float64))
    mean = acl.generate("M", torch.empty(1, 0), size).flatten().double()
    torch.testing.assert_close(b[0], mean, atol=1e-7, rtol=0)  # index 0 is the Mean kernel


def basis_index(kernels: torch.Tensor, size) -> torch.Tensor:
    """Which DCT2 basis row each kernel is (each is exactly one row)."""
    coeff = kernels.flatten(1).double() @ dct2_basis(size, dtype=torch.float64).T
    assert torch.allclose(coeff.abs().max(1).values, torch.ones(len(kernels), dtype=torch.float64), atol=1e-6)
    return coeff.abs().argmax(1)


@pytest.mark.parametrize("n, size", [(20, (3, 3)), (5, (3, 3)), (64, (3, 5)), (9, (3, 3))])
def test_dct2_layer_assignment_is_balanced(n, size):
    torch.manual_seed(n)
    layer = AnalyticConv2d(1, n, size, spec=f"D{n}")
    m = size[0] * size[1]
    counts = torch.bincount(basis_index(layer.fixed0_D, size), minlength=m)
    assert counts.sum() == n
    assert set(counts.tolist()) <= {n // m, -(-n // m)}, counts.tolist()
    if n < m:
        assert counts.max() == 1, "fewer kernels than basis rows: each row at most once"


def test_balanced_indices_reach_every_row_when_kernels_are_fewer_than_channels():
    # the reference's randperm(I) % m with I = 2 input channels would use only rows 0 and 1
    seen = set()
    for seed in range(30):
        seen |= set(balanced_indices(4, 9, torch.Generator().manual_seed(seed)).tolist())
    assert seen == set(range(9))


def test_ghaar_two_by_two_at_f_one_is_haar():
    k = ghaar(torch.ones(3), torch.eye(3), 2)
    assert k[0].tolist() == [[1, 1], [-1, -1]]  # rows: horizontal edge
    assert k[1].tolist() == [[1, -1], [1, -1]]  # columns: vertical edge
    assert k[2].tolist() == [[1, -1], [-1, 1]]  # diagonal


@pytest.mark.parametrize("k", [2, 3, 5])
def test_ghaar_is_periodic_in_f_with_period_two_k_minus_one(k):
    g = torch.Generator().manual_seed(k)
    f = torch.rand(16, generator=g) * 2 * (k - 1)
    a = torch.rand(16, 3, generator=g) * 2 - 1
    torch.testing.assert_close(ghaar(f + 2 * (k - 1), a, k), ghaar(f, a, k), atol=1e-5, rtol=0)
    drawn = draw_ghaar(200, k, g)
    assert drawn.abs().max() <= 3 + 1e-6 and drawn.std() > 0.1  # |K| <= |a_r| + |a_c| + |a_d|, and not flat


@pytest.mark.parametrize("size", [(3, 3), (5, 5), (3, 5), (7, 7)])
def test_psine_kernels_are_zero_mean_and_unit_norm(size):
    k = draw_psine(300, size, torch.Generator().manual_seed(1)).double()
    assert torch.isfinite(k).all()
    assert k.mean((1, 2)).abs().max() < 1e-6
    torch.testing.assert_close(k.flatten(1).norm(dim=1), torch.ones(300, dtype=torch.float64), atol=1e-6, rtol=0)
    rank = torch.linalg.matrix_rank(k.flatten(1), atol=1e-4)
    assert rank == size[0] * size[1] - 1, "varied kernels spanning the zero-mean space"


def test_fixed_kernels_are_buffers_and_do_not_change_after_optimizer_steps():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3))
    net = nn.Sequential(*acl.convert(net, FIXED, layers="all"), nn.Flatten(), nn.LazyLinear(4))
    net(torch.randn(2, 3, 8, 8))
    fixed = {n: b.clone() for n, b in net.named_buffers() if ".fixed" in n}
    assert len(fixed) == 10 and not [n for n, _ in net.named_parameters() if ".fixed" in n]
    plain = {n: p.detach().clone() for n, p in net.named_parameters() if ".plain" in n or ".akp" in n}
    for opt in (torch.optim.Adam(net.parameters(), lr=0.1), torch.optim.SGD(net.parameters(), 0.1, weight_decay=0.1)):
        in_optimizer = {id(p) for group in opt.param_groups for p in group["params"]}
        assert not in_optimizer & {id(b) for b in net.buffers()}
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(net(torch.randn(4, 3, 8, 8)), torch.tensor([0, 1, 2, 3])).backward()
            opt.step()
    for n, b in net.named_buffers():
        if n in fixed:
            assert torch.equal(b, fixed[n]), n
    assert all(not torch.equal(p, plain[n]) for n, p in net.named_parameters() if n in plain), "the rest learned"


def test_a_fixed_layer_saves_loads_and_counts_as_nothing_learned():
    torch.manual_seed(1)
    layer = AnalyticConv2d(4, 8, 3, spec="D8H8S8O4U4")
    torch.manual_seed(2)
    other = AnalyticConv2d(4, 8, 3, spec="D8H8S8O4U4")
    assert not torch.equal(layer.weight, other.weight), "the draws follow the RNG"
    other.load_state_dict(layer.state_dict())
    assert torch.equal(layer.weight, other.weight)
    assert [n for n, _ in layer.named_parameters()] == ["bias"]
    assert acl.compact_factor(layer.spec, 4, 8, 3) == 1.0
    assert acl.compact_factor("(4x8)D16P16", 4, 8, 3) == 0.5


def test_from_conv_keeps_the_convolution_kernels_in_unchanged_segments():
    conv = nn.Conv2d(2, 4, 3)
    layer = AnalyticConv2d.from_conv(conv, "U4D4")
    torch.testing.assert_close(layer.weight.reshape(-1, 3, 3)[:4], conv.weight.reshape(-1, 3, 3)[:4], rtol=0, atol=0)
    assert not layer.fixed0_U.requires_grad


def test_ablating_and_fitting_keep_fixed_kernels():
    torch.manual_seed(3)
    layer = AnalyticConv2d(2, 4, 3, spec="D3H1Lg2P2")
    ablated = acl.ablate(layer, "Lg")
    assert str(ablated.spec) == "(2x4)D3H1M2P2"
    assert torch.equal(ablated.fixed0_D, layer.fixed0_D) and torch.equal(ablated.fixed1_H, layer.fixed1_H)
    before = layer.fixed0_D.clone()
    report = acl.fitting.fit_into(layer, torch.randn(4, 2, 3, 3), steps=5, time_limit=5)
    assert torch.equal(layer.fixed0_D, before) and report.rel_error[:4].gt(0).all()


def test_fixed_families_take_no_akps():
    with pytest.raises(ValueError, match=r"D \(DCT2\) is a fixed family: it has no AKPs.*expected acl.fixed_kernels"):
        acl.generate("D", torch.zeros(2, 0), 3)
    with pytest.raises(ValueError, match="no AKPs to initialise"):
        acl.init_akps("H", 2, 3)
    for text in ("D4H{f=2}", "S(3)U1", "O[1]D3"):
        with pytest.raises(
            ValueError, match=r"gives fixed family . \(\w+\) a parameter, which would make it learnable"
        ):
            acl.parse_spec(text, 1, 4)
    assert str(acl.parse_spec("H{4}", 1, 4)) == "(1x4)H4", "a braced count is still a count"
