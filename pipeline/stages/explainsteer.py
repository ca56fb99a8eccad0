"""ExplainSteer spectra of the trained model (ExplainFix Eqs. 3, 5, 6, ``acl.model_spectra``) and ``explainsteer.png``.

After the saliency stage: every spatial convolution (plain or ACL) gets its spectra
without saliency (``w = 1/n``) and, when the saliency stage ran, weighted by each
kernel's share of the model's saliency. Report key ``explainsteer``: null without a
spatial convolution, else ``{"layers": {name: {kernel_size, kernels, e_d, e_1, e_0,
e_d_saliency, e_1_saliency, e_0_saliency}}}``, ``e_d`` in
display order (``acl.display_order``), ``e_0`` null for non-square kernels. The file
``explainsteer.png`` (``pipeline.steer_figure``) shows the e^(d) heatmaps.
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.base import RunContext, StageResult

NAME = "explainsteer"
TITLE = "ExplainSteer spectra (ExplainFix)"
FILE = "explainsteer.png"
MAX_ROWS = 24


def _lists(spectrum, suffix: str = "") -> dict[str, Any]:
    e_0 = spectrum.e_0
    return {
        f"e_d{suffix}": spectrum.displayed().tolist(),
        f"e_1{suffix}": spectrum.e_1.tolist(),
        f"e_0{suffix}": None if e_0 is None else e_0.tolist(),
    }


def _low_share(e_0: list[float] | None) -> float | None:
    """The lowest frequency's part of e^(0) (e^(0)[0] / sum): Observation 1's 'low frequencies first'."""
    if not e_0 or sum(e_0) <= 0:
        return None
    return e_0[0] / sum(e_0)


def run(ctx: RunContext) -> StageResult:
    import acl
    from acl.steering import spatial_layers
    from pipeline.steer_figure import plot_explainsteer

    if not spatial_layers(ctx.model):
        return StageResult("not-available", "the model has no spatial convolution", sections={"explainsteer": None})
    plain = acl.model_spectra(ctx.model)
    salient = acl.model_spectra(ctx.model, ctx.saliency) if ctx.saliency is not None else None
    layers = {}
    for name, spectrum in plain.items():
        entry = {"kernel_size": list(spectrum.kernel_size), "kernels": spectrum.kernels, **_lists(spectrum)}
        entry.update(_lists(salient[name], "_saliency") if salient else {})
        layers[name] = entry
    names = list(layers)
    plot_explainsteer(
        names,
        [layers[n]["e_d"] for n in names],
        [layers[n]["e_d_saliency"] for n in names] if salient else None,
        ctx.staging / FILE,
    )
    return StageResult(sections={"explainsteer": {"layers": layers}}, files={"explainsteer": FILE})


def markdown(report: dict[str, Any]) -> list[str]:
    doc = report.get("explainsteer")
    if not doc:
        return []
    weighted = any("e_d_saliency" in e for e in doc["layers"].values())
    out = [
        "",
        "## ExplainSteer (ExplainFix)",
        "",
        f"![ExplainSteer heatmaps]({FILE})",
        "",
        "e^(d) (Eq. 3): the mean absolute DCT-II coefficient of each basis kernel over a layer's kernels, in "
        "display order (low to high frequency); with saliency each kernel weighs its share of the model's "
        "saliency, so a layer's column also shows how much the layer matters. e^(0) (Eq. 6, square kernels): "
        "energy per 1-D frequency; *low* is e^(0)[0] / sum e^(0), the lowest frequency's part.",
        "",
        "| layer | kernel | kernels | low (no saliency) | low (saliency) | e^(0) no saliency |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in list(doc["layers"].items())[:MAX_ROWS]:
        low = _low_share(e["e_0"])
        low_s = _low_share(e.get("e_0_saliency")) if weighted else None
        e_0 = "n/a (not square)" if e["e_0"] is None else ", ".join(f"{v:.3g}" for v in e["e_0"])
        out.append(
            f"| {name} | {e['kernel_size'][0]}x{e['kernel_size'][1]} | {e['kernels']} | {_fmt(low)} | {_fmt(low_s)} "
            f"| {e_0} |"
        )
    if len(doc["layers"]) > MAX_ROWS:
        out.append(f"| ... {len(doc['layers']) - MAX_ROWS} more in report.json | | | | | |")
    return out


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"
