"""Spatial-kernel saliency of the trained model (ExplainFix Eq. 4, ``acl.kernel_saliency``): the report's share tables.

Runs after training (and on a loaded checkpoint), on ``MINIBATCHES`` minibatches of
``BATCH`` training images (the paper's footnote 5: 15 of 4), picked by a permutation
seeded with ``--seed``, without augmentation. Variant ``weight_grad`` (Eq. 4 itself).
Fills ``ctx.saliency`` (the ``acl.Saliency``) for the ExplainSteer stage.

Report key ``saliency``: null when the model has no spatial convolution, else
``{variant, minibatches, batch_size, seconds, total, layers: {name: {kernels, share,
kernel_share, families?}}, families: {name: {share, kernel_share}}, top: [...],
bottom: [...]}``. ``share`` is the layer's (family's) part of the model's summed
saliency, ``kernel_share`` its part of the spatial kernels: a share above the kernel
share means kernels more salient than the average one. ``top``/``bottom``: the
``SHOWN`` most and least salient kernels, ``{layer, out, in, family, saliency, share}``.
"""

from __future__ import annotations

from typing import Any

from pipeline.stages.base import RunContext, StageResult

NAME = "saliency"
TITLE = "spatial-kernel saliency (ExplainFix)"
MINIBATCHES = 15
BATCH = 4
SHOWN = 5
MAX_ROWS = 24
"""Layers listed in ``report.md`` (a DenseNet-121 has 120 spatial convolutions); ``report.json`` has all."""


def _training_images(data, count: int, seed: int):
    """``count`` standardised training images and labels, picked by a permutation seeded with ``seed``."""
    import torch

    pick = torch.randperm(data.train_size, generator=torch.Generator().manual_seed(seed))[:count]
    items = [data.train_set[int(i)] for i in pick]
    x = torch.stack([torch.as_tensor(x) for x, _ in items])
    y = torch.as_tensor([int(y) for _, y in items])
    return data.normalize(x), y


def run(ctx: RunContext) -> StageResult:
    import time

    import acl

    if not _has_spatial(ctx.model):
        return StageResult("not-available", "the model has no spatial convolution", sections={"saliency": None})
    began = time.perf_counter()
    batch = min(BATCH, ctx.data.train_size)  # a training split smaller than 60 images: fewer minibatches
    count = min(MINIBATCHES, ctx.data.train_size // batch)
    x, y = _training_images(ctx.data, count * batch, ctx.cfg.seed)
    ctx.saliency = acl.kernel_saliency(ctx.model, x, y, minibatches=count, batch_size=batch)
    doc = describe(ctx.saliency)
    doc["seconds"] = time.perf_counter() - began
    ctx.log(
        f"      saliency of {sum(v['kernels'] for v in doc['layers'].values())} spatial kernels over {count} "
        f"minibatches of {batch} training images ({doc['seconds']:.1f} s)"
    )
    return StageResult(sections={"saliency": doc})


def _has_spatial(model) -> bool:
    from acl.steering import spatial_layers

    return bool(spatial_layers(model))


def describe(s) -> dict[str, Any]:
    """``report.json``'s ``saliency`` (module docstring) from an ``acl.Saliency``, minus ``seconds``."""
    summary = s.summary()
    n_all = sum(k.numel() for k in s.kernels.values())
    layers = {}
    for name, entry in summary["layers"].items():
        layers[name] = {**entry, "kernel_share": entry["kernels"] / n_all}
        layers[name].pop("sum")
    counts: dict[str, int] = {}
    for kinds in s.families.values():
        for sym in kinds:
            counts[sym] = counts.get(sym, 0) + 1
    names = _family_names()
    in_acls = sum(counts.values())
    families = {
        names[sym]: {"share": summary["families"].get(names[sym], 0.0), "kernel_share": c / in_acls}
        for sym, c in counts.items()
    }
    top, bottom = _extremes(s, summary["total"])
    return {
        "variant": s.variant,
        "minibatches": s.minibatches,
        "batch_size": s.batch_size,
        "total": summary["total"],
        "layers": layers,
        "families": dict(sorted(families.items(), key=lambda kv: -kv[1]["share"])),
        "top": top,
        "bottom": bottom,
    }


def _family_names() -> dict[str, str]:
    from acl.families import FAMILIES

    return {sym: f.name for sym, f in FAMILIES.items()}


def _extremes(s, total: float) -> tuple[list[dict], list[dict]]:
    """The ``SHOWN`` most and least salient kernels over the model, ties in module and mosaic order."""
    import torch

    names = list(s.kernels)
    scores = torch.cat([s.kernels[n].flatten() for n in names])
    where = [(n, k) for n in names for k in range(s.kernels[n].numel())]
    fam = _family_names()

    def entry(idx: int) -> dict:
        name, k = where[idx]
        cin = s.kernels[name].shape[1]
        kinds = s.families.get(name)
        value = float(scores[idx])
        return {
            "layer": name,
            "out": k // cin,
            "in": k % cin,
            "family": fam[kinds[k]] if kinds else None,
            "saliency": value,
            "share": value / total if total > 0 else 0.0,
        }

    shown = min(SHOWN, len(where))
    most = torch.argsort(scores, descending=True, stable=True)[:shown].tolist()
    least = torch.argsort(scores, stable=True)[:shown].tolist()
    return [entry(i) for i in most], [entry(i) for i in least]


def markdown(report: dict[str, Any]) -> list[str]:
    s = report.get("saliency")
    if not s:
        return []
    n_all = sum(v["kernels"] for v in s["layers"].values())
    out = [
        "",
        "## Spatial-kernel saliency (ExplainFix)",
        "",
        f"Eq. 4 ({s['variant'].replace('_', ' x ')}) of each of the {n_all} spatial kernels over {s['minibatches']} "
        f"minibatches of {s['batch_size']} training images ({s['seconds']:.1f} s). *Share*: part of the model's "
        "summed saliency; *kernel share*: part of its spatial kernels. A share above the kernel share: kernels "
        "more salient than average.",
        "",
        "| layer | kernels | share | kernel share | families (share of the layer) |",
        "|---|---|---|---|---|",
    ]
    for name, e in list(s["layers"].items())[:MAX_ROWS]:
        fams = ", ".join(f"{k} {v:.2f}" for k, v in (e.get("families") or {}).items()) or "plain"
        out.append(f"| {name} | {e['kernels']} | {e['share']:.3f} | {e['kernel_share']:.3f} | {fams} |")
    if len(s["layers"]) > MAX_ROWS:
        out.append(f"| ... {len(s['layers']) - MAX_ROWS} more in report.json | | | | |")
    if s["families"]:
        out += ["", "| ACL family | share of the ACLs' saliency | share of the ACLs' kernels |", "|---|---|---|"]
        out += [f"| {k} | {v['share']:.3f} | {v['kernel_share']:.3f} |" for k, v in s["families"].items()]
    for title, key in (("Most salient kernels", "top"), ("Least salient kernels", "bottom")):
        out += ["", f"{title}: " + "; ".join(_kernel(k) for k in s[key]) + "."]
    return out


def _kernel(k: dict) -> str:
    fam = f" {k['family']}" if k["family"] else ""
    return f"{k['layer']} ({k['out']}, {k['in']}){fam} {k['share']:.2%}"
