"""Model given kernels analytically (paper sec. 3.5, Fig. 3): AKPs that best reproduce target kernels.

``fit(kernels, spec)`` turns a bank of target kernels (a trained conv's weight,
``[Co, Ci, h, w]``) into an ``AnalyticConv2d`` of that spec: every analytic kernel
gets the AKPs whose kernel is closest (least squares) to the target at its
position, plain kernels are copied, Mean kernels are what they are. It also
returns a ``FitReport``: per-kernel relative error, the AKP count against the
plain parameters it replaces, and, with ``choose=True``, the family that fits each
kernel best. ``best_family`` answers that last question alone, and ``fit_family``
is the batched solver underneath.

Solver
    Each kernel is a small nonlinear least-squares problem (at most 4 AKPs, ``h*w``
    residuals), all of them independent. ``fit_family`` solves a whole bank at once:

    1. *Grid*: a fixed grid of AKPs per family (about 2000 Gabor kernels, fewer for
       the others) is generated in one call and every target is compared to every
       grid kernel with one matrix product; the ``starts`` best grid points of each
       target, plus ``random_starts`` draws from the family's initial ranges
       (``torch.Generator`` seeded with ``seed``), are its starting points.
    2. *Refine*: batched Levenberg-Marquardt on all starts of all targets together,
       with a damping factor per start: the Jacobian comes from ``p`` Jacobian-vector
       products (autograd, double backward) through the registry's formulas, the
       ``p x p`` normal equations of every start are solved in one batched call, and
       a step is kept only where it lowers that start's error. Unlike one
       ``torch.optim.LBFGS`` over the summed error, no kernel's line search or
       curvature estimate is shared with another's.
    3. *Choose*: the best start of each target wins, judged by the worse of its
       float64 and float32 errors: TGD1st ramps a sample from 0 to its full weight
       as ``|x'|`` goes from ``TF_DELTA`` to ``TF_DELTA + TF_RAMP``, steeply, and a
       fit can end with a sample on that ramp. Each
       TGD1st start therefore also competes with its angle moved exactly onto, or
       ``2e-3`` rad off, the nearest line of samples. The winner's AKPs are put in
       canonical form (positive scales, angles in the family's initial range, see
       ``canonical``).

    The solve runs in float64, single-threaded (tensors of a few thousand
    elements), and is deterministic for a given ``seed``: the grid is fixed and
    the random starts come from the seeded generator. Reported errors are those of
    the kernels generated in the targets' dtype, i.e. what the layer computes.
    ``time_limit`` bounds the refinement; when it cuts the iterations short the
    report says so (``timed_out``) and the result depends on the machine's speed.

Amplitude (gain)
    Analytic kernels have a fixed amplitude: a Gabor or TGD kernel peaks at most at
    1, Mean is ``1/sqrt(hw)``, LoG's amplitude is tied to its width
    (``1/(pi sigma^4)``). A trained conv's kernels have arbitrary amplitudes, and
    ``AnalyticConv2d`` holds no per-kernel gain, so a fitted layer *cannot*
    represent one. Hence:

    - by default (``gain=False``) the AKPs minimise the error of the kernel the
      layer actually computes, and ``FitReport.rel_error`` is that error, measured
      without any gain;
    - ``gain=True`` fits the *pattern* instead (each kernel times its own optimal
      scalar gain), which is the question "which family does this kernel look
      like" (Fig. 3 shows patterns, displayed per kernel range). The layer still
      holds the ungained kernels, and ``rel_error`` is still measured without a
      gain, so it may be large; ``shape_error`` is the error after the optimal
      gain ``<k, t> / <k, k>`` (also reported, ``gain``, in both modes). Gabor
      and TGD1st contain each kernel's negative, so their fitted gain is made positive.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from acl.analytic_conv import AnalyticConv2d
from acl.families import SCALE_MAX, SCALE_MIN, family
from acl.kernels import unchecked_mosaic
from acl.spec import Spec, parse_spec

__all__ = [
    "ANALYTIC",
    "FamilyChoice",
    "FamilyFit",
    "FitReport",
    "best_family",
    "canonical",
    "fit",
    "fit_family",
    "fit_into",
]

ANALYTIC = ("G", "Lg", "Lt", "Tf", "Ts", "M")
"""The analytic families, in the registry's order (what ``best_family`` compares by default)."""

_EPS = 1e-300  # guards divisions by a zero norm in float64


@dataclass(frozen=True)
class FamilyFit:
    """Best AKPs of one family for a bank of targets (``fit_family``).

    Attributes:
        symbol: the family.
        akps: ``[N, p]`` in natural units, canonical form, dtype of the targets.
        kernels: ``[N, h, w]``, the kernels of ``akps`` (no gain).
        rel_error: ``[N]``: ``||k - t|| / ||t||`` without gain.
        gain: ``[N]``: the optimal scalar gain ``<k, t> / <k, k>`` of each kernel.
        shape_error: ``[N]``: ``||gain k - t|| / ||t||``.
        steps: refinement iterations run.
        timed_out: the time limit stopped the refinement.
    """

    symbol: str
    akps: Tensor
    kernels: Tensor
    rel_error: Tensor
    gain: Tensor
    shape_error: Tensor
    steps: int
    timed_out: bool


def _errors(kernels: Tensor, targets: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(rel_error, gain, shape_error)`` of ``[N, ...]`` kernels against targets, per kernel."""
    k, t = kernels.flatten(1), targets.flatten(1)
    tt = (t * t).sum(1).clamp_min(_EPS if t.dtype == torch.float64 else 1e-30)
    kk = (k * k).sum(1)
    kt = (k * t).sum(1)
    gain = torch.where(kk > 0, kt / kk.clamp_min(1e-30), torch.zeros_like(kk))
    rel = ((k - t).pow(2).sum(1) / tt).sqrt()
    shape = ((gain[:, None] * k - t).pow(2).sum(1) / tt).sqrt()
    return rel, gain, shape


def _grid(symbol: str, h: int, w: int) -> Tensor:
    """Starting AKPs ``[C, p]`` (float64) covering the family's useful range for an ``h x w`` kernel."""
    big = float(max(h, w))

    def geo(lo: float, hi: float, n: int) -> Tensor:
        return torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)

    def turn(n: int, full: float) -> Tensor:
        return torch.arange(n, dtype=torch.float64) * (full / n)

    if symbol == "G":
        lam, sigma = geo(2.0, 2 * big, 6), geo(0.4, big, 5)
        return torch.cartesian_prod(lam, turn(8, math.pi), turn(8, 2 * math.pi) - math.pi, sigma)
    if symbol in ("Lg", "Lt"):
        return geo(0.3, 2 * big, 48)[:, None]
    if symbol == "Tf":
        # A fine angle grid: the sign of x' is piecewise constant in theta, invisible to the gradient
        g = geo(0.4, 2 * big, 6)
        return torch.cartesian_prod(turn(64, 2 * math.pi), g, g)
    if symbol == "Ts":
        return torch.cartesian_prod(turn(12, math.pi), geo(0.4, 2 * big, 12))
    raise ValueError(f"{symbol} has no AKPs to fit")


def _random(symbol: str, n: int, h: int, w: int, generator: torch.Generator) -> Tensor:
    """``n`` AKP rows from the family's initial ranges (``acl.families``), drawn from ``generator``."""
    s = min(h, w)
    cols = []
    for akp in family(symbol).akps or ():
        lo, hi = akp.init(s)
        cols.append(lo + (hi - lo) * torch.rand(n, generator=generator, dtype=torch.float64))
    return torch.stack(cols, 1)


def canonical(symbol: str, akps: Tensor) -> Tensor:
    """One representative of AKPs that give the same kernel.

    Scales become their effective value (``clamp(|s|)``); angles are wrapped into
    the family's initial range using the family's symmetries: Gabor's
    ``(theta + pi, psi)`` is ``(theta, -psi)`` and ``psi`` lies in ``[-pi, pi)``;
    TGD2nd is unchanged by a half turn; TGD1st's ``theta`` lies in ``[0, 2 pi)``.

    Args:
        symbol: the family.
        akps: ``[N, p]`` in natural units.

    Returns:
        ``[N, p]`` AKPs that generate the same kernels (up to rounding).

    Examples:
        >>> a = torch.tensor([[-4.0, 3.5, 1.0, 2.0]])
        >>> b = canonical("G", a)
        >>> [round(v, 4) for v in b[0].tolist()]
        [4.0, 0.3584, -1.0, 2.0]
        >>> from acl import generate
        >>> torch.allclose(generate("G", a, 5), generate("G", b, 5), atol=1e-6)
        True
    """
    fam = family(symbol)
    out = akps.clone()
    for j, akp in enumerate(fam.akps or ()):
        if akp.is_scale:
            out[:, j] = out[:, j].abs().clamp(SCALE_MIN, SCALE_MAX)
    names = fam.akp_names or ()
    if "theta" in names:
        j = names.index("theta")
        if symbol == "G":
            half = torch.floor(out[:, j] / math.pi)
            out[:, j] = out[:, j] - half * math.pi
            psi = names.index("psi")
            odd = half.remainder(2) == 1  # an odd number of half turns negates psi
            out[:, psi] = torch.where(odd, -out[:, psi], out[:, psi])
            out[:, psi] = torch.remainder(out[:, psi] + math.pi, 2 * math.pi) - math.pi
        else:
            period = 2 * math.pi if symbol == "Tf" else math.pi
            out[:, j] = torch.remainder(out[:, j], period)
    return out


def fit_family(
    symbol: str,
    targets: Tensor,
    *,
    gain: bool = False,
    starts: int = 4,
    random_starts: int = 2,
    steps: int = 100,
    time_limit: float | None = 60.0,
    seed: int = 0,
) -> FamilyFit:
    """Best AKPs of one family for every target kernel, all solved together.

    See the module docstring for the solver and for ``gain``.

    Args:
        symbol: an analytic family (``G``, ``Lg``, ``Lt``, ``Tf``, ``Ts``, ``M``).
        targets: the kernels to model.
        gain: fit each kernel up to its own scalar gain (pattern) instead of as is.
        starts: best grid points refined per target.
        random_starts: extra starting points per target from the family's initial ranges.
        steps: at most this many Levenberg-Marquardt iterations.
        time_limit: seconds the refinement may take (``None``: no limit).
        seed: seeds the random starts.

    Returns:
        A ``FamilyFit``; tensors on the targets' dtype and device.

    Shape:
        - targets: :math:`(N, h, w)`
        - akps: :math:`(N, p)`; kernels: :math:`(N, h, w)`; errors: :math:`(N)`

    Examples:
        >>> from acl import generate
        >>> true = torch.tensor([[1.2], [2.5]])
        >>> f = fit_family("Lg", generate("Lg", true, 7))
        >>> [round(v, 3) for v in f.akps[:, 0].tolist()], bool(f.rel_error.max() < 1e-6)
        ([1.2, 2.5], True)
    """
    fam = family(symbol)
    if not fam.is_analytic:
        raise ValueError(f"fit_family fits analytic families only, got {symbol!r}")
    threads = torch.get_num_threads()
    # Tensors of a few thousand elements: intra-op threads cost more than they save
    # (30x slower with 2 threads on a busy 2-core machine, measured).
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(False), torch.enable_grad():
            return _fit_family(fam.symbol, targets.clone(), gain, starts, random_starts, steps, time_limit, seed)
    finally:
        torch.set_num_threads(threads)


def _fit_family(symbol, targets, gain, starts, random_starts, steps, time_limit, seed) -> FamilyFit:
    fam = family(symbol)
    if targets.ndim != 3:
        raise ValueError(f"targets must have shape [N, h, w], got {list(targets.shape)}")
    n, h, w = targets.shape
    # Solved on the CPU whatever the targets' device: the problems are a few thousand numbers
    t = targets.detach().to("cpu", torch.float64).reshape(n, h * w)
    p = fam.num_akps((h, w))
    begin = time.perf_counter()

    def kernels(a: Tensor) -> Tensor:
        return unchecked_mosaic([symbol], (h, w), [a]).reshape(a.shape[0], h * w)

    if p == 0 or n == 0:  # Mean: nothing to fit
        best = torch.empty(n, p, dtype=torch.float64)
        done_steps, timed_out = 0, False
    else:
        a0 = _start_points(symbol, kernels, t, (h, w), gain, starts, random_starts, seed)  # [N, S, p]
        a, done_steps, timed_out = _levenberg_marquardt(
            kernels, a0.reshape(-1, p), t.repeat_interleave(a0.shape[1], 0), gain, steps, time_limit, begin
        )
        if symbol == "Tf":
            a = _off_the_edge(a, h, w).reshape(-1, p)  # 4 candidates per start, start-major
        best = _best_candidate(symbol, kernels, a, t, gain)
    # The errors of the kernels the layer computes: AKPs and arithmetic in the targets' dtype
    k = kernels(best.to(targets.dtype)).double() if n else t.new_zeros(0, h * w)
    rel, g, shape = _errors(k, t)
    out = {"dtype": targets.dtype, "device": targets.device}
    return FamilyFit(
        symbol,
        best.to(**out),
        k.reshape(n, h, w).to(**out),
        rel.to(**out),
        g.to(**out),
        shape.to(**out),
        done_steps,
        timed_out,
    )


def _start_points(symbol, kernels, t: Tensor, size, gain: bool, starts: int, random_starts: int, seed) -> Tensor:
    """AKPs ``[N, S, p]`` to start each target's fit from: the best-scoring grid points, then random ones."""
    n, (h, w) = t.shape[0], size
    grid = _grid(symbol, h, w)
    kg = kernels(grid)  # [C, hw]
    kt = t @ kg.T  # [N, C]
    kk = (kg * kg).sum(1)
    # Error up to the constant ||t||^2: with a free gain, -<k,t>^2/<k,k>; without, <k,k> - 2<k,t>
    score = -(kt * kt) / kk.clamp_min(1e-30) if gain else kk - 2 * kt
    top = score.topk(min(starts, grid.shape[0]), dim=1, largest=False).indices  # [N, S]
    init = [grid[top]]  # [N, S, p]
    if random_starts > 0:
        gen = torch.Generator().manual_seed(seed)
        init.append(_random(symbol, n * random_starts, h, w, gen).reshape(n, random_starts, grid.shape[1]))
    return torch.cat(init, 1)


def _best_candidate(symbol: str, kernels, a: Tensor, t: Tensor, gain: bool) -> Tensor:
    """Per target, the fitted candidate (``a`` is ``[N * per, p]``, target-major) with the lowest error."""
    n, p = t.shape[0], a.shape[1]
    per = a.shape[0] // n
    tr = t.repeat_interleave(per, 0)
    # Judged in float32 too: a kernel the layer's float32 arithmetic would change is no fit
    loss = torch.maximum(_loss(kernels(a), tr, gain), _loss(kernels(a.float()).double(), tr, gain))
    pick = loss.reshape(n, per).argmin(1)
    best = a.reshape(n, per, p)[torch.arange(n), pick]
    if gain and symbol in ("G", "Tf"):
        # -k is a member of these families (psi or theta plus a half turn): prefer a positive gain
        k = kernels(best)
        negative = (k * t).sum(1) < 0
        col = (family(symbol).akp_names or ()).index("psi" if symbol == "G" else "theta")
        best[negative, col] += math.pi
    return canonical(symbol, best)


def _off_the_edge(a: Tensor, h: int, w: int) -> Tensor:
    """TGD1st AKPs ``[M, 3]`` -> ``[M, 4, 3]``: as fitted, and with ``theta`` away from the zero band's edge.

    TGD1st ramps a sample from 0 to its full weight over ``TF_DELTA < |x'| <
    TF_DELTA + TF_RAMP``, steeply, and the fit may end with a sample on that
    ramp. The candidates put the zero line exactly through
    the sample nearest to it, or ``2e-3`` rad to either side of it (every sample
    then at least ``2e-3`` from the line, beyond the ramp); the caller keeps
    whichever fits best in both precisions.
    """
    x, y = (v.reshape(-1).to(a.dtype) for v in _sample_grid(h, w))
    theta = a[:, 0:1]
    xp = (x * theta.cos() + y * theta.sin()).abs()
    xp = torch.where((x == 0) & (y == 0), torch.inf, xp)  # the centre lies on every line
    j = xp.argmin(1)
    line = torch.atan2(-x[j], y[j])  # x' = 0 through sample j; line + k pi too
    line = line + torch.round((theta[:, 0] - line) / math.pi) * math.pi  # the half turn nearest the fit: same sign
    out = a[:, None].repeat(1, 4, 1)
    for c, shift in ((1, 0.0), (2, 2e-3), (3, -2e-3)):
        out[:, c, 0] = line + shift
    return out


def _sample_grid(h: int, w: int) -> tuple[Tensor, Tensor]:
    rows = torch.arange(h, dtype=torch.float64) - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    return rows[:, None].expand(h, w), cols[None, :].expand(h, w)


def _loss(k: Tensor, t: Tensor, gain: bool) -> Tensor:
    """Squared error per row, after the optimal gain when ``gain``."""
    if not gain:
        return (k - t).pow(2).sum(1)
    kk = (k * k).sum(1)
    kt = (k * t).sum(1)
    return (t * t).sum(1) - kt * kt / kk.clamp_min(1e-30)


def _residual_and_jacobian(
    kernels, a: Tensor, g: Tensor | None, t: Tensor, eye: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``(residual, Jacobian [rows, hw, q], kernels)`` at AKPs ``a`` (and gains ``g``) for targets ``t``."""
    # Jacobian-vector products by double backward, over p copies of the bank, copy j
    # carrying the tangent e_j: as fast as forward mode here, without its one-off
    # multi-second set-up (torch.autograd.forward_ad scripts its decompositions).
    rows, p = a.shape
    copies = a.repeat(p, 1).requires_grad_(True)
    k = kernels(copies)
    probe = torch.zeros_like(k, requires_grad=True)
    (vjp,) = torch.autograd.grad(k, copies, probe, create_graph=True)
    (jvp,) = torch.autograd.grad(vjp, probe, eye.repeat_interleave(rows, 0))
    k = k.detach()[:rows]
    jac = jvp.reshape(p, rows, -1).permute(1, 2, 0)  # [rows, hw, p]
    if g is None:
        return k - t, jac, k
    return g[:, None] * k - t, torch.cat([jac * g[:, None, None], k[..., None]], -1), k


def _damped_step(jac: Tensor, r: Tensor, lam: Tensor) -> Tensor:
    """The Levenberg-Marquardt step ``[rows, q]`` for residuals ``r`` with damping ``lam`` per row."""
    jtj = jac.transpose(1, 2) @ jac  # [rows, q, q]
    jtr = (jac.transpose(1, 2) @ r[..., None])[..., 0]
    diag = jtj.diagonal(dim1=1, dim2=2)
    # Marquardt's scaling, floored so that a clamped AKP (zero column) keeps the system solvable
    floor = diag.mean(1, keepdim=True) * 1e-9 + 1e-30
    return -torch.linalg.solve(jtj + lam[:, None, None] * torch.diag_embed(diag + floor), jtr[..., None])[..., 0]


def _finished(better: Tensor, loss: Tensor, loss_new: Tensor, t: Tensor, lam: Tensor) -> Tensor:
    # A row is finished when an accepted step gains a negligible share of its error,
    # its error is negligible, or no step of any length lowers it.
    scale = (t * t).sum(1).clamp_min(1e-30)
    return (better & (loss - loss_new <= 1e-9 * loss)) | (loss <= 1e-24 * scale) | (lam * 4 >= 1e10)


def _levenberg_marquardt(kernels, a: Tensor, t: Tensor, gain: bool, steps: int, time_limit, begin: float):
    """Batched LM on rows of ``a`` (one independent problem per row); returns ``(a, steps run, timed_out)``.

    With ``gain`` the gain is an extra unknown per row, started at its optimum.
    Each iteration works on the rows still improving only.
    """
    m, p = a.shape
    a = a.clone()
    eye = torch.eye(p, dtype=a.dtype)
    g = (kernels(a) * t).sum(1) / (kernels(a) ** 2).sum(1).clamp_min(1e-30) if gain else None
    damping = torch.full((m,), 1e-3, dtype=a.dtype)
    active = torch.arange(m)
    done, timed_out = 0, False
    for _ in range(steps):
        if time_limit is not None and time.perf_counter() - begin > time_limit:
            timed_out = True
            break
        done += 1
        at, tt, lam = a[active], t[active], damping[active]
        gt = None if g is None else g[active]
        r, jac, _ = _residual_and_jacobian(kernels, at, gt, tt, eye)
        loss = (r * r).sum(1)
        step = _damped_step(jac, r, lam)
        a_new = at + step[:, :p]
        k_new = kernels(a_new)
        g_new = None if gt is None else gt + step[:, p]
        r_new = k_new - tt if g_new is None else g_new[:, None] * k_new - tt
        loss_new = (r_new * r_new).sum(1)
        better = (loss_new < loss) & torch.isfinite(loss_new)
        a[active] = torch.where(better[:, None], a_new, at)
        if g is not None:
            g[active] = torch.where(better, g_new, gt)
        damping[active] = torch.where(better, lam / 3, lam * 4)
        active = active[~_finished(better, loss, loss_new, tt, lam)]
        if active.numel() == 0:
            break
    return a, done, timed_out


@dataclass(frozen=True)
class FamilyChoice:
    """Which family models each kernel best (``best_family``).

    Attributes:
        families: the families compared, in order.
        errors: ``[N, F]``: relative error of each family's best kernel (as
            ``FamilyFit.rel_error``, or ``shape_error`` when fitted with ``gain``).
        symbols: the winning family per kernel (``P`` where the best error is above
            ``plain_above``).
        spec: a ``Spec`` with those families in kernel order (runs of equal symbols
            as segments): ``fit(kernels, choice.spec)`` models every kernel by its
            best family.
        fits: the ``FamilyFit`` of each family.
    """

    families: tuple[str, ...]
    errors: Tensor
    symbols: tuple[str, ...]
    spec: Spec
    fits: dict[str, FamilyFit] = field(repr=False)


def _as_bank(kernels: Tensor) -> Tensor:
    if not isinstance(kernels, Tensor) or not kernels.is_floating_point():
        raise TypeError("kernels must be a floating torch.Tensor")
    if kernels.ndim == 3:
        kernels = kernels[:, None]
    if kernels.ndim != 4:
        raise ValueError(f"kernels must have shape [Co, Ci, h, w] (or [N, h, w]), got {list(kernels.shape)}")
    return kernels.detach()


def _runs(symbols: Sequence[str]) -> tuple[tuple[str, int], ...]:
    out: list[list] = []
    for s in symbols:
        if out and out[-1][0] == s:
            out[-1][1] += 1
        else:
            out.append([s, 1])
    return tuple((s, n) for s, n in out)


def best_family(
    kernels: Tensor,
    families: Sequence[str] = ANALYTIC,
    *,
    gain: bool = False,
    plain_above: float | None = None,
    groups: int = 1,
    **options,
) -> FamilyChoice:
    """The analytic family that models each kernel best.

    Args:
        kernels: ``[Co, Ci/groups, h, w]`` (a conv weight) or ``[N, h, w]`` (read as ``[N, 1, h, w]``).
        families: the candidate families.
        gain: compare patterns (each fit up to its own gain, ``shape_error``)
            rather than the kernels a layer would hold (``rel_error``); see the
            module docstring.
        plain_above: kernels whose best error exceeds this stay Plain in ``symbols``
            and ``spec``.
        groups: the layer's groups, for ``spec``.
        **options: passed to ``fit_family`` (``starts``, ``steps``, ``seed``...).

    Returns:
        A ``FamilyChoice``.

    Examples:
        >>> from acl import generate
        >>> bank = torch.cat([generate("Lg", torch.tensor([[1.5]]), 5), generate("Ts", torch.tensor([[0.4, 1.5]]), 5)])
        >>> choice = best_family(bank)
        >>> choice.symbols, str(choice.spec)
        (('Lg', 'Ts'), '(1x2)Lg1Ts1')
    """
    bank = _as_bank(kernels)
    co, ci, h, w = bank.shape
    families = tuple(family(s).symbol for s in families)
    if not families or any(not family(s).is_analytic for s in families):
        raise ValueError(f"families must be analytic family symbols ({', '.join(ANALYTIC)}), got {families}")
    flat = bank.reshape(co * ci, h, w)
    fits: dict[str, FamilyFit] = {}
    for sym in families:
        fits[sym] = _fit_any(sym, flat, gain=gain, **options)
    errors = torch.stack([(fits[s].shape_error if gain else fits[s].rel_error) for s in families], 1)
    best_err, idx = errors.min(1)
    symbols = [families[i] for i in idx.tolist()]
    if plain_above is not None:
        symbols = ["P" if e > plain_above else s for s, e in zip(symbols, best_err.tolist())]
    spec = Spec(_runs(symbols), ci * groups, co, groups)
    return FamilyChoice(families, errors, tuple(symbols), spec, fits)


def _fit_any(symbol: str, targets: Tensor, **options) -> FamilyFit:
    """``fit_family``, and the Mean kernel's errors for ``M`` (nothing to fit)."""
    if symbol != "M":
        return fit_family(symbol, targets, **options)
    n, h, w = targets.shape
    k = targets.new_full((n, h, w), 1 / math.sqrt(h * w))
    rel, g, shape = _errors(k, targets)
    return FamilyFit("M", targets.new_zeros(n, 0), k, rel, g, shape, 0, False)


@dataclass(frozen=True)
class FitReport:
    """How well a fitted ACL reproduces its target kernels (``fit``).

    Attributes:
        spec: the layer's canonical spec.
        kinds: family of every kernel, in mosaic order.
        rel_error: ``[N]``: ``||k - t|| / ||t||`` of the layer's kernel, no gain
            (0 for Plain kernels, copied).
        gain: ``[N]``: optimal scalar gain of each layer kernel (1 for Plain).
        shape_error: ``[N]``: error after that gain; a layer cannot hold the gain.
        akps: AKPs of the analytic kernels (eq. 25's ``sum p_i k_i``, Mean counting 0).
        replaced: plain parameters those analytic kernels replace (``count * h * w``).
        choice: with ``choose=True``, the best family of every kernel (``best_family``).
        seconds: wall time of the fit.
        timed_out: the time limit cut a refinement short.
    """

    spec: str
    kinds: tuple[str, ...]
    rel_error: Tensor
    gain: Tensor
    shape_error: Tensor
    akps: int
    replaced: int
    choice: FamilyChoice | None
    seconds: float
    timed_out: bool

    @property
    def analytic(self) -> Tensor:
        """``[N]`` bool: the kernel is analytic (not Plain)."""
        return torch.tensor([k != "P" for k in self.kinds], dtype=torch.bool)

    def per_family(self) -> dict[str, float]:
        """Mean relative error of the kernels of each family of the spec (Plain excluded)."""
        out: dict[str, float] = {}
        for sym in dict.fromkeys(self.kinds):
            if sym != "P":
                mask = torch.tensor([k == sym for k in self.kinds])
                out[sym] = float(self.rel_error[mask].mean())
        return out

    def mean_error(self) -> float:
        """Mean relative error over the analytic kernels (``nan`` when there are none)."""
        mask = self.analytic
        return float(self.rel_error[mask].mean()) if mask.any() else math.nan

    def summary(self) -> str:
        """A few lines for logs: errors per family, AKPs against replaced parameters, best families."""
        fams = ", ".join(f"{s} {e:.3f}" for s, e in self.per_family().items())
        lines = [
            f"fit {self.spec}: mean rel error {self.mean_error():.4f} ({fams}); "
            f"{self.akps} AKPs replace {self.replaced} plain parameters; {self.seconds:.2f} s"
            + (" (time limit reached)" if self.timed_out else "")
        ]
        if self.choice is not None:
            counts: dict[str, int] = {}
            for s in self.choice.symbols:
                counts[s] = counts.get(s, 0) + 1
            lines.append("best family per kernel: " + ", ".join(f"{s} {n}" for s, n in counts.items()))
        return "\n".join(lines)


def fit_into(
    layer: AnalyticConv2d,
    kernels: Tensor,
    *,
    gain: bool = False,
    choose: bool = False,
    families: Sequence[str] = ANALYTIC,
    **options,
) -> FitReport:
    """Set ``layer``'s AKPs (in place) to model ``kernels`` at their positions; plain kernels are copied.

    The bias and every other attribute are left alone. Arguments as ``fit``.
    """
    begin = time.perf_counter()
    co, cig, h, w = layer.out_channels, layer.in_channels // layer.groups, *layer.kernel_size
    bank = _as_bank(kernels)
    if tuple(bank.shape) != (co, cig, h, w):
        raise ValueError(f"kernels have shape {list(bank.shape)}, the layer's weight is {[co, cig, h, w]}")
    flat = bank.reshape(-1, h, w)
    n = flat.shape[0]
    dtype = flat.dtype if flat.dtype == torch.float64 else torch.float32
    rel = torch.zeros(n, dtype=dtype)
    g = torch.ones(n, dtype=dtype)
    shape = torch.zeros(n, dtype=dtype)
    timed_out = False
    akps = replaced = 0
    for sym, start, stop, param in layer.segment_params():
        target = flat[start:stop]
        if sym == "P":
            with torch.no_grad():
                param.copy_(target)
            continue
        if family(sym).fixed:  # drawn once and never changed: nothing to fit, only its errors to report
            errors = _errors(param.detach().to(dtype), target.to(dtype))
            rel[start:stop], g[start:stop], shape[start:stop] = (x.cpu() for x in errors)
            continue
        f = _fit_any(sym, target, gain=gain, **options)
        if param is not None:
            with torch.no_grad():
                param.copy_(f.akps)
        rel[start:stop], g[start:stop], shape[start:stop] = (
            x.cpu().to(dtype) for x in (f.rel_error, f.gain, f.shape_error)
        )
        timed_out |= f.timed_out
        akps += family(sym).num_akps((h, w)) * (stop - start)
        replaced += (stop - start) * h * w
    choice = best_family(bank, families, gain=gain, groups=layer.groups, **options) if choose else None
    return FitReport(
        str(layer.spec),
        tuple(layer.spec.kinds()),
        rel,
        g,
        shape,
        akps,
        replaced,
        choice,
        time.perf_counter() - begin,
        timed_out or bool(choice and any(f.timed_out for f in choice.fits.values())),
    )


def fit(
    kernels: Tensor,
    spec: str | Spec,
    *,
    groups: int = 1,
    bias: Tensor | None = None,
    gain: bool = False,
    choose: bool = False,
    families: Sequence[str] = ANALYTIC,
    starts: int = 4,
    random_starts: int = 2,
    steps: int = 100,
    time_limit: float | None = 60.0,
    seed: int = 0,
    **conv: object,
) -> tuple[AnalyticConv2d, FitReport]:
    """An ACL of ``spec`` whose kernels best reproduce ``kernels`` (paper sec. 3.5, Fig. 3).

    Analytic kernels get the AKPs of the least-squares fit of the target at their
    position (module docstring: solver, and why the error is measured without a
    gain); Plain kernels are the targets, copied; Mean kernels are fixed.

    Args:
        kernels: target bank ``[Co, Ci/groups, h, w]``, e.g. a trained conv's
            ``weight``; ``[N, h, w]`` is read as ``[N, 1, h, w]``.
        spec: the arrangement (count or ratio form, or a ``Spec``).
        groups: the layer's groups (``in_channels = Ci/groups * groups``).
        bias: the layer's bias (``[Co]``), copied; ``None``: a layer without bias.
        gain: fit patterns up to a per-kernel gain the layer cannot hold (module docstring).
        choose: also report which of ``families`` fits each kernel best (``FitReport.choice``).
        families: the candidates for ``choose``.
        starts, random_starts, steps, time_limit, seed: the solver's (``fit_family``);
            ``time_limit`` applies to each family's refinement.
        **conv: other ``AnalyticConv2d`` arguments (``stride``, ``padding``...).

    Returns:
        ``(layer, report)``: the layer (dtype and device of ``kernels``, train mode)
        and a ``FitReport``. The global RNG is not used.

    Examples:
        >>> from acl import generate
        >>> bank = torch.cat([generate("G", torch.tensor([[3.0, 0.5, 0.2, 1.5]]), 5), torch.randn(1, 5, 5)])
        >>> layer, report = fit(bank[:, None], "G1P1")
        >>> bool(report.rel_error[0] < 1e-3), report.rel_error[1].item(), (report.akps, report.replaced)
        (True, 0.0, (4, 25))
        >>> torch.allclose(layer.weight, bank[:, None], atol=1e-4)
        True
    """
    bank = _as_bank(kernels)
    layer = _empty_layer(bank, spec, groups, bias, conv)
    solver = dict(starts=starts, random_starts=random_starts, steps=steps, time_limit=time_limit, seed=seed)
    report = fit_into(layer, bank, gain=gain, choose=choose, families=families, **solver)
    return layer, report


def _empty_layer(bank: Tensor, spec: str | Spec, groups: int, bias: Tensor | None, conv: dict) -> AnalyticConv2d:
    """An ACL shaped like ``bank``, its bias copied and its AKPs left for ``fit_into`` to set."""
    co, cig, h, w = bank.shape
    parsed = parse_spec(spec, cig * groups, co, groups=groups)
    # Built on the meta device: every parameter is set by the caller, and the global RNG stays untouched.
    layer = AnalyticConv2d(
        cig * groups,
        co,
        (h, w),
        groups=groups,
        bias=bias is not None,
        spec=parsed,
        dtype=bank.dtype,
        device="meta",
        **conv,
    ).to_empty(device=bank.device)
    if bias is not None:
        with torch.no_grad():
            layer.bias.copy_(bias)
    return layer
