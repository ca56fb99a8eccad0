"""The report's "RECOS view" section: ``acl.recos.analyse`` as a table and a figure.

``measure`` gathers the numbers (on a few test images) and draws ``recos.png``: one
row per layer, the histogram of the rectified correlations ``cos theta`` (left; for an
ACL one curve per family) and of the angles between the layer's anchors (right).
``markdown`` renders the section from ``report.json`` alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FIGURE", "MAX_ROWS", "markdown", "measure", "plot"]

FIGURE = "recos.png"
MAX_ROWS = 12
"""Layers drawn at most (the first ones; every layer is in the table)."""
SMALL_IMAGES, LARGE_IMAGES = 64, 8
"""Test images analysed: 64 up to 64x64 pixels, 8 above (a 224-pixel ResNet-50 runs 53 layers)."""


def measure(model, x, out_dir: Path) -> dict[str, Any]:
    """The section for ``report.json``; writes ``FIGURE`` into ``out_dir``."""
    from acl import recos

    n = SMALL_IMAGES if x.shape[-1] <= 64 else LARGE_IMAGES
    view = recos.analyse(model, x[:n])
    view["pair"] = recos.first_pair(model, x[:2])
    plot(view, out_dir / FIGURE)
    return view


def _colours() -> dict[str, str]:
    from acl.families import FAMILIES

    return {f.name: f.colour for f in FAMILIES.values()}


def plot(view: dict[str, Any], path: Path) -> Path:
    """Per layer: the correlation histogram (per family for an ACL) and the anchors' angle histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = list(view["layers"].items())[:MAX_ROWS]
    fig, axes = plt.subplots(len(layers), 2, figsize=(8.0, 1.7 * len(layers) + 0.8), squeeze=False)
    colours = _colours()
    cos_edges = np.linspace(-1, 1, view["bins"] + 1)
    angle_edges = np.linspace(0, 180, view["angle_bins"] + 1)
    for (name, e), (left, right) in zip(layers, axes):
        parts = {"layer": {"hist": e["bias"]["hist"], "angles": e["angles"]}, **(e.get("families") or {})}
        for fam, part in parts.items():
            colour = colours.get(fam, "black")
            _density(left, cos_edges, part["hist"], colour, fam)
            _density(right, angle_edges, part["angles"], colour, fam)
        left.axvline(0, color="grey", lw=0.6)
        left.set_ylabel(f"{name}\n{e['kind']} {e['N']}/{e['K']}", fontsize=7)
        right.axvline(90, color="grey", lw=0.6)
        if e.get("families"):
            left.legend(fontsize=5, loc="upper left", frameon=False)
    axes[0][0].set_title("cos θ of patches and anchors (ReLU zeroes < 0)", fontsize=8)
    axes[0][1].set_title("angles between the layer's anchors (degrees)", fontsize=8)
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
        ax.set_yticks([])
    fig.subplots_adjust(left=0.09, right=0.98, top=1 - 0.45 / fig.get_figheight(), bottom=0.3 / fig.get_figheight())
    fig.subplots_adjust(hspace=0.35, wspace=0.08)  # not tight_layout: it measured every text, a second under load
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _density(ax, edges: np.ndarray, counts: list[int], colour: str, label: str) -> None:
    counts_a = np.asarray(counts, float)
    total = counts_a.sum()
    if total > 0:
        ax.stairs(counts_a / total, edges, color=colour, label=label, lw=1.0)


def _rank(e: dict[str, Any]) -> str:
    """Effective / numerical rank, and how many anchors they were measured on when not all."""
    sampled = e.get("sampled", e["anchors"])
    return f"{e['effective_rank']:.1f} / {e['rank']}" + (
        f" ({sampled} of {e['anchors']})" if sampled < e["anchors"] else ""
    )


def _pct(v: float) -> str:
    return f"{v * 100:.1f} %"


def markdown(section: dict[str, Any] | None, seconds: float | None) -> list[str]:
    """Report lines; ``seconds``: the stage's cost, from ``report.json``'s ``stages``."""
    if not section or not section.get("layers"):
        return []
    cost = f" Cost: {seconds:.2f} s." if seconds is not None else ""
    lines = [
        "",
        "## RECOS view",
        "",
        "Each convolution and linear layer as *anchor vectors* (its kernels, flattened; Kuo's RECOS model): its "
        "response to a patch x is ||x'|| ||a'|| cos θ', rectified by the ReLU after it. Correlations with "
        f"x' = (1, x), a' = (b, a) (the bias, and a BatchNorm taking the output folded in) on {section['images']} "
        f"test images; *negative*: the share of correlations a ReLU zeroes, *energy*: their share of the "
        f"response's energy. Coherence: largest |cos| between two anchors; rank: effective / numerical.{cost}",
        "",
        "| layer | kind | N | K | BN folded | patches | negative | energy | mean cos | coherence | rank |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in section["layers"].items():
        b = e["bias"]
        lines.append(
            f"| `{name}` | {e['kind']} | {e['N']} | {e['K']} | {e['bn'] or '-'} | {e['patches']} | "
            f"{_pct(b['negative'])} | {_pct(b['negative_energy'])} | {b['mean_cos']:+.3f} | "
            f"{e['coherence']:.3f} | {_rank(e)} |"
        )
    lines += _first_layer_lines(section) + _family_lines(section) + _pair_lines(section.get("pair") or {})
    return [*lines, "", f"![RECOS view]({FIGURE})"]


def _first_layer_lines(section: dict[str, Any]) -> list[str]:
    name, e = next(iter(section["layers"].items()))
    if "mean" not in e:
        return []
    m = e["mean"]
    return [
        "",
        f"First layer `{name}` as the paper augments it (N = {e['N']}: x' = (μ, x), a' = (-Σa, a), the patch "
        f"mean removed, no bias): {_pct(m['negative'])} negative correlations ({_pct(m['negative_energy'])} "
        f"of the energy), mean cos {m['mean_cos']:+.3f}.",
    ]


def _family_lines(section: dict[str, Any]) -> list[str]:
    rows = [(n, f, p) for n, e in section["layers"].items() for f, p in (e.get("families") or {}).items()]
    if not rows:
        return []
    lines = [
        "",
        "Per ACL family (an anchor restricted to that family's kernels, without bias):",
        "",
        "| layer | family | anchors | negative | energy | mean cos | coherence | rank |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, fam, p in rows:
        lines.append(
            f"| `{name}` | {fam} | {p['anchors']} | {_pct(p['negative'])} | {_pct(p['negative_energy'])} | "
            f"{p['mean_cos']:+.3f} | {p['coherence']:.3f} | {_rank(p)} |"
        )
    return lines


def _pair_lines(pair: dict[str, Any]) -> list[str]:
    if "skipped" in pair:
        return ["", f"Composite kernel: not available: {pair['skipped']}."]
    if not pair:
        return []
    k = pair["kernel"]
    return [
        "",
        f"Composite kernel of `{pair['first']}` and `{pair['second']}` (Eq. 21; subsampling by "
        f"{pair['subsample']} in place of the pooling between them, no activation): {k[0]} pixel-space anchors "
        f"of {k[1]}x{k[2]}x{k[3]}, stride {pair['stride'][0]}; against the real two-layer linear response on "
        f"{pair['positions']} positions: max abs error {pair['max_abs']:.1e}, max rel {pair['max_rel']:.1e}.",
    ]
