"""ExplainFix's Table 3 / Table M.1 in the results: ours (``explainfix_pruning``'s records) beside the paper's."""

from __future__ import annotations

from typing import Any

from pipeline.experiments.explainfix_pruning import TIMING_ROUNDS
from pipeline.experiments.tables import stat

__all__ = ["TIMING_NOTE", "markdown", "pruning_rows"]

TIMING_NOTE = (
    f"seconds per training epoch on this CPU, one thread, the least of {TIMING_ROUNDS} epochs of each model "
    "(alternated, same data, same run)"
)


def _row(cell, recs: list[dict]) -> dict[str, Any]:
    pr = [r["pruning"] for r in recs if r.get("pruning")]
    secs = [p["seconds_per_epoch"] for p in pr]
    return {
        "cell": cell.id,
        "arch": cell.arch,
        "percent": cell.prune,
        "finetune_epochs": cell.prune_finetune,
        "zeroed_kernels": pr[0]["zeroed_kernels"] if pr else None,
        "spatial_kernels": pr[0]["spatial_kernels"] if pr else None,
        "parameters": pr[0]["parameters"] if pr else None,
        "fraction_pruned": stat([p["fraction_pruned"] for p in pr]),
        "fraction_spatial_pruned": stat([p["fraction_spatial_pruned"] for p in pr]),
        "accuracy_trained": stat([r["accuracy"] for r in recs if r.get("pruning")]),
        "accuracy_zeroed": stat([p["accuracy_zeroed"] for p in pr]),
        "accuracy_finetuned": stat([p["accuracy_finetuned"] for p in pr]),
        "seconds_per_epoch": {
            "pruned": stat([s["pruned"] for s in secs]),
            "not_pruned": stat([s["not_pruned"] for s in secs]),
            "saving": stat([1 - s["pruned"] / s["not_pruned"] for s in secs]),
        },
    }


def pruning_rows(grid, records: dict) -> dict[str, Any]:
    """Table 3 / M.1, ours: one row per pruning cell (mean ± std over seeds); timings kept under ``seconds_per_epoch``."""
    rows = []
    for cell in grid.cells:
        if cell.prune is None:
            continue
        recs = [records[(cell.id, s)] for s in grid.seeds if (cell.id, s) in records]
        rows.append(_row(cell, recs))
    if not rows:
        return {"not_available": "not available: this grid has no pruning cell", "rows": []}
    return {"rows": rows, "timing": TIMING_NOTE}


def _fmt(s: dict, scale: float = 1.0, digits: int = 2) -> str:
    if s["mean"] is None:
        return "—"
    std = f" ± {s['std'] * scale:.{digits}f}" if s.get("std") is not None else ""
    return f"{s['mean'] * scale:.{digits}f}{std}"


def markdown(doc: dict[str, Any]) -> list[str]:
    """The Table 3 / Table M.1 section: ours, then the paper's (other models and data, stated)."""
    p = doc["pruning"]
    out = ["", "## Table 3 / Table M.1: ChannelPrune", ""]
    if not p["rows"]:
        out += [f"{p['not_available']}.", ""]
    else:
        out += [
            "Ours: GHaar-fixed spatial filters, trained, Eq. 4 saliency, x % of the spatial kernels zeroed, channels "
            "removed (acl.channel_prune), FillZero, fine-tuned; mean ± std over seeds. Top-1 % on the test split. "
            f"Seconds: {p['timing']}, not the paper's GPU.",
            "",
            "| model | % zeroed (kernels) | fraction of parameters pruned | of spatial parameters | top-1 trained "
            "| after zeroing | fine-tuned (epochs) | s/epoch pruned | not pruned | saving |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in p["rows"]:
            s = r["seconds_per_epoch"]
            out.append(
                f"| {r['arch']} | {r['percent']:g} ({r['zeroed_kernels']} of {r['spatial_kernels']}) "
                f"| {_fmt(r['fraction_pruned'], digits=3)} | {_fmt(r['fraction_spatial_pruned'], digits=3)} "
                f"| {_fmt(r['accuracy_trained'])} | {_fmt(r['accuracy_zeroed'])} "
                f"| {_fmt(r['accuracy_finetuned'])} ({r['finetune_epochs']}) | {_fmt(s['pruned'], digits=3)} "
                f"| {_fmt(s['not_pruned'], digits=3)} | {_fmt(s['saving'], 100, 0)} % |"
            )
    return out + _md_paper(doc)


def _md_paper(doc: dict[str, Any]) -> list[str]:
    paper = doc["paper"]
    out = [
        "",
        "Paper (CheXpert chest x-rays, ResNet50 / DenseNet121 / EfficientNet-b0 on a GPU; other data and models than "
        "ours: compare the trends, fraction pruned growing with % zeroed and pruned epochs faster, not the values):",
        "",
        "| model | % zeroed | fraction of parameters pruned (Table M.1) | s/epoch pruned | not pruned | saving (Table 3) |",
        "|---|---|---|---|---|---|",
    ]
    for r in paper["table_m1"]:
        out.append(f"| {r['model']} | {r['zeroed']:g} | {r['pruned']:.2f} | | | |")
    for m, v in paper["table3_seconds"].items():
        saving = 1 - v["pruned"] / v["not_pruned"]
        out.append(f"| {m} | | | {v['pruned']} | {v['not_pruned']} | {saving:.0%} |")
    return out
