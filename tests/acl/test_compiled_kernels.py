"""acl.compiled_kernels: the compiled generator gives the eager generator's kernels and gradients."""

from __future__ import annotations

import pytest
import torch

from acl import compiled_kernels
from acl.compiled_kernels import blocked_transpose, compiled_mosaic, compiled_mosaics
from acl.kernels import init_akps, unchecked_mosaic

# Every family with AKPs, a Plain segment between two runs, Mean and Plain at the end.
SYMBOLS = ["G", "Lg", "P", "Lt", "Tf", "Ts", "M", "P"]


def _bank(symbol: str, n: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if symbol == "M":
        return torch.empty(n, 0)
    if symbol == "P":
        return torch.randn(n, *size, generator=g)
    torch.manual_seed(seed)
    return init_akps(symbol, n, size)


def _banks(n: int, size: tuple[int, int], seed: int = 0) -> list[torch.Tensor]:
    return [_bank(s, n, size, seed + i).requires_grad_() for i, s in enumerate(SYMBOLS)]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _check_equal(size: tuple[int, int], n: int, seed: int = 0) -> None:
    akps = _banks(n, size, seed)
    eager = unchecked_mosaic(SYMBOLS, size, akps)
    compiled = compiled_mosaic(SYMBOLS, size, akps)
    assert compiled.shape == eager.shape
    err = _relative(compiled, eager)
    assert err < 1e-5, f"{size}, n={n}: kernels differ by {err:.3g} of their largest value"
    g = torch.randn_like(eager)
    ge = torch.autograd.grad(eager, akps, g, allow_unused=True)
    gc = torch.autograd.grad(compiled, akps, g, allow_unused=True)
    for sym, a, b in zip(SYMBOLS, gc, ge):
        if b is None or b.numel() == 0:
            continue
        err = _relative(a, b)
        assert err < 1e-5, f"{size}, n={n}, {sym}: gradients differ by {err:.3g} of their largest value"


@pytest.mark.parametrize("size", [(3, 3), (5, 2)], ids=str)
def test_compiled_mosaic_equals_eager_kernels_and_gradients(size):
    # two bank sizes through one graph: the second call reuses the first's (sizes are dynamic)
    _check_equal(size, 37)
    _check_equal(size, 64, seed=5)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(4, 4), (3, 4), (1, 1), (7, 7)], ids=str)
def test_compiled_mosaic_equals_eager_at_more_kernel_sizes(size):
    _check_equal(size, 37)


def test_mosaics_of_one_spec_and_size_share_one_compiled_graph():
    size = (3, 3)
    jobs = [(SYMBOLS, size, _banks(n, size, seed)) for n, seed in ((16, 0), (40, 1), (8, 2))]
    before = set(compiled_kernels._COMPILED)
    together = compiled_mosaics(jobs)
    new = set(compiled_kernels._COMPILED) - before
    assert len(new) <= 2, f"expected at most one compiled function per run of symbols, got {sorted(new)}"
    for (symbols, _, akps), kernels in zip(jobs, together):
        err = _relative(kernels.view(-1, *size), unchecked_mosaic(symbols, size, akps))
        assert err < 1e-5, f"a mosaic generated together with others differs by {err:.3g}"


def test_blocked_transpose_is_a_transpose_forward_and_backward():
    x = torch.randn(9, 200, dtype=torch.float64, requires_grad=True)
    y = blocked_transpose(x)
    assert y.is_contiguous() and torch.equal(y, x.t())
    g = torch.randn(200, 9, dtype=torch.float64)
    (gx,) = torch.autograd.grad(y, x, g)
    assert gx.is_contiguous() and torch.equal(gx, g.t())
    assert torch.autograd.gradgradcheck(blocked_transpose, (torch.randn(7, 130, dtype=torch.float64, requires_grad=True),))


def test_blocked_transpose_of_a_column_slice_and_of_odd_sizes():
    base = torch.randn(9, 301)
    for x in (base[:, 5:106], base[:, :1], torch.randn(3, 0)):
        assert torch.equal(blocked_transpose(x), x.t()), f"shape {tuple(x.shape)}"
