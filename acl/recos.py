"""RECOS (Kuo, "Understanding CNNs with a mathematical model"): anchor vectors and rectified correlations.

Every convolution and linear layer is a set of ``K`` anchor vectors ``a_k`` in
``R^N`` (its kernels, flattened; ``N = Ci/groups * h * w``, or ``in_features``). Its
response to an input patch ``x`` is ``y_k = Rec(a'_k^T x') = ||x'|| ||a'_k|| Rec(cos theta_k)``
(Eqs. 2, 4, 10) with the vectors augmented (Eqs. 5-8) in one of two ways:

- ``"bias"`` (a CNN as it is): ``x' = (1, x)``, ``a'_k = (b_k, a_k)``; ``a'^T x'`` is the
  layer's own output, so the share of negative correlations is what a ReLU after it
  zeroes (after folding a BatchNorm that directly follows, ``analyse`` does that);
- ``"mean"`` (the paper's first layer): ``x' = (mu, x)``, ``a'_k = (-sum_n a_kn, a_k)``,
  ``a'^T x' = a^T (x - mu 1)``: the correlation with the patch's mean removed, no bias.

``"plain"`` uses ``x`` and ``a`` as they are. For an ACL, a family's anchors are the
layer's anchors restricted to that family's kernels (the others set to zero): a
convolution is linear in its kernels, so the layer's response is the sum of its
families' responses (as in ``acl.interpret.family_energy``).

The cascade (Eqs. 11-21, with the typos corrected: Eq. 15 is ``alpha_n^T = e_n^T A``,
Eq. 17 ``Rec(alpha_n^T b_l)``, Eq. 21's ``AB`` is ``(I_P kron A) B``): two stacked
convolutions with stride-``s`` subsampling in between are one convolution of the
pixels with the composite kernel ``conv_transpose2d(W2, W1, stride=s)`` and bias
``b2 + sum W2 b1`` (``composite_kernel``, ``composite_bias``); ``rectify=True`` gives
``C' = Rec(C)``, each product ``alpha_n^T b_l`` rectified before the overlapping
positions are summed.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from acl.analytic_conv import AnalyticConv2d
from acl.hooks import forward_with_hooks

__all__ = [
    "MODES",
    "analyse",
    "anchor_table",
    "anchors",
    "composite_bias",
    "composite_check",
    "composite_kernel",
    "correlations",
    "family_masks",
    "first_pair",
    "gram_stats",
    "negate_first_layer",
    "patches",
    "recos_layers",
]

MODES = ("bias", "mean", "plain")
WORK = 1 << 27
"""Multiply-adds per layer and correlation at most: a large layer gets fewer patches (at least ``MIN_PATCHES``)."""
MIN_PATCHES = 64
MAX_GRAM, MIN_GRAM, GRAM_WORK = 1024, 64, 1 << 30
"""Anchors in a Gram matrix at most; at least; multiply-adds of ``K^2 N`` at most (``gram_stats``)."""
CONV_TYPES = (nn.Conv2d, AnalyticConv2d)


def recos_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` of every 2-D convolution (plain or ACL) and linear layer, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (*CONV_TYPES, nn.Linear))]


def anchors(layer: nn.Module, bn: nn.Module | None = None) -> tuple[Tensor, Tensor | None]:
    """The layer's anchor vectors, one row each, grouped, and its bias; with ``bn`` (a BatchNorm
    that takes the layer's output, eval statistics) folded in, as the activation after it sees them.

    Shape:
        - Output: ``A`` :math:`(G, K/G, N)` (``G`` groups; 1 for a linear layer),
          bias :math:`(K,)` or ``None``.

    Examples:
        >>> A, b = anchors(nn.Conv2d(6, 16, 5))
        >>> tuple(A.shape), tuple(b.shape)
        ((1, 16, 150), (16,))
        >>> tuple(anchors(nn.Conv2d(8, 8, 3, groups=8, bias=False))[0].shape)
        (8, 1, 9)
    """
    weight = layer.weight.detach()
    groups = getattr(layer, "groups", 1)
    bias = None if layer.bias is None else layer.bias.detach()
    A = weight.reshape(groups, weight.shape[0] // groups, -1)
    if bn is None:
        return A, bias
    scale, bias = _bn_affine(bn, bias)
    return A * scale.reshape(A.shape[0], A.shape[1], 1), bias


def family_masks(layer: nn.Module) -> dict[str, Tensor]:
    """Per ACL family (name), a 0/1 mask of the anchors' entries that are that family's kernels.

    A plain layer is one family, ``"all"``. Shape: each mask :math:`(G, K/G, N)`, like ``anchors``.

    Examples:
        >>> masks = family_masks(AnalyticConv2d(1, 4, 3, spec="Lg2P2"))
        >>> {k: v.sum().item() for k, v in masks.items()}
        {'LoG': 18.0, 'Plain': 18.0}
    """
    shape = anchors(layer)[0].shape
    if not isinstance(layer, AnalyticConv2d):
        return {"all": torch.ones(shape)}
    from acl.interpret import family_index

    names, index = family_index(layer)
    h, w = layer.kernel_size
    per_entry = index.cpu().repeat_interleave(h * w).reshape(shape)
    return {name: (per_entry == i).float() for i, name in enumerate(names)}


def _padded(layer: nn.Module, x: Tensor) -> Tensor:
    amounts = AnalyticConv2d._padding_amounts(layer)  # type: ignore[arg-type]  # nn.Conv2d has the same attributes
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    return F.pad(x, amounts, mode=mode) if any(amounts) else x


def patches(layer: nn.Module, x: Tensor, *, max_patches: int | None = None, generator=None) -> Tensor:
    """The input patches ``layer`` correlates with its anchors (padded as it pads), grouped.

    Windows are gathered only at the chosen positions (never the whole unfold, which for a
    large layer would not fit in memory): every position, or ``max_patches`` of them drawn
    without replacement from ``generator``. For a linear layer each sample is one patch.

    Shape:
        - Input: :math:`(B, C_i, H, W)` for a convolution, :math:`(B, N)` for a linear layer.
        - Output: :math:`(G, P, N)`, ``N`` in the anchors' order (channel, row, column).

    Examples:
        >>> tuple(patches(nn.Conv2d(1, 6, 5), torch.randn(2, 1, 32, 32)).shape)
        (1, 1568, 25)
    """
    if isinstance(layer, nn.Linear):
        flat = x.reshape(-1, x.shape[-1])  # a linear layer acts on the last dimension
        return _subset(flat, max_patches, generator)[None]
    xp = _padded(layer, x)
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.stride, layer.dilation
    ho, wo = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1, (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    pos = _subset(torch.arange(len(x) * ho * wo), max_patches, generator)
    b, rest = pos // (ho * wo), pos % (ho * wo)
    rows = (rest // wo * sh)[:, None] + torch.arange(kh) * dh  # [P, kh]
    cols = (rest % wo * sw)[:, None] + torch.arange(kw) * dw  # [P, kw]
    win = xp[b[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # [P, kh, kw, C]: advanced dims first
    groups = layer.groups
    flat = win.permute(0, 3, 1, 2).reshape(len(pos), groups, -1)
    return flat.transpose(0, 1).contiguous()


def _subset(rows: Tensor, limit: int | None, generator) -> Tensor:
    if limit is None or len(rows) <= limit:
        return rows
    pick = torch.randperm(len(rows), generator=generator)[:limit].sort().values
    return rows[pick]


def _augment(A: Tensor, X: Tensor, bias: Tensor | None, mode: str) -> tuple[Tensor, Tensor]:
    """``(a', x')`` of Eqs. 5-8 (``"mean"``) or of the CNN's bias (``"bias"``), first element prepended."""
    if mode == "plain" or (mode == "bias" and bias is None):
        return A, X
    if mode == "bias":
        head_a = bias.reshape(A.shape[0], A.shape[1], 1).to(A.dtype)
        head_x = torch.ones(*X.shape[:2], 1, dtype=X.dtype, device=X.device)
    elif mode == "mean":
        head_a = -A.sum(-1, keepdim=True)
        head_x = X.mean(-1, keepdim=True)
    else:
        raise ValueError(f"mode {mode!r}, expected one of {', '.join(MODES)}")
    return torch.cat([head_a, A], -1), torch.cat([head_x, X], -1)


def correlations(A: Tensor, X: Tensor, bias: Tensor | None = None, mode: str = "bias") -> dict[str, Tensor]:
    """``cos theta`` of every patch with every anchor, and the norms that scale it back to the response.

    ``y = x_norm[:, None] * a_norm[None] * cos`` is ``a'^T x'`` (Eq. 10 before ``Rec``); for
    ``mode="bias"`` that is the layer's output at the patch. A zero patch or anchor has
    ``cos = 0`` (no direction).

    Args:
        A: anchors :math:`(G, K/G, N)` (``anchors``).
        X: patches :math:`(G, P, N)` (``patches``).
        bias: :math:`(K,)`, used by ``mode="bias"``.
        mode: ``"bias"``, ``"mean"`` or ``"plain"`` (module docstring).

    Returns:
        ``{"cos": (P, K), "x_norm": (P, K), "a_norm": (K,)}``, float64; column ``k`` is output
        channel ``k`` (``x_norm``'s column: the norm of the patch that channel's group sees).

    Examples:
        >>> conv = nn.Conv2d(1, 6, 5)
        >>> x = torch.randn(1, 1, 8, 8)
        >>> A, b = anchors(conv)
        >>> c = correlations(A, patches(conv, x), b)
        >>> y = c["x_norm"] * c["a_norm"] * c["cos"]
        >>> torch.allclose(y.float(), conv(x).permute(0, 2, 3, 1).reshape(-1, 6), atol=1e-5)
        True
    """
    A2, X2 = _augment(A.double(), X.double(), None if bias is None else bias.double(), mode)
    a_norm, x_norm = A2.norm(dim=-1), X2.norm(dim=-1)  # [G, Kg], [G, P]
    dots = torch.einsum("gpn,gkn->gpk", X2, A2)
    denom = x_norm[:, :, None] * a_norm[:, None, :]
    cos = torch.where(denom > 0, dots / denom.clamp_min(1e-300), torch.zeros_like(dots))
    G, P, Kg = cos.shape
    return {
        "cos": cos.permute(1, 0, 2).reshape(P, G * Kg),
        "x_norm": x_norm.T.repeat_interleave(Kg, dim=1),
        "a_norm": a_norm.reshape(-1),
    }


def _dense(A: Tensor) -> Tensor:
    """Grouped anchors :math:`(G, K/G, N)` as :math:`(K, G N)`: a group's anchors are zero on the other groups' inputs."""
    return torch.block_diag(*A) if A.shape[0] > 1 else A[0]


def gram_stats(A: Tensor, bins: int = 36) -> dict[str, Any]:
    """The anchors' Gram matrix of unit vectors: coherence, effective rank, rank, angle histogram.

    Zero anchors (no direction) are left out. A layer with many wide anchors is measured on
    ``sampled`` of them, evenly spaced (at most ``MAX_GRAM``, and fewer when ``K^2 N`` would
    exceed ``GRAM_WORK``). The effective rank is Roy and Vetterli's
    ``exp(-sum p_i log p_i)``, ``p_i = s_i / sum s`` over the singular values ``s`` of the
    unit anchors: ``K`` for orthogonal anchors, 1 when they all point one way (or opposite).

    Args:
        A: anchors :math:`(K, N)`, or grouped :math:`(G, K/G, N)` (``anchors``).
        bins: angle histogram bins over 0..180 degrees.

    Returns:
        ``{"anchors", "sampled", "coherence", "effective_rank", "rank", "angles": histogram counts}``
        over the sampled anchors' pairs; ``coherence`` is the largest ``|cos|`` between two anchors.

    Examples:
        >>> s = gram_stats(torch.eye(3))
        >>> s["coherence"], round(s["effective_rank"], 6), s["rank"], sum(s["angles"])
        (0.0, 3.0, 3, 3)
    """
    flat = _dense(A) if A.dim() == 3 else A
    keep = (flat != 0).any(dim=1).nonzero().flatten()
    total = len(keep)
    cap = min(MAX_GRAM, max(MIN_GRAM, math.isqrt(GRAM_WORK // max(1, flat.shape[1]))))
    if total > cap:  # evenly spaced anchors: a VGG's 4096 x 25088 layer would take minutes
        keep = keep[torch.linspace(0, total - 1, cap).round().long()]
    flat = flat[keep].double()
    unit = flat / flat.norm(dim=1, keepdim=True)
    k = len(unit)
    gram = unit @ unit.T
    pairs = gram[torch.triu_indices(k, k, 1).unbind()].clamp(-1, 1)
    angles = torch.rad2deg(torch.arccos(pairs))
    # Singular values from the K x K Gram matrix: a wide layer's SVD (512 x 4608) took seconds. On a busy
    # machine use one thread (the report stage does): 512 x 512 took 0.06 s, 1.5 s with two threads.
    eig = torch.linalg.eigvalsh(gram).clamp_min(0) if k else gram.new_zeros(0)
    s = eig.sqrt()
    p = s / s.sum() if k else s
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {
        "anchors": total,
        "sampled": k,
        "coherence": float(pairs.abs().max()) if len(pairs) else 0.0,
        "effective_rank": float(entropy.exp()) if k else 0.0,
        "rank": int((eig > eig.max() * k * 1e-12).sum()) if k else 0,
        "angles": torch.histc(angles, bins, 0, 180).long().tolist(),
    }


def _dense_weight(conv: nn.Module) -> Tensor:
    """A grouped convolution's weight as the dense ``[Co, Ci, h, w]`` it is equivalent to."""
    A, _ = anchors(conv)
    w = conv.weight.detach()
    if A.shape[0] == 1:
        return w
    g, kg = A.shape[:2]
    dense = w.new_zeros(w.shape[0], w.shape[1] * g, *w.shape[2:])
    for i in range(g):
        dense[i * kg : (i + 1) * kg, i * w.shape[1] : (i + 1) * w.shape[1]] = w[i * kg : (i + 1) * kg]
    return dense


def composite_kernel(w1: Tensor, w2: Tensor, *, stride: int = 2, rectify: bool = False) -> Tensor:
    """The pixel-space kernel ``C`` (or ``C' = Rec(C)``) of two stacked convolutions (Eqs. 12-21).

    ``conv(w2, subsample_s(conv(w1, x)))`` without activations is ``conv(C, x)`` with stride
    ``s`` (times the second convolution's own stride), ``C = conv_transpose2d(w2, w1, stride=s)``.
    With ``rectify``, every product ``alpha_n^T b_l`` of Eq. 17 (a first-layer input pixel
    ``n`` of one first-layer window, a second-layer anchor ``l``) is rectified before the
    windows that overlap at a pixel are summed.

    Args:
        w1: first kernels :math:`(C_1, C_0, k_1, k_1')` (dense: see ``composite_check`` for groups).
        w2: second kernels :math:`(C_2, C_1, k_2, k_2')`.
        stride: the subsampling between them (with the first one's stride: their product).
        rectify: ``C'`` instead of ``C``.

    Shape:
        - Output: :math:`(C_2, C_0, (k_2 - 1) s + k_1, (k_2' - 1) s + k_1')`.

    Examples:
        >>> c = composite_kernel(torch.randn(6, 1, 5, 5), torch.randn(16, 6, 5, 5))
        >>> tuple(c.shape)  # LeNet-5: a 13x13 receptive field (Fig. 6)
        (16, 1, 13, 13)
    """
    if not rectify:
        return F.conv_transpose2d(w2, w1, stride=stride)
    (c2, _, k2h, k2w), (_, c0, k1h, k1w) = w2.shape, w1.shape
    terms = torch.einsum("lcij,cduv->lduvij", w2, w1).clamp_min(0)  # Rec(alpha_n^T b_l) per window (i, j)
    cols = terms.reshape(c2, c0 * k1h * k1w, k2h * k2w)
    size = ((k2h - 1) * stride + k1h, (k2w - 1) * stride + k1w)
    return F.fold(cols, size, (k1h, k1w), stride=stride)


def composite_bias(w2: Tensor, b1: Tensor | None, b2: Tensor | None) -> Tensor:
    """The composite's bias ``b2 + sum_{c,i,j} w2[l, c, i, j] b1[c]`` (:math:`(C_2,)`)."""
    out = w2.new_zeros(w2.shape[0]) if b2 is None else b2.clone()
    return out if b1 is None else out + w2.sum((2, 3)) @ b1


def _folded(layer: nn.Module, bn: nn.Module | None) -> tuple[Tensor, Tensor | None]:
    """The dense weight and bias of ``layer`` followed by ``bn`` (eval statistics), or of ``layer`` alone."""
    w = _dense_weight(layer) if not isinstance(layer, nn.Linear) else layer.weight.detach()
    b = None if layer.bias is None else layer.bias.detach()
    if bn is None:
        return w, b
    scale, b = _bn_affine(bn, b)
    return w * scale.reshape(-1, *([1] * (w.dim() - 1))), b


def _bn_affine(bn: nn.Module, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """A BatchNorm's per-channel scale (eval statistics) and the bias it turns ``bias`` into."""
    scale = 1 / torch.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach()
    shift = bn.bias.detach() if bn.affine else 0.0
    return scale, ((0.0 if bias is None else bias) - bn.running_mean) * scale + shift


@torch.no_grad()
def composite_check(
    first: nn.Module,
    second: nn.Module,
    x: Tensor,
    *,
    subsample: int = 2,
    first_bn: nn.Module | None = None,
    second_bn: nn.Module | None = None,
) -> dict[str, Any]:
    """The composite kernel of two convolutions against their real two-layer linear response on ``x``.

    The real path runs the modules themselves (float64 copies, eval mode): ``second_bn(second(s(first_bn(first(x)))))``
    with ``s`` keeping every ``subsample``-th row and column (in place of pooling) and no
    activation. The composite is one convolution of ``x`` (padded as ``first`` pads) with
    ``composite_kernel`` and ``composite_bias`` of the BN-folded weights. Where ``second``
    pads, its border outputs see padding instead of first-layer responses: only outputs whose
    window lies inside the first layer's response are compared. Dilated convolutions are refused.

    Returns:
        ``{"kernel": shape, "stride", "positions", "max_abs", "max_rel"}``: errors over the
        compared outputs, ``max_rel`` relative to the largest ``|z|`` there.

    Examples:
        >>> c = composite_check(nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5), torch.randn(2, 1, 32, 32))
        >>> c["kernel"], c["max_abs"] < 1e-4
        ([16, 1, 13, 13], True)
    """
    for layer in (first, second):
        if tuple(layer.dilation) != (1, 1):
            raise ValueError(f"composite_check: dilation {tuple(layer.dilation)}, expected (1, 1)")
    # In float64 (copies of the modules): the check is of the algebra, not of float32 rounding.
    first, second, first_bn, second_bn = (
        None if m is None else copy.deepcopy(m).double() for m in (first, second, first_bn, second_bn)
    )
    x = x.double()
    y = first(x)
    y = y if first_bn is None else first_bn(y)
    y = y[:, :, ::subsample, ::subsample]
    real = second(y)
    real = real if second_bn is None else second_bn(real)
    (w1, b1), (w2, b2) = _folded(first, first_bn), _folded(second, second_bn)
    s1 = first.stride[0] * subsample, first.stride[1] * subsample
    kernel = F.conv_transpose2d(w2, w1, stride=s1)
    z = F.conv2d(_padded(first, x), kernel, composite_bias(w2, b1, b2), stride=s1)  # every second-layer window position
    rows, cols = (_inside(real.shape[d + 2], z.shape[d + 2], second.stride[d], second.padding, d) for d in (0, 1))
    zr = z[:, :, rows[1]][:, :, :, cols[1]]
    rr = real.double()[:, :, rows[0]][:, :, :, cols[0]]
    err = float((zr - rr).abs().max()) if zr.numel() else 0.0
    return {
        "kernel": list(kernel.shape),
        "stride": [s1[0] * second.stride[0], s1[1] * second.stride[1]],
        "positions": int(zr[0, 0].numel()),
        "max_abs": err,
        "max_rel": err / max(float(rr.abs().max()), 1e-30) if zr.numel() else 0.0,
    }


def _inside(n_real: int, n_full: int, stride: int, padding: Any, dim: int) -> tuple[Tensor, Tensor]:
    """Indices of the real outputs whose window avoids the padding, and of the same windows in ``z``."""
    pad = 0 if padding == "valid" else (padding[dim] if not isinstance(padding, str) else None)
    if pad is None:
        raise ValueError(f"composite_check: padding {padding!r} of the second layer, expected numbers or 'valid'")
    q = torch.arange(n_real)
    m = q * stride - pad
    keep = (m >= 0) & (m < n_full)
    return q[keep], m[keep]


def _kind(layer: nn.Module) -> str:
    return "linear" if isinstance(layer, nn.Linear) else ("acl" if isinstance(layer, AnalyticConv2d) else "conv")


def anchor_table(model: nn.Module) -> list[dict[str, Any]]:
    """Table 1 of the paper for any model: per convolution and linear layer, ``N`` and ``K``.

    ``N`` is the anchors' dimension as the paper counts it: the first layer's is augmented
    by the patch mean (Eqs. 5-8; its input is a raw image whose local mean matters), the
    others' not. ``bias``: the layer has one (``x' = (1, x)`` adds one more dimension,
    ``N + 1``, in ``mode="bias"``). ``families``: an ACL's kernels per family.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 28 * 28, 10))
        >>> [(r["layer"], r["N"], r["K"], r["augmented"]) for r in anchor_table(net)]
        [('0', 26, 6, True), ('3', 4704, 10, False)]
    """
    rows = []
    for i, (name, layer) in enumerate(recos_layers(model)):
        A, bias = anchors(layer)
        row = {
            "layer": name,
            "kind": _kind(layer),
            "N": A.shape[2] + (i == 0),
            "K": A.shape[0] * A.shape[1],
            "augmented": i == 0,
            "bias": bias is not None,
            "groups": A.shape[0],
        }
        if isinstance(layer, AnalyticConv2d):
            row["families"] = {k: int(v.sum()) // math.prod(layer.kernel_size) for k, v in family_masks(layer).items()}
        rows.append(row)
    return rows


def _capture(model: nn.Module, x: Tensor, max_patches: int | None, seed: int) -> tuple[dict, dict]:
    """One forward pass: each layer's patches (drawn as it runs, so no activation is kept), and
    each convolution's BatchNorm when one takes the convolution's output itself."""
    layers = recos_layers(model)
    found: dict[str, Tensor] = {}
    follows: dict[str, nn.Module] = {}
    last: list[Any] = [None, None]
    generator = torch.Generator().manual_seed(seed)

    def take(name, layer):
        limit = _budget(layer, max_patches)
        return lambda _m, args: found.__setitem__(
            name, patches(layer, args[0].detach(), max_patches=limit, generator=generator)
        )

    def produced(name):
        return lambda _m, _args, out: last.__setitem__(slice(None), [name, out])

    def consumed(bn):
        return lambda _m, args: follows.__setitem__(last[0], bn) if args[0] is last[1] else None

    hooks = [layer.register_forward_pre_hook(take(name, layer)) for name, layer in layers]
    hooks += [layer.register_forward_hook(produced(name)) for name, layer in layers if isinstance(layer, CONV_TYPES)]
    hooks += [m.register_forward_pre_hook(consumed(m)) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    forward_with_hooks(model, x, hooks)
    return found, follows


def _histogram(cos: Tensor, bins: int) -> list[int]:
    return torch.histc(cos.float(), bins, -1, 1).long().tolist()


def _rectified(c: dict[str, Tensor], bins: int) -> dict[str, Any]:
    """Histogram of ``cos theta``, the share of negative correlations, and the share of the
    response's energy they carry (what a ReLU discards)."""
    cos = c["cos"]
    y2 = (c["x_norm"] * c["a_norm"] * cos).square()
    total = float(y2.sum())
    return {
        "hist": _histogram(cos, bins),
        "negative": float((cos < 0).double().mean()) if cos.numel() else 0.0,
        "negative_energy": float(y2[cos < 0].sum()) / total if total > 0 else 0.0,
        "mean_cos": float(cos.mean()) if cos.numel() else 0.0,
    }


def _families(layer: nn.Module, X: Tensor, bins: int) -> dict[str, Any]:
    """Per ACL family: its kernels' correlations (without bias) and their Gram statistics."""
    A, _ = anchors(layer)
    out = {}
    for name, mask in family_masks(layer).items():
        part = A * mask.to(A)
        c = correlations(part, X, mode="plain")
        keep = c["a_norm"] > 0
        c = {"cos": c["cos"][:, keep], "x_norm": c["x_norm"][:, keep], "a_norm": c["a_norm"][keep]}
        out[name] = {**_rectified(c, bins), **gram_stats(part)}
    return out


def _budget(layer: nn.Module, max_patches: int | None) -> int | None:
    A, _ = anchors(layer)
    work = max(1, A.shape[1] * A.shape[2] * A.shape[0])
    cap = max(MIN_PATCHES, WORK // work)
    return cap if max_patches is None else min(max_patches, cap)


def _layer_view(layer: nn.Module, X: Tensor, bn: nn.Module | None, first: bool, bins: int) -> dict[str, Any]:
    A, b = anchors(layer, bn)  # the correlations the activation after the BatchNorm sees
    view: dict[str, Any] = {"patches": X.shape[1], "bias": _rectified(correlations(A, X, b, "bias"), bins)}
    view.update(gram_stats(anchors(layer)[0]))
    if first:
        view["mean"] = _rectified(correlations(anchors(layer)[0], X, None, "mean"), bins)
    if isinstance(layer, AnalyticConv2d):
        view["families"] = _families(layer, X, bins)
    return view


def analyse(model: nn.Module, x: Tensor, *, max_patches: int | None = 2048, bins: int = 40, seed: int = 0) -> dict:
    """The RECOS view of every convolution and linear layer of ``model`` on inputs ``x``.

    Per layer: its ``anchor_table`` row; ``bn``, the BatchNorm folded in when one takes the
    convolution's output directly; ``bias``: the correlations ``cos theta'`` with
    ``x' = (1, x)`` and ``a' = (b, a)`` (after that BatchNorm), as ``_rectified`` gives them
    (histogram over ``[-1, 1]``, ``negative``: share of negative correlations, which a ReLU
    after the layer zeroes, ``negative_energy``: their share of the response's energy,
    ``mean_cos``); for the first layer also ``mean`` (Eqs. 5-8, patch mean removed, no bias);
    the anchors' ``gram_stats``; for an ACL ``families``: the same per family, kernels
    alone. Patches: at most ``max_patches`` per layer, fewer for large layers (``WORK``),
    drawn with ``seed``.

    Args:
        model: a plain CNN or an AnaNN; run once, in its current mode, without gradients.
        x: inputs as the model takes them.
        max_patches: per layer (``None``: every position, still capped by ``WORK``).
        bins: histogram bins over ``cos theta`` in ``[-1, 1]`` (angles: 36 bins over 0..180).
        seed: which patches are drawn.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.Conv2d(6, 16, 5))
        >>> view = analyse(net, torch.randn(4, 1, 12, 12))
        >>> sorted(view["layers"]), view["layers"]["0"]["N"], 0 <= view["layers"]["2"]["bias"]["negative"] <= 1
        (['0', '2'], 26, True)
    """
    found, follows = _capture(model, x, max_patches, seed)
    names = {id(m): n for n, m in model.named_modules()}
    out: dict[str, Any] = {"bins": bins, "angle_bins": 36, "images": len(x), "layers": {}}
    modules = dict(recos_layers(model))
    for i, row in enumerate(anchor_table(model)):
        name = row["layer"]
        if name not in found:  # a layer the forward pass never ran
            continue
        bn = follows.get(name)
        view = _layer_view(modules[name], found[name], bn, i == 0, bins)
        out["layers"][name] = {**row, "bn": None if bn is None else names[id(bn)], **view}
    return out


def negate_first_layer(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (ACLs baked) whose first layer's weights are negated, its bias kept.

    The paper's C1 experiment: on inputs reflected about their mean (``2 mean - x``; ``-x`` for
    standardised inputs) it computes exactly what ``model`` computes on ``x``, since
    ``(-W)(-x) + b = W x + b`` term by term (zero padding included).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
        >>> x = torch.randn(2, 1, 4, 4)
        >>> torch.equal(negate_first_layer(net)(-x), net(x))
        True
    """
    from acl.conversion import bake

    out = bake(model)
    layers = recos_layers(out)
    if not layers:
        raise ValueError("negate_first_layer: the model has no convolution or linear layer")
    with torch.no_grad():
        layers[0][1].weight.neg_()
    return out


def first_pair(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """``composite_check`` of the model's first two stacked convolutions, found by running it on ``x``.

    The pair: the first convolution, and the next one in run order whose input has the
    first one's channels and a size that divides its output's (the ratio is the
    subsampling that stands in for pooling). BatchNorms that take either output directly
    are folded in. Dilated pairs and strings other than ``valid`` as padding are skipped.

    Returns:
        ``{"first", "second", "subsample", **composite_check}``, or ``{"skipped": why}``.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5))
        >>> c = first_pair(net, torch.randn(2, 1, 32, 32))
        >>> c["first"], c["second"], c["subsample"], c["kernel"]
        ('0', '3', 2, [16, 1, 13, 13])
    """
    convs = [(n, m) for n, m in recos_layers(model) if isinstance(m, CONV_TYPES)]
    seen: dict[str, tuple] = {}
    hooks = [m.register_forward_hook(_shapes(n, seen)) for n, m in convs]
    forward_with_hooks(model, x, hooks)
    ran = [(n, m) for n, m in convs if n in seen]
    if len(ran) < 2:
        return {"skipped": "fewer than two convolutions"}
    (name1, conv1), (first_input, out1) = ran[0], seen[ran[0][0]]
    pick = next((nm for nm in ran[1:] if _stacks(out1, seen[nm[0]][0].shape)), None)
    if pick is None:
        return {"skipped": f"no convolution takes {name1}'s {out1[1]} channels at a size dividing its output's"}
    name2, conv2 = pick
    step = out1[2] // seen[name2][0].shape[2]
    _, follows = _capture(model, x[:1], 1, 0)
    try:
        check = composite_check(
            conv1, conv2, first_input, subsample=step, first_bn=follows.get(name1), second_bn=follows.get(name2)
        )
    except ValueError as e:
        return {"skipped": str(e)}
    return {"first": name1, "second": name2, "subsample": step, **check}


def _shapes(name: str, seen: dict[str, tuple]):
    def hook(_m, args, out):
        if name not in seen:  # a module run twice: its first call
            seen[name] = (args[0].detach().clone(), tuple(out.shape))

    return hook


def _stacks(out_shape: tuple, in_shape: tuple) -> bool:
    """A second convolution's input ``in_shape`` can be the first one's output ``out_shape`` subsampled."""
    c, h, w = out_shape[1:]
    c2, h2, w2 = in_shape[1:]
    return c == c2 and h2 > 0 and w2 > 0 and h % h2 == 0 and w % w2 == 0 and h // h2 == w // w2
