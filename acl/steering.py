"""ExplainSteer (ExplainFix, Gaudio et al., Eqs. 3, 5, 6 and Algo. 2): the DCT-II energy spectra of spatial kernels.

For the ``n`` kernels of one spatial layer as rows of ``F`` (``[n, m]``, ``m = hw``,
flattened row-major: the ACL mosaic's order) and the orthonormal 2-D DCT-II basis
``B`` (``acl.fixed_families.dct2_basis``, row ``i = a*w + b``):

- ``e^(d) = w |F B^T|`` in ``R^m`` (Eq. 3), the weight of each basis kernel; ``w_j = 1/n``
  by default, or a saliency weight per kernel (``acl.kernel_saliency``);
- ``e^(1)`` in ``R^(h+w)`` (Eq. 5): ``e1_h[a] = sum_b e_(a,b)^(1/d)`` and
  ``e1_w[b] = sum_a e_(a,b)^(1/d)``, ``d = 2``: each basis kernel's energy is split
  equally (as a ``d``-th root) between the two 1-D DCT rows it is the outer product of;
- ``e^(0) = (e1_h + e1_w) / d`` in ``R^h`` (Eq. 6, the mean of Algo. 2's line 10),
  square kernels only: the paper leaves it undefined for ``h != w``, and so do we (None).

``display_order`` sorts the basis kernels from low to high frequency as in the paper's
App. F (3x3: (0,0), (0,1), (1,0), (0,2), (2,0), (1,1), (1,2), (2,1), (2,2)): by
``a + b``, then by ``min(a, b)``, then row frequency ``a`` first.

``model_spectra`` computes one ``Spectrum`` per spatial convolution of a plain CNN or an
AnaNN (an ACL on its generated kernels), without saliency (``w = 1/n``) or with it.
With saliency the weights are each kernel's saliency divided by the saliency summed over
*every* spatial kernel of the model, so a layer's spectrum also shows how much the
layer matters (the paper's horizontal trend): the spectra of all layers then sum to
``sum_j w_j |f_j B^T|`` with ``sum_j w_j = 1`` over the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from acl.families import pair
from acl.fixed_families import dct2_basis

__all__ = ["DIMENSIONS", "Spectrum", "display_order", "explainsteer", "model_spectra", "spatial_layers"]

DIMENSIONS = 2
"""``d``: 2-D kernels (the root in Eq. 5 and the divisor in Eq. 6)."""


@dataclass(frozen=True)
class Spectrum:
    """ExplainSteer's spectra of one set of ``h x w`` kernels.

    Attributes:
        kernel_size: ``(h, w)``.
        kernels: ``n``, the kernels (rows of ``F``).
        e_d: ``[hw]`` Eq. 3, in raster order (index ``a*w + b``).
        e_1: ``[h + w]`` Eq. 5: the ``h`` row frequencies, then the ``w`` column frequencies.
        e_0: ``[h]`` Eq. 6 for square kernels; None otherwise.
    """

    kernel_size: tuple[int, int]
    kernels: int
    e_d: Tensor
    e_1: Tensor
    e_0: Tensor | None

    def displayed(self) -> Tensor:
        """``e_d`` in ``display_order`` (low to high frequency), as the heatmap shows it."""
        return self.e_d[display_order(self.kernel_size)]


def display_order(kernel_size: int | tuple[int, int]) -> list[int]:
    """Raster indices ``a*w + b`` of the DCT-II basis kernels, from low to high frequency (App. F).

    Examples:
        >>> [divmod(i, 3) for i in display_order(3)]  # (row frequency a, column frequency b)
        [(0, 0), (0, 1), (1, 0), (0, 2), (2, 0), (1, 1), (1, 2), (2, 1), (2, 2)]
        >>> display_order((2, 3))
        [0, 1, 3, 2, 4, 5]
    """
    h, w = pair(kernel_size)
    pairs = [(a, b) for a in range(h) for b in range(w)]
    return [a * w + b for a, b in sorted(pairs, key=lambda ab: (ab[0] + ab[1], min(ab), ab[0]))]


def explainsteer(kernels: Tensor, weights: Tensor | None = None) -> Spectrum:
    """Eqs. 3, 5 and 6 for one set of same-shaped kernels (one matrix product, no loop).

    Args:
        kernels: the kernels, any leading shape (a conv weight ``[Co, Ci/groups, h, w]`` or ``[n, h, w]``).
        weights: one non-negative weight per kernel (same leading shape, or flat ``[n]``);
            None: ``1/n`` each.

    Returns:
        A ``Spectrum`` (float64).

    Raises:
        ValueError: a kernel of fewer than 2 dimensions, weights of another count, or negative weights.

    Shape:
        - kernels: :math:`(*, h, w)` with :math:`n = \\prod *` kernels
        - weights: :math:`(*)` or :math:`(n)`
        - Output: ``e_d`` :math:`(hw)`, ``e_1`` :math:`(h + w)`, ``e_0`` :math:`(h)` when :math:`h = w`

    Examples:
        >>> from acl.fixed_families import dct2_basis
        >>> s = explainsteer(dct2_basis(3).view(9, 3, 3))  # each basis kernel once: a flat spectrum
        >>> torch.allclose(s.e_d, torch.full((9,), 1 / 9, dtype=torch.float64))
        True
        >>> s.e_1.shape, s.e_0.shape
        (torch.Size([6]), torch.Size([3]))
        >>> [round(e, 6) for e in explainsteer(torch.ones(4, 2, 2)).e_d.tolist()]  # ones: the Mean basis kernel only
        [2.0, 0.0, 0.0, 0.0]
    """
    if kernels.dim() < 3:
        raise ValueError(f"kernels of shape {tuple(kernels.shape)}, expected (*, h, w) with at least one kernel axis")
    h, w = kernels.shape[-2:]
    flat = kernels.detach().reshape(-1, h * w).double()
    n = len(flat)
    if weights is None:
        wts = torch.full((n,), 1.0 / n, dtype=torch.float64)
    else:
        wts = weights.detach().reshape(-1).double()
        if len(wts) != n:
            raise ValueError(f"{len(wts)} weights for {n} kernels, expected one weight per kernel")
        if bool((wts < 0).any()):
            raise ValueError("negative kernel weights, expected saliency weights >= 0")
    e_d = wts @ (flat @ dct2_basis((h, w), dtype=torch.float64).T).abs()  # Eq. 3
    return Spectrum((h, w), n, e_d, *_reduce(e_d, h, w))


def _reduce(e_d: Tensor, h: int, w: int) -> tuple[Tensor, Tensor | None]:
    """Eq. 5 (``e_1``) and Eq. 6 (``e_0``, None unless square) from ``e_d``."""
    root = e_d.clamp_min(0).pow(1.0 / DIMENSIONS).view(h, w)  # clamp: -0.0 from rounding
    e_1 = torch.cat([root.sum(1), root.sum(0)])
    e_0 = (e_1[:h] + e_1[h:]) / DIMENSIONS if h == w else None
    return e_1, e_0


def spatial_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The spatial convolutions (kernel not 1x1) of ``model`` in module order: ``nn.Conv2d`` and ACLs."""
    from acl.analytic_conv import AnalyticConv2d

    out = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, AnalyticConv2d)) and tuple(module.kernel_size) != (1, 1):
            out.append((name, module))
    return out


@torch.no_grad()
def model_spectra(model: nn.Module, saliency=None) -> dict[str, Spectrum]:
    """``explainsteer`` of every spatial convolution of ``model``, by module name.

    Args:
        model: a plain CNN or an AnaNN (an ACL's generated kernels are used; nothing is modified).
        saliency: None for ``w_j = 1/n`` per layer; an ``acl.Saliency`` of this model to weight
            each kernel by its saliency over the model's total (module docstring).

    Raises:
        ValueError: no spatial convolution, or a saliency without a layer of the model.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, (3, 5)))
        >>> spectra = model_spectra(net)
        >>> list(spectra), spectra["3"].e_d.shape, spectra["3"].e_0
        (['0', '3'], torch.Size([15]), None)
    """
    layers = spatial_layers(model)
    if not layers:
        raise ValueError("the model has no spatial convolution (kernel other than 1x1), expected at least one")
    total = None
    if saliency is not None:
        missing = [name for name, _ in layers if name not in saliency.kernels]
        if missing:
            raise ValueError(f"saliency has no scores for layer {missing[0]}, expected a saliency of this model")
        total = float(sum(saliency.kernels[name].sum() for name, _ in layers))
    out = {}
    for name, layer in layers:
        weights = None
        if total is not None:
            weights = saliency.kernels[name].double() / (total if total > 0 else 1.0)
        out[name] = explainsteer(layer.weight, weights)
    return out
