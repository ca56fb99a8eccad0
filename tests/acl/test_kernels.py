import math
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

from acl.families import FAMILIES, SCALE_MAX, SCALE_MIN, TF_DELTA, TF_RAMP
from acl.kernels import generate, init_akps, kernel_grid, mosaic
from tests.acl.reference import REFERENCE, mean

SIZES = [(3, 3), (5, 5), (7, 7), (4, 4), (3, 5), (6, 3), (1, 1), (2, 7)]
ANALYTIC = ["G", "Lg", "Lt", "Tf", "Ts"]


def random_akps(sym: str, n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """AKPs in a broad, realistic range, including negative scales."""
    p = FAMILIES[sym].num_akps(3)
    a = torch.rand(n, p, generator=gen, dtype=dtype) * 6 - 3  # angles, phases, signed scales
    a = torch.where(a.abs() < 0.3, a.sign() * 0.3 + a, a)  # keep scales away from the SCALE_MIN clamp
    return a


def test_grid_is_eq3():
    x, y = kernel_grid((3, 4), dtype=torch.float64)
    # i' = i - (h+1)/2 for 1-based i: rows -1, 0, 1; columns -1.5 .. 1.5
    assert x[:, 0].tolist() == [-1.0, 0.0, 1.0]
    assert y[0].tolist() == [-1.5, -0.5, 0.5, 1.5]
    assert torch.equal(x[:, 0], x[:, 3]) and torch.equal(y[0], y[2])


@pytest.mark.parametrize("sym", ANALYTIC)
@pytest.mark.parametrize("size", SIZES)
def test_matches_scalar_reference(sym, size):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{sym}{size}".encode()))
    akps = random_akps(sym, 6, gen)
    got = generate(sym, akps, size)
    want = torch.tensor([REFERENCE[sym](*row.tolist(), *size) for row in akps], dtype=torch.float64)
    err = (got - want).abs().max().item()
    assert err < 1e-10, f"{sym} {size}: max abs diff to the reference {err:.3g}"


def test_mean_and_plain():
    assert torch.allclose(
        generate("M", torch.empty(2, 0, dtype=torch.float64), (3, 5))[1], torch.tensor(mean(3, 5), dtype=torch.float64)
    )
    v = torch.arange(12.0).reshape(2, 6)
    assert torch.equal(generate("P", v, (2, 3)), v.reshape(2, 2, 3))


@pytest.mark.parametrize("sym", ANALYTIC)
def test_float32_agrees_with_float64(sym):
    gen = torch.Generator().manual_seed(1)
    a = random_akps(sym, 32, gen)
    k64 = generate(sym, a, 7)
    k32 = generate(sym, a.float(), 7)
    assert k32.dtype == torch.float32
    scale = k64.abs().max().item()
    err = (k32.double() - k64).abs().max().item()
    assert err <= 1e-5 * max(scale, 1.0), f"{sym}: float32 vs float64 max abs diff {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("sym", [*ANALYTIC, "P"])
@pytest.mark.parametrize("size", [(3, 3), (4, 5), (5, 2)])
def test_gradcheck_and_gradgradcheck(sym, size):
    gen = torch.Generator().manual_seed(7)
    p = FAMILIES[sym].num_akps(size)
    a = random_akps(sym, 4, gen) if sym != "P" else torch.randn(4, p, generator=gen, dtype=torch.float64)
    a.requires_grad_()
    assert gradcheck(lambda t: generate(sym, t, size), (a,), eps=1e-6, atol=1e-6)
    if size == (3, 3):  # second order: autograd's own, checked once per family
        assert gradgradcheck(lambda t: generate(sym, t, size), (a[:2],), eps=1e-6, atol=1e-5)


def test_gradcheck_whole_mosaic():
    gen = torch.Generator().manual_seed(3)
    syms = ["Tf", "G", "M", "Lg", "P", "Lt", "Ts", "G"]
    akps = []
    for s in syms:
        if s == "M":
            akps.append(torch.empty(2, 0, dtype=torch.float64))
        elif s == "P":
            akps.append(torch.randn(3, 25, generator=gen, dtype=torch.float64).requires_grad_())
        else:
            akps.append(random_akps(s, 3, gen).requires_grad_())
    leaves = tuple(a for a in akps if a.requires_grad)

    def run(*xs):
        it = iter(xs)
        return mosaic([(s, next(it) if a.requires_grad else a) for s, a in zip(syms, akps)], 5)

    assert gradcheck(run, leaves, eps=1e-6, atol=1e-6, fast_mode=True)
    # the mosaic is the families' kernels in order
    out = run(*leaves).detach()
    start = 0
    for s, a in zip(syms, akps):
        n = a.shape[0]
        assert torch.equal(out[start : start + n], generate(s, a.detach(), 5))
        start += n


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (3, 4), (7, 7)])
@pytest.mark.parametrize("sym", ["Lt", "Ts"])
def test_centre_corrected_families_are_zero_sum(sym, size):
    a = random_akps(sym, 8, torch.Generator().manual_seed(0))
    k = generate(sym, a, size)
    assert k.sum(dim=(1, 2)).abs().max().item() < 1e-12


def test_tgd1st_is_antisymmetric_along_x_prime():
    a = random_akps("Tf", 16, torch.Generator().manual_seed(5))
    for size in [(5, 5), (4, 6)]:
        k = generate("Tf", a, size)
        # a half-turn of the grid maps x' to -x'
        assert torch.allclose(k.flip(-1, -2), -k, atol=1e-12)


def test_tgd1st_zero_on_the_axis():
    k = generate("Tf", torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64), 5)
    assert torch.all(k[0, 2] == 0)  # theta = 0: x' = row offset, zero on the centre row


def kernel_r2(size: int) -> torch.Tensor:
    """``x^2 + y^2`` of every sample of a ``size x size`` grid (float64)."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    return r[:, None] ** 2 + r[None, :] ** 2


def edge_angles(n: int, dtype=torch.float32) -> torch.Tensor:
    """Angles where a sample of a 3x3 grid has ``|x'| = TF_DELTA``, each with its ``n`` float neighbours.

    The edges: sample (1, 0) or (1, -1) at ``x' = +-delta``, over two turns.
    """
    edges = []
    for offset in (0.0, -math.pi / 4):  # x' = cos(theta) or sqrt(2) cos(theta + pi/4) for (1, -1)
        r = 1.0 if offset == 0.0 else math.sqrt(2)
        for target in (TF_DELTA, -TF_DELTA):
            base = math.acos(target / r) + offset
            edges += [base + k * math.pi for k in range(-2, 2)] + [-base + k * math.pi for k in range(-2, 2)]
    angles = []
    for edge in edges:
        t = torch.tensor(edge, dtype=dtype)
        angles.append(t)
        for direction in (-math.inf, math.inf):
            s = t
            for _ in range(n // 2):
                s = torch.nextafter(s, torch.tensor(direction, dtype=dtype))
                angles.append(s)
    return torch.stack(angles)


def test_tgd1st_is_continuous_where_the_papers_step_jumps():
    # The paper's step sign(x') I(|x'| > delta) jumps by a whole sample at |x'| = delta;
    # angles within float32 rounding of that edge gave PyTorch and ONNX Runtime
    # kernels 0.28 apart. float32 and float64 kernels of the same angles must agree.
    theta = edge_angles(64)
    akps = torch.stack([theta, torch.ones_like(theta), torch.ones_like(theta)], dim=1)
    k32 = generate("Tf", akps, 3).double()
    k64 = generate("Tf", akps.double(), 3)
    diff = (k32 - k64).abs().max().item()
    assert diff < 1e-4, f"float32 and float64 TGD1st kernels differ by {diff:.3g} at the band's edge"
    # the sweep does cross the ramp: some samples lie strictly between 0 and their full weight
    full = (-kernel_r2(3)).exp()  # gamma1 = gamma2 = 1: |kernel| = exp(-x'^2 - y'^2) times the step
    share = (k64.abs() / full).flatten()
    assert ((share > 0) & (share < 0.99)).any(), "no sample of the sweep lies on the ramp"


def test_tgd1st_is_eq16_outside_the_ramp():
    theta = torch.linspace(-math.pi, math.pi, 2001, dtype=torch.float64)
    akps = torch.stack([theta, torch.full_like(theta, 1.3), torch.full_like(theta, 0.7)], dim=1)
    k = generate("Tf", akps, 3).reshape(-1, 9)
    xs = torch.tensor([-1.0, -1, -1, 0, 0, 0, 1, 1, 1], dtype=torch.float64)
    ys = torch.tensor([-1.0, 0, 1, -1, 0, 1, -1, 0, 1], dtype=torch.float64)
    c, s = theta.cos()[:, None], theta.sin()[:, None]
    xp, yp = xs * c + ys * s, ys * c - xs * s
    step = xp.sign() * (xp.abs() > TF_DELTA)
    eq16 = (-((xp / 1.3) ** 2) - (yp / 0.7) ** 2).exp() * step
    outside = (xp.abs() <= TF_DELTA) | (xp.abs() >= TF_DELTA + TF_RAMP)
    assert outside.float().mean() > 0.99
    diff = (k - eq16)[outside].abs().max().item()
    assert diff < 1e-12, f"TGD1st differs from eq. 16 by {diff:.3g} outside the ramp"


EXTREMES = [0.0, 1e-30, -1e-30, 1e-8, -1e-3, 1.0, -2.5, 1e8, -1e8, 1e30, -1e30, 3e38]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sym", ANALYTIC)
def test_extreme_akps_stay_finite(sym, dtype):
    p = FAMILIES[sym].num_akps(7)
    base = torch.tensor([3.0, 0.4, 0.2, 1.5][:p], dtype=dtype)
    rows = []
    for col in range(p):
        for v in EXTREMES:
            r = base.clone()
            r[col] = v
            rows.append(r)
    a = torch.stack(rows).requires_grad_()
    k = generate(sym, a, 7)
    assert torch.isfinite(k).all(), (
        f"{sym}: non-finite kernel for rows {torch.nonzero(~torch.isfinite(k))[:3].tolist()}"
    )
    (k * torch.linspace(-1, 1, 49, dtype=dtype).view(7, 7)).sum().backward()
    assert torch.isfinite(a.grad).all(), (
        f"{sym}: non-finite gradient at {torch.nonzero(~torch.isfinite(a.grad))[:3].tolist()}"
    )


@settings(max_examples=60, deadline=None)
@given(
    sym=st.sampled_from(ANALYTIC),
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=4, max_size=4),
    size=st.sampled_from([(3, 3), (4, 5), (1, 2)]),
)
def test_any_finite_float32_akps_give_finite_kernels_and_grads(sym, values, size):
    p = FAMILIES[sym].num_akps(size)
    a = torch.tensor([values[:p]], dtype=torch.float32, requires_grad=True)
    k = generate(sym, a, size)
    assert torch.isfinite(k).all()
    k.sum().backward()
    assert torch.isfinite(a.grad).all()


def test_scales_act_through_their_magnitude():
    a = torch.tensor([[1.3]], dtype=torch.float64)
    for sym in ("Lg", "Lt"):
        assert torch.equal(generate(sym, a, 5), generate(sym, -a, 5))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: generate("Q", torch.zeros(1, 1), 3), "unknown kernel family 'Q'"),
        (lambda: generate("G", torch.zeros(2, 3), 3), r"Gabor: akps must have shape \[N, 4\], got \[2, 3\]"),
        (lambda: generate("Lg", torch.zeros(2), 3), r"LoG: akps must have shape \[N, 1\]"),
        (lambda: generate("P", torch.zeros(1, 8), 3), r"Plain: akps must have shape \[N, 9\]"),
        (lambda: generate("Lg", torch.ones(1, 1, dtype=torch.int64), 3), "floating"),
        (lambda: generate("Lg", torch.ones(1, 1), 0), "kernel_size"),
        (lambda: mosaic([("Lg", torch.ones(1, 1)), ("Lt", torch.ones(1, 1, dtype=torch.float64))], 3), "one dtype"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def test_gabor_peak_and_wavelength():
    # theta = 0, psi = 0: cos(2 pi x / lambda) along rows; lambda = 4 puts zeros at x = +-1
    k = generate("G", torch.tensor([[4.0, 0.0, 0.0, 100.0]], dtype=torch.float64), 5)[0]
    assert k[2, 2].item() == pytest.approx(1.0)
    assert abs(k[1, 2].item()) < 1e-12 and abs(k[3, 2].item()) < 1e-12
    assert k[0, 2].item() == pytest.approx(-math.exp(-4 / 20000), rel=1e-9)


def test_log_centre_scales_as_inverse_sigma4():
    k = generate("Lg", torch.tensor([[1.0], [2.0]], dtype=torch.float64), 3)
    assert k[0, 1, 1].item() / k[1, 1, 1].item() == pytest.approx(16.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    for sym in ANALYTIC:
        a = random_akps(sym, 8, torch.Generator().manual_seed(0))
        assert torch.allclose(generate(sym, a.cuda(), 5).cpu(), generate(sym, a, 5))


def test_meta_device_shapes():
    k = generate("G", torch.zeros(3, 4, device="meta"), (3, 5))
    assert k.shape == (3, 3, 5) and k.device.type == "meta"


def test_half_precision():
    a = random_akps("G", 4, torch.Generator().manual_seed(2))
    k16 = generate("G", a.to(torch.bfloat16), 3)
    assert k16.dtype == torch.bfloat16
    assert (k16.double() - generate("G", a, 3)).abs().max().item() < 2e-2


@pytest.mark.parametrize("sym", ANALYTIC)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_akps_stay_in_their_kernel(sym, bad):
    a = random_akps(sym, 6, torch.Generator().manual_seed(9)).float()
    a[2, -1] = bad
    k = generate(sym, a, 3)
    rows = [0, 1, 3, 4, 5]
    assert torch.equal(k[rows], generate(sym, a[rows], 3))
    assert k[rows].isfinite().all()


def test_nan_upstream_gradient_reaches_the_akps():
    a = random_akps("G", 4, torch.Generator().manual_seed(6)).float().requires_grad_()
    k = generate("G", a, 3)
    upstream = torch.ones_like(k)
    upstream[1, 1, 1] = math.nan
    k.backward(upstream)
    assert a.grad[1].isnan().all() and a.grad[[0, 2, 3]].isfinite().all()


def test_init_akps_follow_the_registry_ranges():
    torch.manual_seed(0)
    for sym in ANALYTIC:
        a = init_akps(sym, 500, (7, 9))
        for col, akp in zip(a.T, FAMILIES[sym].akps):
            lo, hi = akp.init(7)
            assert lo <= col.min() and col.max() <= hi, (sym, akp.name)
    assert init_akps("M", 3, 5).shape == (3, 0)
    with pytest.raises(ValueError, match="no AKPs"):
        init_akps("P", 3, 5)


# -- PyTorch's function transforms see plain differentiable operations -------------


def _bank(sym: str, n: int = 3) -> torch.Tensor:
    return random_akps(sym, n, torch.Generator().manual_seed(len(sym)))


@pytest.mark.parametrize("sym", ANALYTIC)
def test_vmap_over_banks_equals_a_loop(sym):
    banks = torch.stack([_bank(sym) + i for i in range(4)])
    got = torch.func.vmap(lambda a: generate(sym, a, (3, 4)))(banks)
    assert torch.allclose(got, torch.stack([generate(sym, b, (3, 4)) for b in banks]), atol=1e-12)


@pytest.mark.parametrize("sym", ANALYTIC)
def test_jacrev_and_grad_equal_autograd(sym):
    a = _bank(sym).requires_grad_()
    weights = torch.linspace(-1, 1, 3 * 25, dtype=torch.float64).view(3, 5, 5)
    jac = torch.func.jacrev(lambda t: generate(sym, t, 5))(a)
    want = torch.autograd.functional.jacobian(lambda t: generate(sym, t, 5), a)
    assert torch.allclose(jac, want, atol=1e-12)
    g = torch.func.grad(lambda t: (generate(sym, t, 5) * weights).sum())(a)
    (want_g,) = torch.autograd.grad((generate(sym, a, 5) * weights).sum(), a)
    assert torch.allclose(g, want_g, atol=1e-12)


def test_hessian_of_a_mosaic_is_symmetric():
    a = _bank("G", 2)
    hess = torch.func.hessian(lambda t: mosaic([("G", t), ("Lg", t[:, 3:])], 3).square().sum())(a)
    assert torch.allclose(hess.reshape(8, 8), hess.reshape(8, 8).T, atol=1e-10)


@pytest.mark.parametrize("size", [(3, 3), (4, 4), (3, 4), (1, 1), (7, 7), (5, 2)])
@pytest.mark.parametrize("sym", [s for s, f in FAMILIES.items() if f.odd])
def test_odd_family_on_half_the_samples_equals_its_formula_at_every_sample(sym, size):
    # acl.kernels evaluates an odd family (TGD1st) on the first hw // 2 samples and mirrors them; the formula
    # evaluated at all hw samples must give the same kernels and AKP gradients, bit for bit.
    from acl.kernels import _cached_grid, _columns, _rotate, unchecked_mosaic

    f = FAMILIES[sym]
    torch.manual_seed(3)
    akps = init_akps(sym, 64, size).requires_grad_()
    full_akps = akps.detach().clone().requires_grad_()
    half = unchecked_mosaic([sym], size, [akps]).reshape(64, -1)
    cols = _columns(full_akps, len(f.akps))
    cols[1:] = [c.abs().clamp(SCALE_MIN, SCALE_MAX).reciprocal() for c in cols[1:]]  # gamma1, gamma2
    s = _cached_grid(*size, torch.float32, torch.device("cpu")).samples
    x, y = _rotate(cols[f.angle], s)
    full = f.formula(*cols, s._replace(x=x, y=y))
    assert torch.equal(half, full), f"max diff {(half - full).abs().max().item():.3g}"
    weights = torch.randn_like(full)
    (g_half,) = torch.autograd.grad((half * weights).sum(), akps)
    (g_full,) = torch.autograd.grad((full * weights).sum(), full_akps)
    diff, scale = (g_half - g_full).abs().max().item(), g_full.abs().max().item()
    assert diff <= 1e-6 * scale, f"AKP gradients: max diff {diff:.3g} of {scale:.3g} (summed in another order)"
