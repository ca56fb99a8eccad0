"""Analytic kernel families of the ACL paper (sections 3.2 and 3.4).

Every generator is a pure, vectorized function over a bank of ``N`` kernels:
it takes ``akps`` of shape ``[N, p]`` in the paper's natural units and returns
``[N, h, w]``, in one chain of tensor ops (no Python loop over kernels), on the
dtype and device of ``akps``, differentiable in every AKP.

Sampling grid (eqs. 2-3)
    ``W[i, j] = f(i', j')`` with ``i' = i - (h+1)/2`` and ``j' = j - (w+1)/2``
    for 1-based ``i, j``. ``i'`` (the row offset) is the paper's ``x`` and ``j'``
    (the column offset) is ``y``. Rotations follow eqs. 13-14:
    ``x' = x cos(theta) + y sin(theta)``, ``y' = -x sin(theta) + y cos(theta)``.

Scales kept positive
    The AKPs users read, save and export are the natural ones (``sigma``,
    ``lambda``, ``gamma``...). Inside the formulas every *scale* AKP enters
    through ``clamp(|s|, SCALE_MIN, SCALE_MAX)``: a negative scale acts as its
    magnitude, and scales below ``SCALE_MIN`` or above ``SCALE_MAX`` act as the
    bound (with zero gradient there). Gaussian scales enter squared anyway, so
    only their extremes are affected. This keeps every finite AKP free of NaN and
    Inf in float32 (LoG's ``1/sigma^4`` stays below 1e13) without
    re-parameterising what the user sees.

Centre correction (TGD2nd, LoT; eqs. 19, 23)
    ``W - sum(W) * I(x = y = 0)`` makes the kernel zero-sum. For odd sizes the
    indicator is the centre sample. For even or mixed sizes no sample lies at the
    centre; the correction is then spread equally over the samples nearest to it
    (4 for even x even, 2 for even x odd), which keeps the kernel zero-sum and
    symmetric and reduces to the paper's rule when a centre sample exists.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "FAMILIES",
    "SCALE_MAX",
    "SCALE_MIN",
    "TF_DELTA",
    "KernelFamily",
    "gabor_kernels",
    "generate",
    "kernel_grid",
    "log_kernels",
    "lot_kernels",
    "mean_kernels",
    "mosaic",
    "plain_kernels",
    "tgd1st_kernels",
    "tgd2nd_kernels",
]

SCALE_MIN = 1e-3
"""Smallest effective value of a scale AKP (sigma, lambda, gamma), in pixels."""

SCALE_MAX = 1e4
"""Largest effective value of a scale AKP, in pixels."""

TF_DELTA = 1e-4
"""``delta`` of eq. 16: TGD1st samples with ``|x'| <= delta`` are zero."""


def _pair(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(kernel_size, int):
        size = (kernel_size, kernel_size)
    else:
        size = tuple(int(s) for s in kernel_size)
    if len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"kernel_size must be a positive int or a pair of them, got {kernel_size!r}")
    return size  # type: ignore[return-value]


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
    h, w = _pair(kernel_size)
    rows = torch.arange(h, dtype=dtype, device=device) - (h - 1) / 2
    cols = torch.arange(w, dtype=dtype, device=device) - (w - 1) / 2
    return rows[:, None].expand(h, w), cols[None, :].expand(h, w)


class _Grid(NamedTuple):
    """Per-size constants, flattened to ``h*w`` samples (row-major)."""

    h: int
    w: int
    ones: Tensor  # [hw]
    r2: Tensor  # [hw] x^2 + y^2 (rotation-invariant)
    neg_r2: Tensor  # [hw] -r2
    neg_half_r2: Tensor  # [hw] -r2 / 2
    inv_r2: Tensor  # [hw] 1 / r2, 0 at the centre sample (the 0/0 of eq. 20)
    centre: Tensor  # [hw] weights of the centre correction, summing to 1
    rot: Tensor  # [2, 2hw]: [cos, sin] @ rot = [x' | y'] (eqs. 13-14)
    shift: Tensor  # [2]: cos(theta - shift) = [cos theta, sin theta]


@functools.lru_cache(maxsize=64)
def _grid(h: int, w: int, dtype: torch.dtype, device: torch.device) -> _Grid:
    # Created outside inference mode so that the cached tensors can be saved for
    # backward later, whatever mode the first call came from.
    with torch.inference_mode(False), torch.no_grad():
        x, y = (t.flatten() for t in kernel_grid((h, w), dtype=dtype, device=device))
        r2 = x * x + y * y
        at_centre = r2 == 0
        inv_r2 = torch.where(at_centre, torch.zeros_like(r2), 1 / torch.where(at_centre, torch.ones_like(r2), r2))
        nearest = (r2 <= r2.min() + 1e-6).to(dtype)
        rot = torch.stack((torch.cat((x, y)), torch.cat((y, -x))))
        shift = torch.tensor([0.0, math.pi / 2], dtype=dtype, device=device)
        return _Grid(h, w, torch.ones_like(r2), r2, -r2, -0.5 * r2, inv_r2, nearest / nearest.sum(), rot, shift)


def _scale(raw: Tensor) -> Tensor:
    """Effective scales ``clamp(|s|, SCALE_MIN, SCALE_MAX)``, same shape as ``raw``."""
    return raw.abs().clamp_(SCALE_MIN, SCALE_MAX)


def _dscale(raw: Tensor, eff: Tensor) -> Tensor:
    """d eff / d raw: sign(raw) where the clamp is inactive (bounds included, as torch.clamp), else 0."""
    return torch.sign(raw) * (eff == raw.abs())


def _rotated(theta: Tensor, g: _Grid) -> tuple[Tensor, Tensor]:
    """``trig = [cos, sin]`` ``[n, 2]`` and ``[x' | y']`` ``[n, 2hw]`` for angles ``[n, 1]``."""
    trig = torch.cos(theta - g.shift)
    return trig, trig @ g.rot


def _check_akps(akps: Tensor, p: int, name: str) -> None:
    if not isinstance(akps, Tensor):
        raise TypeError(f"{name}: akps must be a torch.Tensor of shape [N, {p}], got {type(akps).__name__}")
    if akps.ndim != 2 or akps.shape[1] != p:
        raise ValueError(f"{name}: akps must have shape [N, {p}], got {list(akps.shape)}")
    if not akps.is_floating_point():
        raise TypeError(f"{name}: akps must be a floating tensor, got {akps.dtype}")


# Forward and closed-form backward of every family, on kernels flattened to
# [n, h*w]. The kernels are tiny, so the cost of a training step is the number of
# tensor ops, not arithmetic: one autograd.Function runs a whole mosaic (below) and
# each family is written with as few ops as it takes. gradcheck in the tests holds
# every backward to the finite-difference gradient of its forward.
#
# forward(akps, grid, out) writes the kernels into ``out`` and returns what the
# backward needs; backward(gw, akps, grid, saved) returns the gradient of the AKPs.


def _gabor_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    raw = a[:, 0::3]  # lambda, sigma (a strided view: advanced indexing costs a copy)
    eff = _scale(raw)
    inv = eff.reciprocal()  # [1/lambda, 1/sigma]
    _, xy = _rotated(a[:, 1:2], g)
    xr = xy[:, : g.h * g.w]
    env = torch.exp(inv[:, 1:2].square() * g.neg_half_r2)
    phase = torch.addcmul(a[:, 2:3], xr, inv[:, 0:1], value=2 * math.pi)
    cosp = torch.cos(phase)
    torch.mul(env, cosp, out=out)
    return raw, eff, inv, xy, env, phase, cosp


def _gabor_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    raw, eff, inv, xy, env, phase, cosp = saved
    n = gw.shape[0]
    ge = gw * env
    ges = ge * torch.sin(phase)  # = -dW/dphase * gw
    # bmm and matrix-vector products: reductions over a short inner dim are slow in torch.
    s_xy = torch.bmm(xy.view(n, 2, -1), ges.unsqueeze(2)).squeeze(2)  # [sum ges x', sum ges y']
    s_w = torch.stack((s_xy[:, 0], s_xy[:, 1], ges @ g.ones, (ge * cosp) @ g.r2), dim=1)
    d = _dscale(raw, eff)
    il, is_ = inv[:, 0], inv[:, 1]
    k = 2 * math.pi * il
    # dW/dlambda = ges-weight * 2 pi x'/lambda^2, dW/dtheta = -2 pi y'/lambda (d x'/d theta = y'),
    # dW/dpsi = -1, dW/dsigma = W r2 / sigma^3.
    factors = torch.stack((k * il * d[:, 0], -k, torch.full_like(k, -1.0), is_ * is_ * is_ * d[:, 1]), dim=1)
    return s_w * factors


def _log_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    eff = _scale(a)
    inv2 = eff.square().reciprocal_()  # 1/sigma^2
    qn = inv2 * g.neg_half_r2  # -q, q = r2 / (2 sigma^2)
    e = torch.exp(qn)
    amp = inv2.square().mul_(-1 / math.pi)  # -1 / (pi sigma^4)
    torch.mul((qn + 1) * amp, e, out=out)
    return eff, qn, e, amp


def _log_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    eff, qn, e, amp = saved
    # dW/dsigma = amp e (2 q (2 - q) - 4 (1 - q)) / sigma, written in qn = -q.
    poly = (qn * -2 - 8) * qn - 4
    s = (((gw * e) * poly) @ g.ones).unsqueeze(1)
    return s * amp / eff * _dscale(a, eff)


def _centre_corrected(w: Tensor, g: _Grid, out: Tensor) -> None:
    torch.addcmul(w, (w @ g.ones).unsqueeze(1), g.centre, value=-1, out=out)


def _centre_corrected_grad(gw: Tensor, g: _Grid) -> Tensor:
    """Upstream gradient seen by W before ``W - sum(W) * centre``."""
    return gw - (gw @ g.centre).unsqueeze(1)


def _lot_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    eff = _scale(a)
    w = torch.exp(eff.square().reciprocal_() * g.neg_r2)
    _centre_corrected(w, g, out)
    return eff, w


def _lot_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    eff, w = saved
    s = (_centre_corrected_grad(gw, g) * w) @ g.r2  # dW/dsigma = W * 2 r2 / sigma^3
    return s.unsqueeze(1) * 2 / eff.pow(3) * _dscale(a, eff)


def _tgd1st_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    raw = a[:, 1:3]  # gamma1, gamma2
    eff = _scale(raw)
    inv2 = eff.square().reciprocal_()
    _, xy = _rotated(a[:, 0:1], g)
    hw = g.h * g.w
    sq = xy.square()  # [x'^2 | y'^2]
    env = torch.exp(torch.addcmul(sq[:, :hw] * inv2[:, 0:1], sq[:, hw:], inv2[:, 1:2]).neg_())
    # sign(x') I(|x'| > delta): hardshrink zeroes |x'| <= delta. Piecewise constant.
    w = torch.mul(env, torch.sign(F.hardshrink(xy[:, :hw], TF_DELTA)), out=out)
    return raw, eff, inv2, xy, sq, w.clone()


def _tgd1st_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    raw, eff, inv2, xy, sq, w = saved
    n, hw = gw.shape
    gww = gw * w
    s_sq = torch.bmm(sq.view(n, 2, hw), gww.unsqueeze(2)).squeeze(2)  # [sum gW x'^2, sum gW y'^2]
    s_xy = ((gww * xy[:, :hw] * xy[:, hw:]) @ g.ones).unsqueeze(1)
    # dW/dtheta = 2 x'y' W (1/g2^2 - 1/g1^2); dW/dg_k = 2 W x_k'^2 / g_k^3.
    g_theta = 2 * s_xy * (inv2[:, 1:2] - inv2[:, 0:1])
    g_gam = 2 * s_sq * inv2 / eff * _dscale(raw, eff)
    return torch.cat((g_theta, g_gam), dim=1)


def _tgd2nd_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    raw = a[:, 1:2]
    eff = _scale(raw)
    _, xy = _rotated(a[:, 0:1], g)
    e = torch.exp(eff.square().reciprocal_() * g.neg_r2).mul_(g.inv_r2)
    xr = xy[:, : g.h * g.w]
    w = e * xr.abs()
    _centre_corrected(w, g, out)
    return raw, eff, xy, e, w


def _tgd2nd_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    raw, eff, xy, e, w = saved
    hw = gw.shape[1]
    gc = _centre_corrected_grad(gw, g)
    # dW/dtheta = e sign(x') y'; dW/dgamma = W * 2 r2 / gamma^3.
    g_theta = ((gc * e * torch.sign(xy[:, :hw]) * xy[:, hw:]) @ g.ones).unsqueeze(1)
    g_gam = ((gc * w) @ g.r2).unsqueeze(1) * 2 / eff.pow(3) * _dscale(raw, eff)
    return torch.cat((g_theta, g_gam), dim=1)


def _mean_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    out.fill_(1 / math.sqrt(g.h * g.w))
    return ()


def _plain_fwd(a: Tensor, g: _Grid, out: Tensor) -> tuple:
    out.copy_(a)
    return ()


def _no_grad_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    return gw.new_zeros(a.shape)


def _plain_bwd(gw: Tensor, a: Tensor, g: _Grid, saved: tuple) -> Tensor:
    return gw


_OPS = {
    "G": (_gabor_fwd, _gabor_bwd),
    "Lg": (_log_fwd, _log_bwd),
    "Lt": (_lot_fwd, _lot_bwd),
    "Tf": (_tgd1st_fwd, _tgd1st_bwd),
    "Ts": (_tgd2nd_fwd, _tgd2nd_bwd),
    "M": (_mean_fwd, _no_grad_bwd),
    "P": (_plain_fwd, _plain_bwd),
}


class _Mosaic(torch.autograd.Function):
    """Kernels of several segments written into one ``[K, h*w]`` tensor."""

    @staticmethod
    def forward(ctx: Any, symbols: tuple[str, ...], g: _Grid, *akps: Tensor) -> Tensor:
        total = sum(a.shape[0] for a in akps)
        out = torch.empty(total, g.h * g.w, dtype=akps[0].dtype, device=akps[0].device)
        saved, start = [], 0
        for sym, a in zip(symbols, akps):
            n = a.shape[0]
            saved.append(_OPS[sym][0](a, g, out[start : start + n]))
            start += n
        ctx.symbols, ctx.grid, ctx.saved = symbols, g, saved
        ctx.save_for_backward(*akps)
        return out.view(total, g.h, g.w)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        akps = ctx.saved_tensors
        gw = grad.reshape(grad.shape[0], -1)
        grads: list[Tensor | None] = [None, None]
        start = 0
        for sym, a, saved, need in zip(ctx.symbols, akps, ctx.saved, ctx.needs_input_grad[2:]):
            n = a.shape[0]
            grads.append(_OPS[sym][1](gw[start : start + n], a, ctx.grid, saved) if need else None)
            start += n
        return tuple(grads)


def mosaic(segments: Sequence[tuple[str, Tensor]], kernel_size: int | Sequence[int]) -> Tensor:
    """Kernels of several families in order, generated in one pass.

    This is what ``AnalyticConv2d`` runs; the per-family functions are single-segment
    calls of it.

    Args:
        segments: ``(symbol, akps)`` pairs; ``akps`` is ``[n, p]`` as for
            ``generate`` (``[n, 0]`` for Mean, ``[n, h*w]`` or ``[n, h, w]`` for Plain).
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
    h, w = _pair(kernel_size)
    symbols, tensors = [], []
    for sym, a in segments:
        fam = family(sym)
        if fam.symbol == "P" and isinstance(a, Tensor) and a.ndim == 3:
            a = a.reshape(a.shape[0], -1)
        _check_akps(a, fam.num_akps((h, w)), fam.name)
        symbols.append(fam.symbol)
        tensors.append(a)
    first = tensors[0]
    for a in tensors[1:]:
        if a.dtype != first.dtype or a.device != first.device:
            raise ValueError(
                f"all AKPs must share one dtype and device, got {first.dtype}/{first.device} and {a.dtype}/{a.device}"
            )
    return _Mosaic.apply(tuple(symbols), _grid(h, w, first.dtype, first.device), *tensors)


def gabor_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Real Gabor kernels, eq. 12 with :math:`\gamma = 1`.

    :math:`\exp(-\frac{x'^2 + y'^2}{2\sigma^2}) \cos(2\pi x'/\lambda + \psi)`.

    Args:
        akps: ``[lambda, theta, psi, sigma]`` per kernel; ``lambda`` and ``sigma`` in
            pixels, ``theta`` and ``psi`` in radians.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 4)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> k = gabor_kernels(torch.tensor([[4.0, 0.0, 0.0, 2.0]]), 5)
        >>> k.shape, round(k[0, 2, 2].item(), 6)
        (torch.Size([1, 5, 5]), 1.0)
    """
    return mosaic([("G", akps)], kernel_size)


def log_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Laplacian-of-Gaussian kernels, eq. 15.

    :math:`-\frac{1}{\pi\sigma^4}\left[1 - \frac{x^2+y^2}{2\sigma^2}\right] e^{-\frac{x^2+y^2}{2\sigma^2}}`.
    The centre value scales as :math:`1/\sigma^4`: small ``sigma`` gives large weights.

    Args:
        akps: ``[sigma]`` per kernel, in pixels.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 1)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> k = log_kernels(torch.tensor([[1.0]]), 3)
        >>> round(k[0, 1, 1].item(), 6) == round(-1 / math.pi, 6)
        True
    """
    return mosaic([("Lg", akps)], kernel_size)


def lot_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Laplacian-of-TGD kernels, eqs. 23-24.

    :math:`W = e^{-(x^2+y^2)/\sigma^2}`, then :math:`W - \mathrm{sum}(W)\,\mathbf{I}_{x=y=0}`,
    so every kernel sums to zero (centre negative, surround positive). Eq. 24 is
    garbled in the paper's text; this reads it as the isotropic exponential of
    :math:`x^2 + y^2` over :math:`\sigma^2` that the surrounding text names. See the
    module docstring for the centre rule on even sizes.

    Args:
        akps: ``[sigma]`` per kernel, in pixels.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 1)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> k = lot_kernels(torch.tensor([[1.0], [2.0]]), 5)
        >>> k.sum(dim=(1, 2)).abs().max().item() < 1e-5
        True
    """
    return mosaic([("Lt", akps)], kernel_size)


def tgd1st_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""First-order TGD kernels, eqs. 16-18.

    :math:`e^{-x'^2/\gamma_1^2 - y'^2/\gamma_2^2}\,\mathrm{sign}(x')\,\mathbf{I}_{|x'|>\delta}`.
    The paper prints ``sign(cos theta)``; read as the cosine of the angle between the
    sample and the orientation ``theta``, whose sign is that of ``x'``. The kernel is
    therefore antisymmetric along ``x'`` and zero on the line ``|x'| <= TF_DELTA``.

    Args:
        akps: ``[theta, gamma1, gamma2]`` per kernel; ``theta`` in radians, the
            gammas in pixels.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 3)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> k = tgd1st_kernels(torch.tensor([[0.0, 1.0, 1.0]]), 3)
        >>> k[0, :, 1].tolist()[1], bool(k[0, 0, 1] == -k[0, 2, 1])
        (0.0, True)
    """
    return mosaic([("Tf", akps)], kernel_size)


def tgd2nd_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Second-order TGD kernels, eqs. 19-22.

    :math:`W = e^{-(x'^2+y'^2)/\gamma^2}\,\left|\frac{x'}{x'^2+y'^2}\right|` with the
    centre's 0/0 taken as 0, then :math:`W - \mathrm{sum}(W)\,\mathbf{I}_{x=y=0}`
    (zero-sum). See the module docstring for the centre rule on even sizes.

    Args:
        akps: ``[theta, gamma]`` per kernel; ``theta`` in radians, ``gamma`` in pixels.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 2)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> k = tgd2nd_kernels(torch.tensor([[0.3, 1.5]]), 5)
        >>> abs(k.sum().item()) < 1e-5, bool(k[0, 2, 2] < 0)
        (True, True)
    """
    return mosaic([("Ts", akps)], kernel_size)


def mean_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Mean kernels, eq. 11: all ones divided by :math:`\sqrt{hw}`. No AKPs.

    Args:
        akps: an empty ``[N, 0]`` tensor; only its length, dtype and device are used.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, 0)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> mean_kernels(torch.empty(2, 0), (2, 2))[1].tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    return mosaic([("M", akps)], kernel_size)


def plain_kernels(akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    r"""Plain kernels, eq. 4: the ``h*w`` AKPs are the kernel values, row-major.

    Args:
        akps: ``[N, h*w]`` kernel values.
        kernel_size: ``h`` or ``(h, w)``.

    Shape:
        - akps: :math:`(N, hw)`
        - Output: :math:`(N, h, w)`

    Examples:
        >>> plain_kernels(torch.arange(4.0)[None], 2).tolist()
        [[[0.0, 1.0], [2.0, 3.0]]]
    """
    return mosaic([("P", akps)], kernel_size)


@dataclass(frozen=True)
class KernelFamily:
    """What the rest of the package needs to know about one kernel family.

    Attributes:
        symbol: the paper's symbol in arrangement specs (``G``, ``Lg``...).
        name: human name.
        akp_names: AKP names in order; ``None`` for Plain, whose AKPs are its
            ``h*w`` values.
        generator: ``(akps[N, p], kernel_size) -> [N, h, w]``.
    """

    symbol: str
    name: str
    akp_names: tuple[str, ...] | None
    generator: Callable[[Tensor, int | Sequence[int]], Tensor]

    def num_akps(self, kernel_size: int | Sequence[int]) -> int:
        """AKPs per kernel (``p_i`` of eq. 25); ``h*w`` for Plain."""
        if self.akp_names is None:
            h, w = _pair(kernel_size)
            return h * w
        return len(self.akp_names)

    @property
    def is_analytic(self) -> bool:
        return self.akp_names is not None


FAMILIES: dict[str, KernelFamily] = {
    f.symbol: f
    for f in (
        KernelFamily("G", "Gabor", ("lambda", "theta", "psi", "sigma"), gabor_kernels),
        KernelFamily("Lg", "LoG", ("sigma",), log_kernels),
        KernelFamily("Lt", "LoT", ("sigma",), lot_kernels),
        KernelFamily("Tf", "TGD1st", ("theta", "gamma1", "gamma2"), tgd1st_kernels),
        KernelFamily("Ts", "TGD2nd", ("theta", "gamma"), tgd2nd_kernels),
        KernelFamily("M", "Mean", (), mean_kernels),
        KernelFamily("P", "Plain", None, plain_kernels),
    )
}
"""Kernel families by spec symbol, in the paper's order."""


def family(symbol: str) -> KernelFamily:
    """The family of a spec symbol, with a clear error for unknown ones."""
    try:
        return FAMILIES[symbol]
    except KeyError:
        raise ValueError(f"unknown kernel family {symbol!r}; expected one of {', '.join(FAMILIES)}") from None


def generate(kind: str, akps: Tensor, kernel_size: int | Sequence[int]) -> Tensor:
    """Kernels of one family from a bank of AKPs.

    Args:
        kind: family symbol: ``G``, ``Lg``, ``Lt``, ``Tf``, ``Ts``, ``M`` or ``P``.
        akps: AKPs in natural units, in the order of ``FAMILIES[kind].akp_names``.
        kernel_size: ``h`` or ``(h, w)``.

    Returns:
        The sampled kernels, dtype and device of ``akps``.

    Shape:
        - akps: :math:`(N, p)` with ``p = FAMILIES[kind].num_akps(kernel_size)``
        - Output: :math:`(N, h, w)`

    Examples:
        >>> generate("Lg", torch.tensor([[1.0], [2.0]]), (3, 5)).shape
        torch.Size([2, 3, 5])
        >>> generate("X", torch.zeros(1, 1), 3)
        Traceback (most recent call last):
        ...
        ValueError: unknown kernel family 'X'; expected one of G, Lg, Lt, Tf, Ts, M, P
    """
    return family(kind).generator(akps, kernel_size)
