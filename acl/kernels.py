"""Kernel banks and mosaics from AKPs: the formulas of ``acl.families`` evaluated in torch.

``mosaic`` generates the kernels of several spec segments in one pass (what
``AnalyticConv2d`` runs); ``generate`` is its one-family form. Both are plain
differentiable torch: autograd gives gradients of every order, and
``torch.func``, ``torch.compile``, ``torch.export`` and ``torch.jit.trace`` see
ordinary operations. The kernels are tiny (9 samples at 3x3), so a mosaic costs
the number of its operations rather than their arithmetic: the scales of all
segments are clamped together and the samples of all rotating families are
rotated together, before each family's formula runs once over its bank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from acl.families import FAMILIES, SCALE_MAX, SCALE_MIN, Family, Samples, family, pair

__all__ = ["generate", "init_akps", "kernel_grid", "mosaic"]


def kernel_grid(
    kernel_size: int | Sequence[int],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample coordinates of eq. 3.

    Args:
        kernel_size: ``h`` or ``(h, w)``.
        dtype: floating dtype of the grid.
        device: device of the grid.

    Returns:
        ``(x, y)``: ``x[i, j] = i - (h-1)/2`` (row offset) and ``y[i, j] = j - (w-1)/2``
        for 0-based ``i, j``, i.e. eq. 3 written 0-based.

    Shape:
        - Output: two tensors of shape :math:`(h, w)`.

    Examples:
        >>> x, y = kernel_grid(3)
        >>> x[:, 0].tolist(), y[0].tolist()
        ([-1.0, 0.0, 1.0], [-1.0, 0.0, 1.0])
        >>> kernel_grid((2, 1))[0].flatten().tolist()
        [-0.5, 0.5]
    """
    h, w = pair(kernel_size)
    rows = torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2
    cols = torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2
    return rows[:, None].expand(h, w), cols[None, :].expand(h, w)


class _Grid(NamedTuple):
    """Per-size constants: the unrotated ``Samples``, and those of the first half of them (``Family.odd``)."""

    samples: Samples
    half: Samples


def _grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> _Grid:
    x, y = (t.reshape(1, -1) for t in kernel_grid((h, w), dtype=dtype, device=device))
    r2 = x * x + y * y
    at_centre = r2 == 0
    inv_r2 = torch.where(at_centre, 0.0, 1 / torch.where(at_centre, 1.0, r2))
    nearest = (r2 <= r2.min() + 1e-6).to(dtype)
    samples = Samples(x, y, r2, inv_r2, nearest / nearest.sum())
    half = h * w // 2
    return _Grid(samples, Samples(*(t[:, :half].contiguous() for t in samples[:5])))


_GRIDS: dict[tuple, _Grid] = {}


def _cached_grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> _Grid:
    # Constants: built once per size, dtype and device, outside inference mode and
    # autograd so that any later call may use them. Not cached while compiling or
    # exporting, where tensors made here would be the tracer's.
    if torch.compiler.is_compiling():
        return _grid(h, w, dtype, device)
    key = (h, w, dtype, device)
    if key not in _GRIDS:
        with torch.inference_mode(False), torch.no_grad():
            _GRIDS[key] = _grid(h, w, dtype, device)
    return _GRIDS[key]


def _check_akps(akps: Any, p: int, name: str) -> None:
    if not isinstance(akps, Tensor):
        raise TypeError(f"{name}: akps must be a torch.Tensor of shape [N, {p}], got {type(akps).__name__}")
    if akps.ndim != 2 or akps.shape[1] != p:
        raise ValueError(f"{name}: akps must have shape [N, {p}], got {list(akps.shape)}")
    if not akps.is_floating_point():
        raise TypeError(f"{name}: akps must be a floating tensor, got {akps.dtype}")


def mosaic(segments: Sequence[tuple[str, Tensor]], kernel_size: int | Sequence[int]) -> Tensor:
    """Kernels of several families in order, generated in one pass.

    Args:
        segments: ``(symbol, akps)`` pairs; ``akps`` is ``[n, p]`` as for
            ``generate`` (``[n, 0]`` for Mean, ``[n, h*w]`` or ``[n, h, w]`` for Plain
            and for the fixed families, whose kernels are given as they are).
            All on one dtype and device.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - Output: :math:`(\\sum n, h, w)`

    Examples:
        >>> k = mosaic([("Lg", torch.ones(2, 1)), ("M", torch.empty(1, 0))], 3)
        >>> k.shape, round(k[2, 0, 0].item(), 4)
        (torch.Size([3, 3, 3]), 0.3333)
    """
    if not segments:
        raise ValueError("mosaic needs at least one segment")
    h, w = pair(kernel_size)
    symbols, tensors = [], []
    for sym, a in segments:
        fam = family(sym)
        if fam.stores_kernels and isinstance(a, Tensor) and a.ndim == 3:
            a = a.reshape(a.shape[0], -1)
        _check_akps(a, h * w if fam.stores_kernels else fam.num_akps((h, w)), fam.name)
        symbols.append(fam.symbol)
        tensors.append(a)
    first = tensors[0]
    for a in tensors[1:]:
        if a.dtype != first.dtype or a.device != first.device:
            raise ValueError(
                f"all AKPs must share one dtype and device, got {first.dtype}/{first.device} and {a.dtype}/{a.device}"
            )
    return unchecked_mosaic(symbols, (h, w), tensors)


class _Plan(NamedTuple):
    """How a sequence of spec symbols is evaluated: the same for every call with these symbols."""

    families: list[Family]
    scales: list[tuple[int, int]]  # (segment, AKP column) of every scale AKP
    turning: list[int]  # segments with an angle


_PLANS: dict[tuple[str, ...], _Plan] = {}


def _plan(symbols: tuple[str, ...]) -> _Plan:
    if torch.compiler.is_compiling():  # not the cache: a compiled graph would be guarded on its size
        return _new_plan(symbols)
    if symbols not in _PLANS:
        _PLANS[symbols] = _new_plan(symbols)
    return _PLANS[symbols]


def _new_plan(symbols: tuple[str, ...]) -> _Plan:
    fams = [FAMILIES[sym] for sym in symbols]
    scales = [(i, j) for i, f in enumerate(fams) for j, akp in enumerate(f.akps or ()) if akp.is_scale]
    return _Plan(fams, scales, [i for i, f in enumerate(fams) if f.angle is not None])


def unchecked_mosaic(symbols: Sequence[str], kernel_size: tuple[int, int], akps: Sequence[Tensor]) -> Tensor:
    """``mosaic`` without the checks, for callers whose AKPs are valid by construction (``[n, h, w]`` Plain too)."""
    h, w = kernel_size
    parts = _banks(tuple(symbols), kernel_size, akps, -1)
    return (parts[0] if len(parts) == 1 else torch.cat(parts)).view(-1, h, w)


def _banks(symbols: tuple[str, ...], kernel_size: tuple[int, int], akps: Sequence[Tensor], axis: int) -> list[Tensor]:
    """Each segment's kernels ``[n, hw]`` from AKPs ``[n, p]`` (``axis`` -1), or transposed (``axis`` 0).

    Transposed, every AKP bank is given as rows ``[p, n]`` and every kernel bank comes
    out ``[hw, n]`` (the samples' axis is 0): the layout ``acl.compiled_kernels``
    compiles, where each operation runs along the long bank axis. Plain and fixed
    segments only in kernel-major form.
    """
    h, w = kernel_size
    grid = _cached_grid(h, w, akps[0].dtype, akps[0].device)
    if axis == 0:  # views: samples as columns [hw, 1]
        grid = _Grid(*(_transposed(s) for s in grid))
    plan = _plan(symbols)
    bank_dim = 0 if axis == -1 else 1
    # AKP columns [n, 1] (rows [1, n] transposed) of every analytic segment; every scale of the mosaic
    # is clamped in one chain of operations; an odd family (TGD1st) is evaluated on half the samples.
    columns = [_columns(a, len(f.akps or ()), axis) for f, a in zip(plan.families, akps)]
    if plan.scales:
        scales = [columns[i][j] for i, j in plan.scales]
        # hardtanh is clamp with a one-op backward (clamp's builds two masks); they differ only on the bounds
        clamped = F.hardtanh(torch.cat(scales, bank_dim).abs(), SCALE_MIN, SCALE_MAX).reciprocal()
        for (i, j), c in zip(plan.scales, clamped.split([c.shape[bank_dim] for c in scales], bank_dim)):
            columns[i][j] = c
    samples = [grid.half if f.odd else grid.samples for f in plan.families]
    for i in plan.turning:
        x, y = _rotate(columns[i][plan.families[i].angle], samples[i])  # type: ignore[index]
        samples[i] = samples[i]._replace(x=x, y=y)
    parts = []
    for f, a, cols, s in zip(plan.families, akps, columns, samples):
        n = a.shape[bank_dim]
        if f.formula is None:  # Plain and the fixed families (kernel-major only): kernels as they are
            parts.append(a.reshape(n, h * w))
            continue
        k = f.formula(*cols, s)
        k = _mirrored(k, h * w, axis) if f.odd else k
        if k.shape[bank_dim] != n:  # Mean: one kernel for the bank
            k = k.expand(n, h * w) if axis == -1 else k.expand(h * w, n)
        parts.append(k)
    return parts


def _transposed(s: Samples) -> Samples:
    return Samples(s.x.t(), s.y.t(), s.r2.t(), s.inv_r2.t(), s.centre.t(), axis=0)


def _mirrored(first: Tensor, hw: int, axis: int = -1) -> Tensor:
    """An odd kernel's ``hw`` samples from its first ``hw // 2`` (``Family.odd``), along the samples' ``axis``.

    The grid is symmetric about its centre: sample ``hw - 1 - j`` (row-major) is
    sample ``j`` negated, so it holds ``-first[:, j]``; a centre sample (odd ``hw``)
    holds 0. Every op of an odd family's formula, and of its backward, runs on
    half the samples (TGD1st at 3x3: 4 of 9).
    """
    n = first.shape[0 if axis == -1 else 1]
    centre = first.new_zeros((n, hw % 2) if axis == -1 else (hw % 2, n))
    return torch.cat([first, centre, first.flip(axis).neg()], axis)


def _columns(akps: Tensor, p: int, axis: int = -1) -> list[Tensor]:
    """The ``p`` AKP columns ``[n, 1]`` of a bank ``[n, p]`` (one view when ``p == 1``), or rows ``[1, n]`` of ``[p, n]``."""
    if axis == 0:  # AKPs given as rows [p, n]
        return list(akps.unsqueeze(1).unbind(0)) if p else []
    return list(akps.unsqueeze(2).unbind(1)) if p > 1 else [akps] if p else []


def _rotate(theta: Tensor, s: Samples) -> tuple[Tensor, Tensor]:
    """``x'``, ``y'`` (eqs. 13-14) at the samples ``s`` for angles ``theta[m, 1]``, element-wise.

    ``sin`` is computed as such, as the ONNX functions do: ``cos(theta - pi/2)``
    rounds the subtraction (``ulp(theta)``, 5e-7 near 2 pi), which moved TGD1st's
    ramp samples by 1e-4 against ONNX Runtime's kernels (measured on LeNet).
    Not one product ``[cos, sin] @ [[x, y], [y, -x]]``: a BLAS product that small
    still runs on every intra-op thread, and on a loaded machine it waited up to
    24 ms for a descheduled one (median 15 us; issue 24); element-wise ops of a
    small bank stay on the calling thread.
    """
    cos, sin = theta.cos(), theta.sin()
    x, y = s.x, s.y
    return torch.addcmul(x * cos, y, sin), torch.addcmul(y * cos, x, sin, value=-1)


def generate(kind: str, akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    """Kernels of one family from a bank of AKPs.

    Args:
        kind: family symbol: ``G``, ``Lg``, ``Lt``, ``Tf``, ``Ts``, ``M`` or ``P``.
        akps: AKPs in natural units, in the order of ``FAMILIES[kind].akp_names``.
        kernel_size: ``h`` or ``(h, w)``.

    Returns:
        The sampled kernels, dtype and device of ``akps``.

    Raises:
        ValueError: an unknown symbol, AKPs of the wrong shape, or a fixed family
            (``D``, ``H``, ``S``, ``O``, ``U``): it has no AKPs to generate from
            (``acl.fixed_kernels`` draws its kernels).

    Shape:
        - akps: :math:`(N, p)` with ``p = FAMILIES[kind].num_akps(kernel_size)``
        - Output: :math:`(N, h, w)`

    Examples:
        >>> generate("Lg", torch.tensor([[1.0], [2.0]]), (3, 5)).shape
        torch.Size([2, 3, 5])
        >>> generate("X", torch.zeros(1, 1), 3)
        Traceback (most recent call last):
        ...
        ValueError: unknown kernel family 'X'; expected one of G, Lg, Lt, Tf, Ts, M, P, D, H, S, O, U
    """
    fam = family(kind)
    if fam.fixed:
        raise ValueError(
            f"{kind} ({fam.name}) is a fixed family: it has no AKPs to generate kernels from, expected "
            f"acl.fixed_kernels({kind!r}, n, kernel_size) to draw them"
        )
    return mosaic([(kind, akps)], kernel_size)


def init_akps(symbol: str, n: int, kernel_size: int | Sequence[int], **factory: Any) -> Tensor:
    """Random AKPs for ``n`` kernels of an analytic family, in natural units.

    Each AKP is drawn from ``U(*akp.init(s))`` with ``s = min(h, w)`` (the ranges of
    ``acl.families``), column after column, from the global torch RNG like
    ``nn.Conv2d``'s initialisation.

    Examples:
        >>> a = init_akps("G", 5, 7)
        >>> a.shape, bool((a[:, 3] >= 1.4).all() and (a[:, 3] <= 3.5).all())
        (torch.Size([5, 4]), True)
    """
    fam = family(symbol)
    if not fam.is_analytic:
        raise ValueError(f"{symbol} has no AKPs to initialise")
    s = min(pair(kernel_size))
    columns = [torch.empty(n, **factory).uniform_(*akp.init(s)) for akp in fam.akps]
    return torch.stack(columns, dim=1) if columns else torch.empty(n, 0, **factory)
