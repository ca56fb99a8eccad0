"""GuidedSteer (ExplainFix, Gaudio et al., sec. 3.1, Algorithm 1): fixed kernels steered like a guide network's.

The guide is a trained network of the same architecture (another seed); its
kernels come in by layer name. For each kernel shape ``(h, w)``:

- ``G``: every guide kernel of that shape, over all the guide's layers, one
  flattened kernel per row (row-major, the ACL mosaic's order), ``[c, hw]``.
- ``B = V^T`` from the SVD of ``G^T G`` (``hw x hw`` whatever ``c`` is, as the paper
  computes it): an orthonormal basis, one flattened basis kernel per row, in which
  ``G``'s steering weights ``G B^T`` have uncorrelated columns.

Then per target layer ``l``, from the guide's layer of the same name ``G_l``: the
mean ``mu_i`` and standard deviation ``sigma_i`` (population, so one guide kernel
is enough) of each column of ``P = G_l B^T`` (layers steer differently, so the
statistics are the layer's while the basis is the shape's); ``n`` rows of
independent draws ``W[:, i] ~ N(mu_i, sigma_i^2)``; ``F_l = W B`` (non-centred: no
mean kernel added back). The paper found no clear winner between this normal draw
and a KDE; the normal one is built here. ``n`` need not equal the guide layer's
kernel count.

Draws are made on the CPU in float64 from the caller's ``torch.Generator`` (the
same seed gives the same kernels), layer after layer in the targets' order.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

__all__ = ["draw_guided", "guide_bases", "guide_basis", "guide_problem", "guided_steer"]


def _flat(kernels: Tensor) -> Tensor:
    """``[..., h, w]`` kernels as float64 rows ``[c, hw]``."""
    h, w = kernels.shape[-2:]
    return kernels.detach().reshape(-1, h * w).to("cpu", torch.float64)


def guide_basis(kernels: Tensor) -> Tensor:
    """``B = V^T`` from the SVD of ``G^T G``, ``G`` the flattened ``kernels``: one basis kernel per row.

    Shape:
        - Input: :math:`(..., h, w)`, any number of kernels of one shape
        - Output: :math:`(hw, hw)`, float64, orthonormal rows (``B B^T = I``)

    Examples:
        >>> g = torch.randn(50, 3, 3, generator=torch.Generator().manual_seed(0))
        >>> b = guide_basis(g)
        >>> b.shape, torch.allclose(b @ b.T, torch.eye(9, dtype=b.dtype), atol=1e-12)
        (torch.Size([9, 9]), True)
    """
    g = _flat(kernels)
    _, _, vh = torch.linalg.svd(g.T @ g)
    return vh


def guide_bases(guide: Mapping[str, Tensor]) -> dict[tuple[int, int], Tensor]:
    """``guide_basis`` per kernel shape, over all of ``guide``'s layers of that shape (Algorithm 1's ``G``).

    Shape:
        - Input: ``{layer: (..., h, w)}``
        - Output: ``{(h, w): (hw, hw)}``

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> guide = {"a": torch.randn(8, 3, 3, 3, generator=g), "b": torch.randn(4, 5, 5, generator=g)}
        >>> {k: tuple(v.shape) for k, v in guide_bases(guide).items()}
        {(3, 3): (9, 9), (5, 5): (25, 25)}
    """
    groups: dict[tuple[int, int], list[Tensor]] = {}
    for kernels in guide.values():
        h, w = kernels.shape[-2:]
        groups.setdefault((h, w), []).append(kernels.detach().reshape(-1, h, w))
    return {shape: guide_basis(torch.cat(kernels)) for shape, kernels in groups.items()}


def draw_guided(layer_guide: Tensor, basis: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` kernels steered like ``layer_guide`` in ``basis``: per-column normal draws of ``layer_guide B^T``, times ``B``.

    Shape:
        - Input: ``layer_guide`` :math:`(..., h, w)`, ``basis`` :math:`(hw, hw)`
        - Output: :math:`(n, h, w)`, float32

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> guide = torch.randn(30, 3, 3, generator=g)
        >>> draw_guided(guide, guide_basis(guide), 5, torch.Generator().manual_seed(1)).shape
        torch.Size([5, 3, 3])
    """
    h, w = layer_guide.shape[-2:]
    steering = _flat(layer_guide) @ basis.T  # P = G_l B^T
    mu, sigma = steering.mean(0), steering.std(0, correction=0)
    weights = mu + sigma * torch.randn(n, h * w, generator=generator, dtype=torch.float64)
    return (weights @ basis).reshape(n, h, w).to(torch.float32)


def guide_problem(guide: Mapping[str, Tensor], needs: Mapping[str, tuple[int, int]]) -> str | None:
    """Why ``guide`` cannot steer layers ``{name: (h, w)}``, as ``<what>, expected <what>``; None when it can."""
    for name, (h, w) in needs.items():
        kernels = guide.get(name)
        if kernels is None:
            return f"the guide has no layer {name} ({h}x{w} kernels), expected a network of the same architecture"
        gh, gw = kernels.shape[-2:]
        if (gh, gw) != (h, w) or kernels.numel() == 0:
            return (
                f"the guide's layer {name} has {gh}x{gw} kernels, expected {h}x{w} kernels there "
                "(a network of the same architecture)"
            )
    return None


def guided_steer(
    guide: Mapping[str, Tensor],
    targets: Mapping[str, tuple[int, int, int]],
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """GuidedSteer (Algorithm 1, module docstring): ``n`` kernels per target layer, steered like the guide's layer.

    Args:
        guide: the guide network's spatial kernels by layer name (a conv weight or any ``(..., h, w)``);
            every layer counts towards its shape's basis.
        targets: ``{layer: (n, h, w)}``, each layer present in ``guide`` with ``h x w`` kernels.
        generator: the draws' random stream; ``None``: the global one.

    Shape:
        - Input: ``guide`` ``{layer: (..., h, w)}``, ``targets`` ``{layer: (n, h, w)}``
        - Output: ``{layer: (n, h, w)}``, float32, in ``targets``' order

    Raises:
        ValueError: a target layer the guide lacks, or has with another kernel shape (``guide_problem``).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> guide = {"conv1": torch.randn(6, 1, 5, 5, generator=g), "conv2": torch.randn(16, 6, 5, 5, generator=g)}
        >>> out = guided_steer(guide, {"conv1": (6, 5, 5), "conv2": (200, 5, 5)}, torch.Generator().manual_seed(1))
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'conv1': (6, 5, 5), 'conv2': (200, 5, 5)}
        >>> again = guided_steer(guide, {"conv1": (6, 5, 5), "conv2": (200, 5, 5)}, torch.Generator().manual_seed(1))
        >>> all(torch.equal(out[k], again[k]) for k in out)
        True
    """
    found = guide_problem(guide, {name: (h, w) for name, (_, h, w) in targets.items()})
    if found:
        raise ValueError(found)
    bases = guide_bases(guide)
    return {name: draw_guided(guide[name], bases[(h, w)], n, generator) for name, (n, h, w) in targets.items()}
