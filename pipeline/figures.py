"""Figures of the paper reproduced from this project's results (matplotlib, Agg backend).

- ``plot_fit``: Fig. 3, target kernels beside their analytic models (``acl.fit``) and the residual.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from acl.families import FAMILIES

__all__ = ["FAMILY_COLOURS", "FAMILY_NAMES", "plot_fit", "plot_mosaic"]

FAMILY_COLOURS = {sym: f.colour for sym, f in FAMILIES.items()}  # Fig. 4a's frame colours
FAMILY_NAMES = {sym: f.name for sym, f in FAMILIES.items()}


def _array(kernels: torch.Tensor | np.ndarray) -> np.ndarray:
    a = kernels.detach().cpu().double().numpy() if isinstance(kernels, torch.Tensor) else np.asarray(kernels, float)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"kernels must have shape [Co, Ci, h, w] or [N, h, w], got {list(a.shape)}")
    return a


def _checked_banks(targets, fitted, rgb: bool | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``plot_fit``'s banks as ``[Co, Ci, h, w]`` arrays of one shape, and whether rows are colour images."""
    t, f = _array(targets), _array(fitted)
    if t.shape != f.shape:
        raise ValueError(f"targets {list(t.shape)} and fitted {list(f.shape)} differ in shape")
    ci = t.shape[1]
    rgb = ci == 3 if rgb is None else rgb
    if rgb and ci != 3:
        raise ValueError(f"rgb needs 3 input channels, got {ci}")
    return t, f, rgb


def plot_fit(
    targets: torch.Tensor | np.ndarray,
    fitted: torch.Tensor | np.ndarray,
    path: str | Path,
    *,
    kinds: Sequence[str] | None = None,
    errors: Sequence[float] | torch.Tensor | None = None,
    rgb: bool | None = None,
    max_rows: int = 12,
    title: str | None = None,
) -> Path:
    """Fig. 3: each target kernel, its analytic model and the residual, one row per kernel.

    The three tiles of a row share one colour scale (symmetric about zero, the
    target's largest magnitude), so the residual reads against the target it is
    part of; a model that cannot match the target's amplitude shows it. With
    ``rgb``, a row is an output channel's three input kernels shown as one colour
    image (as Fig. 3 shows ResNet-50's first layer), each image mapped to 0..1 by
    the target's range.

    Args:
        targets: ``[Co, Ci, h, w]`` (a conv weight) or ``[N, h, w]``.
        fitted: the model's kernels, the same shape (e.g. ``layer.weight`` of ``acl.fit``).
        path: the PNG to write.
        kinds: family symbol per kernel (``FitReport.kinds``): the row label and
            the fitted tile's frame colour (Fig. 4a's colours).
        errors: relative error per kernel (``FitReport.rel_error``), printed per row.
        rgb: one colour image per output channel; ``None``: when ``Ci == 3``.
        max_rows: rows drawn at most (the first kernels; the title says how many).
        title: figure title; default says what is shown.

    Returns:
        ``path``.

    Raises:
        ValueError: shapes that differ or are not kernel banks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, f, rgb = _checked_banks(targets, fitted, rgb)
    h, w = t.shape[2:]
    err = None if errors is None else np.asarray(torch.as_tensor(errors).detach().cpu(), float).reshape(-1)
    rows_t, rows_f, labels, kind_of, err = _fit_rows(t, f, kinds, err, rgb)
    n = min(len(rows_t), max_rows)
    fig, axes = plt.subplots(n, 3, figsize=(5.2, 1.55 * n + 0.7), squeeze=False)
    for r in range(n):
        _draw_fit_tiles(axes[r], rows_t[r], rows_f[r], rgb)
        _label_fit_row(axes[r], labels[r], kind_of[r], None if err is None else err[r])
    for c, name in enumerate(("target", "analytic model", "residual")):
        axes[0, c].set_title(name, fontsize=8)
    fig.suptitle(title or _fit_title(n, len(rows_t), rgb, h, w), fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fit_title(n: int, total: int, rgb: bool, h: int, w: int) -> str:
    what = "output channels" if rgb else "kernels"
    shown = f"first {n} of {total} {what}" if n < total else f"{n} {what}"
    return f"Targets and their analytic models: {shown}, {h}x{w}"


def _fit_rows(t: np.ndarray, f: np.ndarray, kinds, err: np.ndarray | None, rgb: bool):
    """Per row: target, fit (``[h, w]``, or ``[h, w, 3]`` with ``rgb``), label, family, relative error."""
    co, _, h, w = t.shape
    if rgb:
        rows_t, rows_f = t.transpose(0, 2, 3, 1), f.transpose(0, 2, 3, 1)  # [Co, h, w, 3]
        labels = [f"out {i}" for i in range(co)]
        if err is not None:  # one error per image: the norm of the three kernels' errors together
            err = np.sqrt(
                (err.reshape(co, 3) ** 2 * (t.reshape(co, 3, -1) ** 2).sum(-1)).sum(1) / (t**2).reshape(co, -1).sum(1)
            )
        return rows_t, rows_f, labels, [None] * co, err
    rows_t, rows_f = t.reshape(-1, h, w), f.reshape(-1, h, w)
    labels = [f"#{i}" for i in range(len(rows_t))]
    kind_of = list(kinds) if kinds is not None else [None] * len(rows_t)
    return rows_t, rows_f, labels, kind_of, err


def _draw_fit_tiles(axes_row, tk: np.ndarray, fk: np.ndarray, rgb: bool) -> None:
    """Target, model and residual on one colour scale, the target's (see ``plot_fit``)."""
    tiles = (tk, fk, tk - fk)
    if rgb:
        lo, hi = float(tk.min()), float(tk.max())
        span = hi - lo if hi > lo else 1.0
        for c, tile in enumerate(tiles):
            shifted = tile - lo if c < 2 else tile + (hi - lo) / 2  # residual centred on mid-grey
            axes_row[c].imshow(np.clip(shifted / span, 0, 1), interpolation="nearest")
    else:
        vmax = float(np.abs(tk).max()) or 1.0
        for c, tile in enumerate(tiles):
            axes_row[c].imshow(tile, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")


def _label_fit_row(axes_row, label: str, kind: str | None, err: float | None) -> None:
    """The row's label (family, relative error), no ticks, and the model tile framed in its family's colour."""
    label += f" {FAMILIES[kind].name}" if kind in FAMILIES else ""
    if err is not None:
        label += f"\nrel err {err:.3f}"
    axes_row[0].set_ylabel(label, fontsize=7)
    for c in range(3):
        axes_row[c].set_xticks([])
        axes_row[c].set_yticks([])
    if kind in FAMILIES:
        for side in axes_row[1].spines.values():
            side.set_edgecolor(FAMILIES[kind].colour)
            side.set_linewidth(2)


def plot_mosaic(layer_name: str, weight: np.ndarray, kinds: list[str], spec: str, path: Path) -> Path:
    """Fig. 4a: every kernel of an ACL as a tile, framed by its family's colour.

    Tiles are laid out ``Co`` rows by ``Ci/groups`` columns, each kernel scaled to its
    own range (grey: black = most negative, white = most positive).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch, Rectangle

    co, ci, h, w = weight.shape
    cols = ci
    rows = co
    if ci == 1:  # a single input channel: wrap the output channels into a near-square grid
        cols = int(np.ceil(np.sqrt(co)))
        rows = int(np.ceil(co / cols))
    cell = 0.42
    fig, ax = plt.subplots(figsize=(max(4.0, cols * cell + 1.5), max(2.5, rows * cell + 1.2)))
    pad = 1
    canvas = np.full((rows * (h + 2 * pad), cols * (w + 2 * pad)), np.nan)
    flat = weight.reshape(co * ci, h, w)
    for k, kern in enumerate(flat):
        r, c = divmod(k, cols)
        lo, hi = float(kern.min()), float(kern.max())
        norm = (kern - lo) / (hi - lo) if hi > lo else np.full_like(kern, 0.5)
        y0, x0 = r * (h + 2 * pad) + pad, c * (w + 2 * pad) + pad
        canvas[y0 : y0 + h, x0 : x0 + w] = norm
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    for k, kind in enumerate(kinds):
        r, c = divmod(k, cols)
        y0, x0 = r * (h + 2 * pad) + pad - 0.5, c * (w + 2 * pad) + pad - 0.5
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), w + 1, h + 1, fill=False, edgecolor=FAMILY_COLOURS[kind], linewidth=1.2)
        )
    ax.set_axis_off()
    present = [k for k in FAMILY_COLOURS if k in set(kinds)]
    ax.legend(
        handles=[Patch(facecolor="none", edgecolor=FAMILY_COLOURS[k], label=FAMILY_NAMES[k]) for k in present],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.01),
        ncol=min(len(present), 6),
        fontsize=7,
        frameon=False,
    )
    ax.set_title(f"{layer_name}: {spec}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path
