"""Fixed kernel families of ExplainFix (Gaudio et al., sec. 3.1): DCT2, GHaar, Psine, Ones, random Unchanged.

A fixed family's kernels are drawn once, when a layer is built, and never
learned: ``AnalyticConv2d`` keeps them as buffers. The pure generators below map
explicit parameters to kernels (vectorised over a bank, no RNG); the ``draw_*``
functions draw those parameters from a ``torch.Generator`` (the global one when
``None``, like ``nn.Conv2d``'s initialisation) and call them. ``fixed_kernels`` is
what a layer calls, by spec symbol.

Definitions (the design brief's part A, with the paper's Eq. 2 corrected):

- **DCT2**: the orthonormal 2-D DCT-II basis ``B`` (``hw x hw``, row ``a*w + b`` =
  ``b_a^(h) outer b_b^(w)`` flattened row-major, ``B B^T = I``, row 0 the Mean kernel);
  each kernel is one basis row, assigned at random and balanced: every row is used
  ``floor(n/hw)`` or ``ceil(n/hw)`` times, and which rows get the extra use is random
  (``balanced_indices``).
- **GHaar**: ``K = a_r cos(f x) 1^T + a_c 1 cos(f y)^T + a_d cos(f x) cos(f y)^T`` with
  ``x = linspace(0, pi, h)``, ``y = linspace(0, pi, w)``, one ``f ~ U(0, 2(k-1))`` per
  kernel (``k = max(h, w)``; the period of ``K`` in ``f`` for ``k x k``) and
  ``(a_r, a_c, a_d) ~ U(-1, 1)^3``; no constant term, no normalisation.
- **Psine** (footnote 1): per kernel ``L = int(3 + 2^(6u))`` terms, ``fmax ~ U(1, 5)``,
  frequencies ``U(0, fmax)^2`` and phases ``U(0, 2 pi)^2`` per term, integer powers
  ``p_l = round(U(1, (L-1)/2))`` and weights ``w = 2u/sum(u) - 1``;
  ``K = sum_l w_l (sin(f_l1 x + t_l1) sin(f_l2 y + t_l2)^T)^(o p_l)``, then zero mean
  and unit L2 norm.
- **Ones**: every weight 1. **Unchanged**: ``nn.Conv2d``'s default initialisation,
  ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Kaiming-uniform with ``a = sqrt(5)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from acl.families import family, pair

__all__ = [
    "balanced_indices",
    "dct1d",
    "dct2",
    "dct2_basis",
    "draw_ghaar",
    "draw_psine",
    "fixed_kernels",
    "ghaar",
    "psine",
]

PSINE_MAX_TERMS = 67
"""``int(3 + 2^6)``: the most terms a Psine kernel draws."""


def dct1d(n: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    r"""Orthonormal 1-D DCT-II basis: row ``k`` is :math:`s_k \cos(\pi k (x + 1/2) / n)`, ``x = 0..n-1``.

    ``s_0 = sqrt(1/n)``, ``s_k = sqrt(2/n)``: the rows are orthonormal (the paper's
    Eq. 2 prints ``2 pi / N``, which is not orthogonal; the reference code uses ``pi / N``).

    Shape:
        - Output: :math:`(n, n)`

    Examples:
        >>> b = dct1d(4)
        >>> torch.allclose(b @ b.T, torch.eye(4, dtype=b.dtype)), round(b[0, 0].item(), 6)
        (True, 0.5)
    """
    x = torch.arange(n, dtype=torch.float64)
    k = x[:, None]
    scale = torch.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    return (scale * torch.cos(math.pi * k * (x + 0.5) / n)).to(dtype)


def dct2_basis(kernel_size: int | Sequence[int], *, dtype: torch.dtype = torch.float32) -> Tensor:
    """The orthonormal 2-D DCT-II basis of ``h x w`` kernels, one flattened basis kernel per row.

    Row ``a*w + b`` is the outer product of the 1-D rows ``a`` (of ``h``) and ``b`` (of
    ``w``), flattened row-major: ``kron(dct1d(h), dct1d(w))``. ``B B^T = I``; row 0 is
    ``ones / sqrt(hw)``, the Mean kernel.

    Shape:
        - Output: :math:`(hw, hw)`

    Examples:
        >>> b = dct2_basis((3, 5))
        >>> b.shape, torch.allclose(b @ b.T, torch.eye(15), atol=1e-6)
        (torch.Size([15, 15]), True)
        >>> torch.allclose(b[0], torch.full((15,), 15 ** -0.5))
        True
    """
    h, w = pair(kernel_size)
    return torch.kron(dct1d(h), dct1d(w)).to(dtype)


def balanced_indices(n: int, m: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` indices into ``m`` basis rows, each used ``floor(n/m)`` or ``ceil(n/m)`` times, in random order.

    Every row is used ``n // m`` times, ``n % m`` rows drawn at random once more, and
    the result shuffled. ``randperm(n) % m`` would be balanced too, but would always
    give the extra uses to the lowest raster indices: with ``n < m`` (a 1->6 layer of
    5x5 kernels) only rows ``0..n-1``, the first row frequencies, would ever appear,
    which is the reference code's ``randperm(I) % m`` pitfall.

    Shape:
        - Output: :math:`(n)`, ``int64``

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> sorted(torch.bincount(balanced_indices(20, 9, g), minlength=9).tolist())
        [2, 2, 2, 2, 2, 2, 2, 3, 3]
    """
    whole = torch.arange(m).repeat(n // m)
    extra = torch.randperm(m, generator=generator)[: n % m]
    return torch.cat([whole, extra])[torch.randperm(n, generator=generator)]


def dct2(index: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    """DCT2 kernels: basis row ``index[i]`` of ``dct2_basis`` for kernel ``i``.

    Shape:
        - index: :math:`(N)`, integer
        - Output: :math:`(N, h, w)`, float32

    Examples:
        >>> dct2(torch.tensor([0, 1]), 2).mul(2).round().tolist()
        [[[1.0, 1.0], [1.0, 1.0]], [[1.0, -1.0], [1.0, -1.0]]]
    """
    h, w = pair(kernel_size)
    return dct2_basis((h, w))[index.long()].view(-1, h, w)


def _axes(h: int, w: int) -> tuple[Tensor, Tensor]:
    """``linspace(0, pi, h)`` and ``linspace(0, pi, w)`` in float64 (the GHaar and Psine sample positions)."""
    return torch.linspace(0, math.pi, h, dtype=torch.float64), torch.linspace(0, math.pi, w, dtype=torch.float64)


def ghaar(freq: Tensor, coeffs: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""GHaar kernels: :math:`a_r \cos(f x) 1^T + a_c 1 \cos(f y)^T + a_d \cos(f x) \cos(f y)^T`.

    Args:
        freq: one frequency ``f`` per kernel.
        coeffs: ``(a_r, a_c, a_d)`` per kernel: weights of the row, column and diagonal components.
        kernel_size: ``h`` or ``(h, w)``; ``x = linspace(0, pi, h)`` runs down the rows.

    Shape:
        - freq: :math:`(N)`; coeffs: :math:`(N, 3)`
        - Output: :math:`(N, h, w)`, float32

    Examples:
        >>> f = torch.ones(3)
        >>> ghaar(f, torch.eye(3), 2).tolist()  # k = 2, f = 1: the three Haar filters
        [[[1.0, 1.0], [-1.0, -1.0]], [[1.0, -1.0], [1.0, -1.0]], [[1.0, -1.0], [-1.0, 1.0]]]
    """
    h, w = pair(kernel_size)
    x, y = _axes(h, w)
    f = freq.to(torch.float64).reshape(-1, 1)
    a = coeffs.to(torch.float64).reshape(-1, 3, 1, 1)
    cx = torch.cos(f * x)[:, :, None]  # [N, h, 1]
    cy = torch.cos(f * y)[:, None, :]  # [N, 1, w]
    k = a[:, 0] * cx + a[:, 1] * cy + a[:, 2] * cx * cy
    return k.expand(-1, h, w).to(torch.float32)


def psine(weights: Tensor, freq: Tensor, phase: Tensor, power: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Psine kernels: :math:`\sum_l w_l (\sin(f_{l1} x + t_{l1}) \sin(f_{l2} y + t_{l2})^T)^{\circ p_l}`, whitened.

    Each kernel is then made zero-mean and scaled to unit L2 norm (a kernel that is
    constant stays zero). Terms with weight 0 contribute nothing, so banks whose
    kernels have different numbers of terms are padded with zero weights.

    Args:
        weights: ``w_l`` per kernel and term.
        freq: ``(f_l1, f_l2)`` per kernel and term.
        phase: ``(t_l1, t_l2)`` per kernel and term.
        power: the integer powers ``p_l`` (as floats or integers).
        kernel_size: ``h`` or ``(h, w)``; ``x = linspace(0, pi, h)``, ``y = linspace(0, pi, w)``.

    Shape:
        - weights, power: :math:`(N, L)`; freq, phase: :math:`(N, L, 2)`
        - Output: :math:`(N, h, w)`, float32, each kernel zero-mean with norm 1

    Examples:
        >>> one = torch.ones(1, 1)
        >>> k = psine(one, torch.ones(1, 1, 2), torch.zeros(1, 1, 2), one, 3)
        >>> round(k.sum().item(), 6), round(k.norm().item(), 6)
        (0.0, 1.0)
    """
    h, w = pair(kernel_size)
    x, y = _axes(h, w)
    f, t = freq.to(torch.float64), phase.to(torch.float64)
    sx = torch.sin(f[..., 0:1] * x + t[..., 0:1])  # [N, L, h]
    sy = torch.sin(f[..., 1:2] * y + t[..., 1:2])  # [N, L, w]
    terms = (sx[..., :, None] * sy[..., None, :]).pow(power.to(torch.float64)[..., None, None])
    k = (weights.to(torch.float64)[..., None, None] * terms).sum(1)  # [N, h, w]
    k = k - k.mean(dim=(1, 2), keepdim=True)
    norm = k.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    return (k / norm).to(torch.float32)


def draw_ghaar(n: int, kernel_size: int | Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """``n`` random GHaar kernels: ``f ~ U(0, 2(k-1))`` with ``k = max(h, w)``, coefficients ``U(-1, 1)^3``.

    Shape:
        - Output: :math:`(n, h, w)`, float32

    Examples:
        >>> draw_ghaar(4, (3, 5), torch.Generator().manual_seed(0)).shape
        torch.Size([4, 3, 5])
    """
    h, w = pair(kernel_size)
    freq = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * (max(h, w) - 1))
    coeffs = torch.rand(n, 3, generator=generator, dtype=torch.float64) * 2 - 1
    return ghaar(freq, coeffs, (h, w))


def draw_psine(n: int, kernel_size: int | Sequence[int], generator: torch.Generator | None = None) -> Tensor:
    """``n`` random Psine kernels with the footnote's distributions (module docstring).

    Shape:
        - Output: :math:`(n, h, w)`, float32, each kernel zero-mean with unit norm

    Examples:
        >>> k = draw_psine(5, 3, torch.Generator().manual_seed(0))
        >>> k.shape, bool(k.sum((1, 2)).abs().max() < 1e-6), bool((k.norm(dim=(1, 2)) - 1).abs().max() < 1e-6)
        (torch.Size([5, 3, 3]), True, True)
    """

    def u(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    terms = (3 + 2 ** (6 * u(n))).floor().clamp(max=PSINE_MAX_TERMS)  # L per kernel
    big = int(terms.max().item()) if n else 1
    used = torch.arange(big, dtype=torch.float64) < terms[:, None]  # [n, big]
    fmax = 1 + 4 * u(n)
    freq = u(n, big, 2) * fmax[:, None, None]
    phase = u(n, big, 2) * (2 * math.pi)
    power = (1 + u(n, big) * ((terms[:, None] - 1) / 2 - 1)).round().clamp_min(1)
    raw = u(n, big) * used
    weights = (2 * raw / raw.sum(1, keepdim=True) - 1) * used
    return psine(weights, freq, phase, power, kernel_size)


def _draw_dct2(n: int, size: tuple[int, int], fan_in: int, g: torch.Generator | None) -> Tensor:
    return dct2(balanced_indices(n, size[0] * size[1], g), size)


def _draw_unchanged(n: int, size: tuple[int, int], fan_in: int, g: torch.Generator | None) -> Tensor:
    bound = 1 / math.sqrt(fan_in)
    return (torch.rand(n, *size, generator=g, dtype=torch.float64) * (2 * bound) - bound).to(torch.float32)


_DRAW: dict[str, Callable[[int, tuple[int, int], int, torch.Generator | None], Tensor]] = {
    "D": _draw_dct2,
    "H": lambda n, size, fan_in, g: draw_ghaar(n, size, g),
    "S": lambda n, size, fan_in, g: draw_psine(n, size, g),
    "O": lambda n, size, fan_in, g: torch.ones(n, *size),
    "U": _draw_unchanged,
}
"""How each fixed family of ``acl.FAMILIES`` draws ``n`` kernels: ``(n, (h, w), fan_in, generator)``."""


def fixed_kernels(
    symbol: str,
    n: int,
    kernel_size: int | Sequence[int],
    *,
    fan_in: int | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` kernels of a fixed family (``D``, ``H``, ``S``, ``O`` or ``U``), drawn from ``generator``.

    Draws on the CPU in float64 (the same kernels on every device), then casts.

    Args:
        symbol: the family's spec symbol.
        n: kernels to draw.
        kernel_size: ``h`` or ``(h, w)``.
        fan_in: ``Ci/groups * h * w`` of the layer, for ``U``'s bound (default ``h * w``).
        generator: the random stream; ``None``: the global one.
        dtype, device: of the result (float32, CPU by default).

    Shape:
        - Output: :math:`(n, h, w)`

    Examples:
        >>> fixed_kernels("O", 2, (1, 3)).tolist()
        [[[1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0]]]
        >>> fixed_kernels("G", 1, 3)
        Traceback (most recent call last):
        ...
        ValueError: G (Gabor) is not a fixed family, expected one of D, H, S, O, U
    """
    fam = family(symbol)
    if not fam.fixed:
        raise ValueError(f"{symbol} ({fam.name}) is not a fixed family, expected one of {', '.join(_DRAW)}")
    h, w = pair(kernel_size)
    kernels = _DRAW[fam.symbol](n, (h, w), fan_in or h * w, generator)
    return kernels.to(dtype=dtype or torch.float32, device=device)
