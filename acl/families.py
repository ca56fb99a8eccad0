"""The kernel families of the ACL paper (sections 3.2 and 3.4): one registry entry and one formula each.

``FAMILIES`` is what the rest of the project reads about a family: spec symbol,
name, ``ai.acl`` ONNX op, AKPs (names, units, initial ranges), report colour and
formula. Adding a family means one ``Family`` entry here, its formula below and
its ONNX function in ``export/functions.py`` (a fixed family: the entry and its
draw in ``acl/fixed_families.py``; files hold its kernels as constants).

Formulas are plain differentiable torch (tensor methods only, so this module
imports without PyTorch: reading the registry, as ``export`` does, never needs
it). Each one maps AKP columns of shape ``[N, 1]`` (scales inverted, below) and
the ``Samples`` of a kernel size to kernels ``[N, h*w]`` (row-major), for a whole
bank at once; gradients of every order come from autograd. ``acl.kernels``
evaluates them.

Sampling grid (eqs. 2-3)
    ``W[i, j] = f(i', j')`` with ``i' = i - (h+1)/2`` and ``j' = j - (w+1)/2``
    for 1-based ``i, j``. ``i'`` (the row offset) is the paper's ``x`` and ``j'``
    (the column offset) is ``y``. A family with an AKP ``theta`` is sampled at the
    rotated coordinates of eqs. 13-14, ``x' = x cos(theta) + y sin(theta)``,
    ``y' = -x sin(theta) + y cos(theta)``, which its formula receives as ``s.x``,
    ``s.y`` (computed once for all such families of a mosaic).

Scales kept positive
    AKPs are read, saved and exported in natural units. Every *scale* AKP (unit
    ``px``: sigma, lambda, gamma) is used as ``clamp(|s|, SCALE_MIN, SCALE_MAX)``:
    a negative scale acts as its magnitude, scales beyond the bounds as the bound
    (zero gradient there). No finite AKP gives NaN or Inf (LoG's ``1/sigma^4``
    stays below 1e13 in float32). A formula receives the *inverse* of that
    effective scale (``inv_sigma = 1 / clamp(|sigma|, ...)``): the formulas then
    multiply rather than divide, which autograd differentiates in fewer operations.

Fixed families (ExplainFix, Gaudio et al., sec. 3.1)
    ``D`` (DCT2), ``H`` (GHaar), ``S`` (Psine), ``O`` (Ones) and ``U`` (random
    Unchanged) have no AKP and no formula here: their kernels are drawn once, when
    a layer is built, by ``acl.fixed_kernels`` and kept as buffers, never learned.
    ``num_akps`` is 0 for them (eq. 25 counts them as nothing learned, like Mean).

Centre correction (TGD2nd, LoT; eqs. 19, 23)
    ``W - sum(W) * I(x = y = 0)`` makes the kernel zero-sum. For odd sizes the
    indicator is the centre sample. For even or mixed sizes no sample lies at the
    centre; the correction is then spread equally over the samples nearest to it
    (4 for even x even, 2 for even x odd), which keeps the kernel zero-sum and
    symmetric and reduces to the paper's rule when a centre sample exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "AKP",
    "FAMILIES",
    "SCALE_MAX",
    "SCALE_MIN",
    "TF_DELTA",
    "TF_RAMP",
    "Family",
    "Samples",
    "family",
    "pair",
]

SCALE_MIN = 1e-3
"""Smallest effective value of a scale AKP (sigma, lambda, gamma), in pixels."""

SCALE_MAX = 1e4
"""Largest effective value of a scale AKP, in pixels."""

TF_DELTA = 1e-4
"""``delta`` of eq. 16: TGD1st samples with ``|x'| <= delta`` are zero."""

TF_RAMP = 1e-2
"""TGD1st rises from 0 to ``sign(x')`` over ``delta < |x'| < delta + TF_RAMP``: eq. 16's step, made continuous."""

LOG2_E = 1 / math.log(2)
"""``exp(z)`` is computed as ``exp2(z * LOG2_E)``, the factor folded into a constant of the grid.
PyTorch runs ``exp`` (and ``cos``, ``sin``) of 2048 values or more on every intra-op thread, where
on a loaded machine each call waited milliseconds for a descheduled thread; ``exp2`` runs a small
bank on the calling thread, and in half the time (issue 24). Relative error: ``|z|`` ulp."""


class Samples(NamedTuple):
    """Where a bank of kernels is sampled, flattened row-major over the ``h*w`` samples.

    Attributes:
        x: ``x'`` of eq. 13 for a family with an angle ``theta`` (``[N, hw]``),
            else the row offset ``x`` of eq. 3 (``[1, hw]``).
        y: ``y'`` of eq. 14, or the column offset ``y``, likewise.
        r2: ``x^2 + y^2`` (``[1, hw]``), the same before and after rotation.
        inv_r2: ``1 / r2``, 0 at the centre sample (``[1, hw]``).
        centre: weights of the centre correction, summing to 1 (``[1, hw]``).
        axis: the samples' axis: -1 as above, or 0 when the bank is evaluated
            transposed (``acl.compiled_kernels``: AKP rows ``[1, N]``,
            samples ``[hw, 1]``, kernels ``[hw, N]``). Formulas broadcast either way;
            a sum over a kernel's samples reads ``axis``.
    """

    x: Tensor
    y: Tensor
    r2: Tensor
    inv_r2: Tensor
    centre: Tensor
    axis: int = -1


def zero_sum(w: Tensor, s: Samples) -> Tensor:
    """``W - sum(W) * I(x = y = 0)`` of eqs. 19 and 23, per kernel (see the module docstring)."""
    return w.addcmul(w.sum(s.axis, keepdim=True), s.centre, value=-1)  # one pass over the bank, not two


def gabor(inv_lam: Tensor, theta: Tensor, psi: Tensor, inv_sigma: Tensor, s: Samples) -> Tensor:
    r"""Real Gabor kernels, eq. 12 with :math:`\gamma = 1`.

    :math:`\exp(-\frac{x'^2 + y'^2}{2\sigma^2}) \cos(2\pi x'/\lambda + \psi)`.

    Args:
        inv_lam: ``1 / lambda``, the wavelength's inverse, per pixel.
        theta: the orientation; it acts through the rotated samples ``s``.
        psi: the phase offset, in radians.
        inv_sigma: ``1 / sigma``, the Gaussian envelope's inverse width.
        s: the samples, rotated by ``theta``.

    Shape:
        - inv_lam, theta, psi, inv_sigma: :math:`(N, 1)`
        - s.x: :math:`(N, hw)`, rotated
        - Output: :math:`(N, hw)`

    Examples:
        >>> import torch, acl
        >>> k = acl.generate("G", torch.tensor([[4.0, 0.0, 0.0, 2.0]]), 5)
        >>> k.shape, round(k[0, 2, 2].item(), 6)
        (torch.Size([1, 5, 5]), 1.0)
    """
    envelope = (inv_sigma * inv_sigma * (s.r2 * (-0.5 * LOG2_E))).exp2()
    return envelope * (s.x * (inv_lam * (2 * math.pi)) + psi).cos()


def log(inv_sigma: Tensor, s: Samples) -> Tensor:
    r"""Laplacian-of-Gaussian kernels, eq. 15.

    :math:`-\frac{1}{\pi\sigma^4}\left[1 - \frac{x^2+y^2}{2\sigma^2}\right] e^{-\frac{x^2+y^2}{2\sigma^2}}`.
    The centre value scales as :math:`1/\sigma^4`: small ``sigma`` gives large weights.

    Args:
        inv_sigma: ``1 / sigma``, with ``sigma`` the Gaussian's standard deviation.
        s: the samples (LoG is isotropic: no rotation).

    Shape:
        - inv_sigma: :math:`(N, 1)`
        - Output: :math:`(N, hw)`

    Examples:
        >>> import torch, acl
        >>> k = acl.generate("Lg", torch.tensor([[1.0]]), 3)
        >>> round(k[0, 1, 1].item(), 6) == round(-1 / math.pi, 6)
        True
    """
    inv_var = inv_sigma * inv_sigma
    minus_q = inv_var * (s.r2 * -0.5)  # -(x^2 + y^2) / (2 sigma^2)
    gauss = (inv_var * (s.r2 * (-0.5 * LOG2_E))).exp2()
    return (minus_q + 1) * gauss * (inv_var * inv_var * (-1 / math.pi))


def lot(inv_sigma: Tensor, s: Samples) -> Tensor:
    r"""Laplacian-of-TGD kernels, eqs. 23-24.

    :math:`W = e^{-(x^2+y^2)/\sigma^2}`, then :math:`W - \mathrm{sum}(W)\,\mathbf{I}_{x=y=0}`,
    so every kernel sums to zero (centre negative, surround positive). Eq. 24 is
    garbled in the paper's text; this reads it as the isotropic exponential of
    :math:`x^2 + y^2` over :math:`\sigma^2` that the surrounding text names.

    Args:
        inv_sigma: ``1 / sigma``.
        s: the samples (not rotated).

    Returns:
        Zero-sum kernels.

    Shape:
        - inv_sigma: :math:`(N, 1)`
        - Output: :math:`(N, hw)`

    Examples:
        >>> import torch, acl
        >>> k = acl.generate("Lt", torch.tensor([[1.0], [2.0]]), 5)
        >>> k.sum(dim=(1, 2)).abs().max().item() < 1e-5
        True
    """
    return zero_sum((inv_sigma * inv_sigma * (s.r2 * -LOG2_E)).exp2(), s)


def tgd1st(theta: Tensor, inv_gamma1: Tensor, inv_gamma2: Tensor, s: Samples) -> Tensor:
    r"""First-order TGD kernels, eqs. 16-18.

    :math:`e^{-x'^2/\gamma_1^2 - y'^2/\gamma_2^2}\,\mathrm{sign}(x')\,\mathbf{I}_{|x'|>\delta}`.
    The paper prints ``sign(cos theta)``; read as the cosine of the angle between the
    sample and the orientation ``theta``, whose sign is that of ``x'``. The kernel is
    therefore antisymmetric along ``x'`` and zero where ``|x'| <= TF_DELTA``. The
    step ``sign(x') I(|x'| > delta)`` then rises linearly to ``sign(x')`` over
    ``delta < |x'| < delta + TF_RAMP`` rather than at once, which makes the kernel
    continuous in ``theta``: with the step, two float32 implementations disagree by
    a whole sample for angles within rounding of its edge. Elsewhere the kernel is
    eq. 16 exactly; the ramp touches angles within about 1e-2 rad (0.6 degrees) of
    a line of samples, and its gradient is its slope.

    Args:
        theta: the orientation; it acts through the rotated samples ``s``.
        inv_gamma1: ``1 / gamma1``, across the edge (along ``x'``).
        inv_gamma2: ``1 / gamma2``, along the edge (along ``y'``).
        s: the samples, rotated by ``theta``.

    Shape:
        - theta, inv_gamma1, inv_gamma2: :math:`(N, 1)`
        - Output: :math:`(N, hw)`, zero where :math:`|x'| \le \delta`

    Examples:
        >>> import torch, acl
        >>> k = acl.generate("Tf", torch.tensor([[0.0, 1.0, 1.0]]), 3)
        >>> k[0, :, 1].tolist()[1], bool(k[0, 0, 1] == -k[0, 2, 1])
        (0.0, True)
    """
    # sign(x') I(|x'| > delta) jumps by a whole sample where |x'| = delta: an angle
    # within float32 rounding (1e-7) of that edge gave PyTorch and ONNX Runtime
    # kernels 0.28 apart (measured on a trained AnaNN-ResNet-18). Rising over
    # TF_RAMP instead, a sample moves by at most rounding / TF_RAMP (1e-5). Narrower
    # ramps measured 1e-4 between the two (delta/2 and 1e-3). The ramp's gradient
    # is its slope, so autograd agrees with finite differences everywhere.
    from torch.nn.functional import hardtanh, softshrink  # here: the registry imports without PyTorch

    # sign(x') clamp((|x'| - delta) / ramp, 0, 1) as clamp(softshrink(x' / ramp, delta / ramp), -1, 1):
    # 3 operations and their backward rather than 6 (issue 24); hardtanh is clamp with a one-op backward
    side = hardtanh(softshrink(s.x * (1 / TF_RAMP), TF_DELTA / TF_RAMP), -1.0, 1.0)
    a, b = s.x * inv_gamma1, s.y * inv_gamma2  # x'/gamma1, y'/gamma2
    return ((a * a).addcmul(b, b) * -LOG2_E).exp2() * side


def tgd2nd(theta: Tensor, inv_gamma: Tensor, s: Samples) -> Tensor:
    r"""Second-order TGD kernels, eqs. 19-22.

    :math:`W = e^{-(x'^2+y'^2)/\gamma^2}\,\left|\frac{x'}{x'^2+y'^2}\right|` with the
    centre's 0/0 taken as 0, then :math:`W - \mathrm{sum}(W)\,\mathbf{I}_{x=y=0}` (zero-sum).

    Args:
        theta: the orientation; it acts through the rotated samples ``s``.
        inv_gamma: ``1 / gamma``.
        s: the samples, rotated by ``theta``.

    Shape:
        - theta, inv_gamma: :math:`(N, 1)`
        - Output: :math:`(N, hw)`, every row summing to 0

    Examples:
        >>> import torch, acl
        >>> k = acl.generate("Ts", torch.tensor([[0.3, 1.5]]), 5)
        >>> abs(k.sum().item()) < 1e-5, bool(k[0, 2, 2] < 0)
        (True, True)
    """
    return zero_sum((inv_gamma * inv_gamma * (s.r2 * -LOG2_E)).exp2() * s.x.abs() * s.inv_r2, s)


def mean(s: Samples) -> Tensor:
    r"""Mean kernels, eq. 11: all ones divided by :math:`\sqrt{hw}`.

    Args:
        s: the samples.

    Shape:
        - Output: :math:`(1, hw)`, one row for the whole bank.

    Examples:
        >>> import torch, acl
        >>> acl.generate("M", torch.empty(2, 0), (2, 2))[1].tolist()
        [[0.5, 0.5], [0.5, 0.5]]
    """
    return s.r2.new_full(s.r2.shape, 1 / math.sqrt(s.r2.numel()))  # r2: [1, hw] or [hw, 1]


@dataclass(frozen=True)
class AKP:
    """One analytic kernel parameter of a family.

    Attributes:
        name: as in the paper (``sigma``, ``theta``...).
        unit: ``"px"`` for scales (clamped, see the module docstring) or ``"rad"``.
        init: ``s -> (lo, hi)``: the uniform initial range for kernels whose smaller
            side is ``s`` pixels.
    """

    name: str
    unit: str
    init: Callable[[int], tuple[float, float]]

    @property
    def is_scale(self) -> bool:
        return self.unit == "px"


def _scale(name: str) -> AKP:
    """A Gaussian scale, initialised to U(0.2 s, 0.5 s): neither a single spike nor flat over the window."""
    return AKP(name, "px", lambda s: (0.2 * s, 0.5 * s))


def _angle(name: str, turn: float = math.pi) -> AKP:
    return AKP(name, "rad", lambda s: (0.0, turn))


@dataclass(frozen=True)
class Family:
    """What the project knows about one kernel family.

    Attributes:
        symbol: the paper's symbol in arrangement specs (``G``, ``Lg``...).
        name: human name.
        op: its op in the ``ai.acl`` ONNX domain; ``None`` for Plain and the fixed families.
        akps: its AKPs in order; ``None`` for Plain, whose AKPs are its ``h*w`` values;
            ``()`` for Mean and the fixed families.
        colour: frame colour in mosaic plots (Fig. 4a).
        formula: ``(*columns, samples) -> [N or 1, h*w]``; ``None`` for Plain and the fixed families.
        fixed: kernels drawn once by ``acl.fixed_kernels`` and never learned (stored as buffers).
        odd: the kernel is odd in the sample, ``k(-r) = -k(r)`` (0 at a centre sample), so
            ``acl.kernels`` evaluates ``formula`` on the first half of the samples only and
            mirrors the rest (the ``ai.acl`` function of TGD1st does the same).
    """

    symbol: str
    name: str
    op: str | None
    akps: tuple[AKP, ...] | None
    colour: str
    formula: Callable[..., Tensor] | None
    fixed: bool = False
    odd: bool = False

    @property
    def akp_names(self) -> tuple[str, ...] | None:
        return None if self.akps is None else tuple(a.name for a in self.akps)

    @property
    def is_analytic(self) -> bool:
        """Kernels from AKPs by a formula (Mean included); not Plain, not a fixed family."""
        return self.akps is not None and not self.fixed

    @property
    def stores_kernels(self) -> bool:
        """The layer holds this family's kernels as ``[n, h, w]`` tensors (Plain: learned; fixed: buffers)."""
        return self.formula is None

    @property
    def angle(self) -> int | None:
        """Column of the orientation ``theta`` (the samples are rotated by it), or ``None``."""
        names = self.akp_names or ()
        return names.index("theta") if "theta" in names else None

    def num_akps(self, kernel_size: int | Sequence[int]) -> int:
        """Learnable values per kernel (``p_i`` of eq. 25); ``h*w`` for Plain, 0 for Mean and fixed families."""
        if self.akps is None:
            h, w = pair(kernel_size)
            return h * w
        return len(self.akps)


FAMILIES: dict[str, Family] = {
    f.symbol: f
    for f in (
        Family(
            "G",
            "Gabor",
            "Gabor",
            (
                AKP("lambda", "px", lambda s: (2.0, max(3.0, s))),
                _angle("theta"),
                AKP("psi", "rad", lambda s: (-math.pi, math.pi)),
                _scale("sigma"),
            ),
            "#d62728",  # red
            gabor,
        ),
        Family("Lg", "LoG", "LoG", (_scale("sigma"),), "#9467bd", log),  # purple
        Family("Lt", "LoT", "LoT", (_scale("sigma"),), "#e377c2", lot),  # pink
        # theta over the full turn: the sign of TGD1st flips with theta + pi
        Family(
            "Tf",
            "TGD1st",
            "TGD1st",
            (_angle("theta", 2 * math.pi), _scale("gamma1"), _scale("gamma2")),
            "#1f77b4",
            tgd1st,
            odd=True,  # sign(x') times a function even in (x', y')
        ),  # blue
        Family("Ts", "TGD2nd", "TGD2nd", (_angle("theta"), _scale("gamma")), "#2ca02c", tgd2nd),  # green
        Family("M", "Mean", "MeanKernel", (), "#7f7f7f", mean),  # grey (not in Fig. 4a)
        Family("P", "Plain", None, None, "#ff7f0e", None),  # orange
        # ExplainFix's fixed initialisations (sec. 3.1): drawn by acl.fixed_kernels, never learned
        Family("D", "DCT2", None, (), "#17becf", None, fixed=True),  # cyan
        Family("H", "GHaar", None, (), "#bcbd22", None, fixed=True),  # olive
        Family("S", "Psine", None, (), "#8c564b", None, fixed=True),  # brown
        Family("O", "Ones", None, (), "#000000", None, fixed=True),  # black
        Family("U", "Unchanged", None, (), "#aec7e8", None, fixed=True),  # light blue
    )
}
"""Kernel families by spec symbol, in the paper's order."""


def family(symbol: str) -> Family:
    """The family of a spec symbol, with a clear error for unknown ones."""
    try:
        return FAMILIES[symbol]
    except KeyError:
        raise ValueError(f"unknown kernel family {symbol!r}; expected one of {', '.join(FAMILIES)}") from None


def pair(kernel_size: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` of a kernel size given as an int or a pair, checked.

    Examples:
        >>> pair(3), pair((3, 5))
        ((3, 3), (3, 5))
    """
    size = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(int(s) for s in kernel_size)
    if len(size) != 2 or any(s < 1 for s in size):
        raise ValueError(f"kernel_size must be a positive int or a pair of them, got {kernel_size!r}")
    return size  # type: ignore[return-value]
