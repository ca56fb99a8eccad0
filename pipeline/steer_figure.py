"""``explainsteer.png``: ExplainSteer's e^(d) heatmaps (ExplainFix Fig. 12a), without and with saliency.

One panel per weighting: rows are the DCT-II basis kernels in display order (low to
high frequency, ``acl.display_order``), columns the spatial layers in module order.
Layers of smaller kernels leave their lower rows blank (a 3x3 layer beside a 5x5
one). Each panel has its own colour scale; below it, the column sums (how much each
layer weighs) as bars, as in the paper's figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_explainsteer"]

MAX_LABELLED = 40
"""More layers than this: columns labelled by index, not by name."""


def _matrix(columns: list[list[float]]) -> np.ndarray:
    rows = max(len(c) for c in columns)
    out = np.full((rows, len(columns)), np.nan)
    for j, col in enumerate(columns):
        out[: len(col), j] = col
    return out


def _panel(fig, grid_spec, names: list[str], columns: list[list[float]], title: str, first: bool) -> None:
    heat_ax = fig.add_subplot(grid_spec[0])
    bar_ax = fig.add_subplot(grid_spec[1], sharex=heat_ax)
    m = _matrix(columns)
    image = heat_ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=[heat_ax, bar_ax], fraction=0.04, pad=0.02)
    heat_ax.set_title(title, fontsize=10)
    if first:  # the panels share their rows; a second label would run into the first panel's colour bar
        heat_ax.set_ylabel("basis index (low -> high frequency)")
    bar_ax.bar(range(len(columns)), np.nansum(m, axis=0), color="tab:gray")
    bar_ax.set_ylabel("sum", fontsize=8)
    labels = names if len(names) <= MAX_LABELLED else [str(i) for i in range(len(names))]
    bar_ax.set_xticks(range(len(names)), labels, rotation=90, fontsize=7)
    heat_ax.tick_params(labelbottom=False)


def plot_explainsteer(
    names: list[str], plain: list[list[float]], salient: list[list[float]] | None, path: Path
) -> Path:
    """The heatmaps of ``plain`` (``w = 1/n``) and ``salient`` (saliency-weighted; None: one panel) e^(d) columns.

    Args:
        names: the layers, one per column.
        plain, salient: per layer, e^(d) in display order.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(plain, "e^(d) without saliency (w = 1/n)")]
    if salient is not None:
        panels.append((salient, "e^(d) with saliency (w = saliency / model total)"))
    width = min(24.0, 4.5 + 0.35 * len(names)) * len(panels)
    fig = plt.figure(figsize=(max(7.0, width), 6.0))
    outer = fig.add_gridspec(1, len(panels), wspace=0.35)
    for i, (columns, title) in enumerate(panels):
        inner = outer[i].subgridspec(2, 1, height_ratios=(4, 1), hspace=0.05)
        _panel(fig, inner, names, columns, title, first=i == 0)
    fig.suptitle("ExplainSteer (ExplainFix Eq. 3): DCT-II energy of each spatial layer's kernels", fontsize=11)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
