"""Kernel mosaics of the first ACLs (after training, and before where known) and what the ACLs learned.

Report key ``interpretability`` (``pipeline.interpretability``).
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "mosaics"
TITLE = "kernel mosaics and interpretability"
MAX_MOSAICS = 8
"""Mosaic charts per run: the first ACLs in module order (a DenseNet-121 has 120)."""
MAX_MOSAIC_KERNELS = 4096
"""Larger layers get no chart: one tile per kernel, so a 512x512 layer would be a 30000-pixel-square image."""


def run(ctx: RunContext) -> StageResult:
    import torch

    import acl
    from pipeline import interpretability

    layers = acl.acl_layers(ctx.model)
    charted = [(n, layer) for n, layer in layers if layer.spec.total <= MAX_MOSAIC_KERNELS][:MAX_MOSAICS]
    if len(layers) > len(charted):
        ctx.log(
            f"      kernel mosaics for the first {len(charted)} ACLs of at most "
            f"{MAX_MOSAIC_KERNELS} kernels; {len(layers) - len(charted)} not charted"
        )
    files = {}
    for name, layer in charted:
        fname = f"mosaic-{name.replace('.', '_')}.png"
        weight = layer.weight.detach().float().numpy()
        rep.plot_mosaic(name, weight, layer.spec.kinds(), str(layer.spec), ctx.staging / fname)
        files[f"mosaic:{name}"] = fname
    inside = interpretability.measure(
        ctx.model, torch.from_numpy(ctx.x_test), ctx.initial, ctx.staging, mosaic_layers=[n for n, _ in charted]
    )
    for name, entry in inside["layers"].items():
        if "initial_mosaic" in entry:
            files[f"mosaic-initial:{name}"] = entry["initial_mosaic"]
    return StageResult(sections={"interpretability": inside}, files=files)


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.mosaics_section(report) if "files" in report else []
