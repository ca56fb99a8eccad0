"""The report's interpretability section: per ACL, its AKPs, its mosaic before and after training, and family shares.

``measure`` gathers the numbers (``acl.interpret`` does the work) and draws the
mosaics; ``markdown`` renders them. Initial kernels exist only when this run
trained the model: a model loaded with ``--checkpoint`` says so instead.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import acl
from acl.families import FAMILIES
from acl.interpret import akp_summary, family_energy
from pipeline.figures import plot_mosaic

__all__ = ["ENERGY_IMAGES", "initial_kernels", "markdown", "measure", "mosaic_lines"]

# Test images the family shares are measured on. Each image gives every output pixel
# of every channel, so a few dozen settle a share; the cost is one conv per family per
# ACL: 9.6 s per 16 images on an AnaNN-ResNet-18 at 224 px (2 cores), where 256 took minutes.
ENERGY_IMAGES = 32


def initial_kernels(model: nn.Module) -> dict[str, Tensor]:
    """Every ACL's kernels as they are now (call before training), by layer name."""
    with torch.no_grad():
        return {name: layer.kernels().detach().cpu().clone() for name, layer in acl.acl_layers(model)}


def measure(
    model: nn.Module,
    x_test: Tensor,
    initial: dict[str, Tensor] | None,
    out_dir: Path,
    *,
    mosaic_layers: Collection[str],
    no_initial_reason: str = "the model was loaded with --checkpoint, so its initial kernels are unknown",
) -> dict[str, Any]:
    """The section for ``report.json``; writes ``mosaic-<layer>-initial.png`` for each of ``mosaic_layers``.

    Args:
        model: the trained model, in eval mode.
        x_test: test images; the first ``ENERGY_IMAGES`` are used.
        initial: ``initial_kernels`` taken before training, or ``None``.
        out_dir: where the figures go (the run's staging folder).
        mosaic_layers: the layers that get an initial-mosaic figure (those that get a trained one).
        no_initial_reason: said in place of the initial mosaics when ``initial`` is ``None``.
    """
    layers = acl.acl_layers(model)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    energy = family_energy(model, x_test[:ENERGY_IMAGES].to(device))
    section: dict[str, Any] = {"energy_images": min(len(x_test), ENERGY_IMAGES), "layers": {}}
    if initial is None:
        section["initial_mosaics"] = f"not available: {no_initial_reason}"
    for name, layer in layers:
        entry: dict[str, Any] = {"spec": str(layer.spec), "akps": akp_summary(layer), **energy.get(name, {})}
        if initial is not None and name in mosaic_layers and name in initial:
            fname = f"mosaic-{name.replace('.', '_')}-initial.png"
            w = initial[name].reshape(layer.out_channels, -1, *layer.kernel_size).numpy()
            plot_mosaic(f"{name} at initialisation", w, layer.spec.kinds(), str(layer.spec), out_dir / fname)
            entry["initial_mosaic"] = fname
        section["layers"][name] = entry
    return section


def _num(v: float) -> str:
    return f"{v:.3g}"


def mosaic_lines(section: dict[str, Any] | None, trained_mosaics: dict[str, str]) -> list[str]:
    """The trained mosaics beside the initial ones where those were drawn; ``trained_mosaics``: layer -> figure."""
    layers = (section or {}).get("layers", {})
    pairs = [(name, e["initial_mosaic"]) for name, e in layers.items() if "initial_mosaic" in e]
    if not pairs:
        lines = [f"![{name}]({rel})" for name, rel in trained_mosaics.items()]
        reason = (section or {}).get("initial_mosaics")
        return [*lines, *([] if reason is None else ["", f"Initial mosaics: {reason}."])]
    lines = ["| layer | at initialisation | after training |", "|---|---|---|"]
    for name, first in pairs:
        last = trained_mosaics.get(name)
        lines.append(f"| `{name}` | ![]({first}) | " + (f"![]({last})" if last else "-") + " |")
    return lines


def markdown(section: dict[str, Any] | None) -> list[str]:
    """Report lines: each family's share of every ACL's output energy, and the AKP table."""
    if not section or not section.get("layers"):
        return []
    lines = ["", "## Inside the ACLs", ""]
    present = {f for e in section["layers"].values() for f in e.get("share", {})}
    families = [f.name for f in FAMILIES.values() if f.name in present]  # the registry's order
    lines += [
        f"Share of each layer's output energy (without bias) produced by each family's kernels alone, on "
        f"{section['energy_images']} test images. A convolution is linear in its kernels, so the layer's output is "
        "the sum of the families' parts; *cross* is the part of the output energy due to their interference.",
        "",
        "| layer | spec | " + " | ".join(families) + " | cross |",
        "|---|---|" + "---|" * len(families) + "---|",
    ]
    for name, e in section["layers"].items():
        share = e.get("share", {})
        cells = [f"{share[f] * 100:.1f} %" if f in share else "-" for f in families]
        cross = f"{e['cross'] * 100:+.1f} %" if "cross" in e else "-"
        lines.append(f"| `{name}` | `{e['spec']}` | " + " | ".join(cells) + f" | {cross} |")
    lines += [
        "",
        "AKPs after training (scales in pixels as the formulas use them, `clamp(|s|)`; angles in radians as stored):",
        "",
        "| layer | family | AKP | unit | kernels | min | median | max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, e in section["layers"].items():
        for r in e["akps"]:
            lines.append(
                f"| `{name}` | {r['family']} | {r['akp']} | {r['unit']} | {r['n']} | {_num(r['min'])} | "
                f"{_num(r['median'])} | {_num(r['max'])} |"
            )
    return lines
