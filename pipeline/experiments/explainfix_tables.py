"""ExplainFix's results: Sec. 4.1 (initialisations vs learned), App. I (saliency sanity check), Table 3 / M.1.

Every number of ours is a mean over the grid's seeds with the sample standard
deviation (``tables.stat``); accuracies are top-1 % on the whole test split. Only what
a run's cell and seed determine goes in, so a resumed grid gives the same document, except the
pruning rows' ``seconds_per_epoch`` (measured on this CPU; a finished run's are read back as recorded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from export.atomic import atomic_output
from pipeline.experiments import paper_explainfix as paper
from pipeline.experiments.explainfix import METHODS
from pipeline.experiments.explainfix_pruning_table import markdown as pruning_markdown
from pipeline.experiments.explainfix_pruning_table import pruning_rows
from pipeline.experiments.grid import Grid
from pipeline.experiments.tables import _pm, stat, write_plot

__all__ = ["OUTPUTS", "RESULTS_FORMAT", "results", "to_markdown", "write_outputs"]

RESULTS_FORMAT = "acl-deploy/reproduce-explainfix-results/1"
OUTPUTS = ("results.json", "results.md", "saliency-sanity.png")
VARIANT_NAMES = {"weight_grad": "Eq. 4 (weight x gradient)", "grad": "gradient only"}


def _records(grid: Grid, records: dict, cell_id: str) -> list[dict]:
    return [records[(cell_id, s)] for s in grid.seeds if (cell_id, s) in records]


def _init_rows(grid: Grid, records: dict) -> list[dict[str, Any]]:
    rows = []
    for cell in grid.cells:
        if not cell.fix or cell.prune is not None:  # a pruning cell's fixed model is Table 3's, not Sec. 4.1's
            continue
        recs = _records(grid, records, cell.id)
        rows.append(
            {
                "cell": cell.id,
                "arch": cell.arch,
                "method": cell.fix,
                "steered": None if cell.fix == "none" else cell.fix in paper.STEERED,
                "accuracy": stat([r["accuracy"] for r in recs]),
                "learnable": recs[0]["fix"]["learnable"] if recs else None,
            }
        )
    return rows


def _orderings(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """Per architecture: the paper's Sec. 4.1 comparisons on our means."""
    out = {}
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mean = {r["method"]: r["accuracy"]["mean"] for r in rows if r["arch"] == arch}
        if None in mean.values():
            out[arch] = {"not_available": "a cell has no finished, non-diverged run"}
            continue
        steered = [mean[m] for m in paper.STEERED]
        flat = [mean[m] for m in paper.NOT_STEERED]
        out[arch] = {
            "steered_mean": sum(steered) / len(steered),
            "not_steered_mean": sum(flat) / len(flat),
            "every_steered_beats_every_not_steered": min(steered) > max(flat),
            "ghaar_minus_learned": mean["ghaar"] - mean["none"],
            "best_fixed": max((m for m in METHODS if m != "none"), key=lambda m: mean[m]),
        }
    return out


def _sanity_row(recs: list[dict], pct: str) -> dict[str, Any]:
    rows = [r["sanity"]["percents"][pct] for r in recs]
    out: dict[str, Any] = {
        "percent": float(pct),
        "zeroed": rows[0]["zeroed"],
        "random": stat([x["random"] for x in rows]),
    }
    for v in VARIANT_NAMES:
        least, most = [x[v]["least"] for x in rows], [x[v]["most"] for x in rows]
        ordered = sum(a >= x["random"] >= b for a, b, x in zip(least, most, rows))
        out[v] = {"least": stat(least), "most": stat(most), "ordered_seeds": ordered, "seeds": len(rows)}
    return out


def _sanity(grid: Grid, records: dict) -> list[dict[str, Any]]:
    out = []
    for cell in grid.cells:
        if not cell.sanity:
            continue
        recs = [r for r in _records(grid, records, cell.id) if r.get("sanity")]
        label = f"{cell.arch} learned (plain)" if cell.fix else f"AnaNN-{cell.arch} ({cell.exp})"
        entry: dict[str, Any] = {"cell": cell.id, "model": label, "base": stat([r["accuracy"] for r in recs])}
        if recs:
            entry["kernels"] = recs[0]["sanity"]["kernels"]
            entry["rows"] = [_sanity_row(recs, pct) for pct in recs[0]["sanity"]["percents"]]
        out.append(entry)
    return out


def results(grid: Grid, records: dict[tuple[str, int], dict]) -> dict[str, Any]:
    """Every ExplainFix table as JSON: ours (mean, std, per-seed values) beside the paper's claims and numbers."""
    init = _init_rows(grid, records)
    return {
        "format": RESULTS_FORMAT,
        "grid": grid.to_json(),
        "grid_key": grid.key,
        "note": paper.DATA_NOTE,
        "init": init,
        "init_orderings": _orderings(init),
        "sanity": _sanity(grid, records),
        "pruning": pruning_rows(grid, records),
        "paper": {
            "init": list(paper.INIT_CLAIMS),
            "sanity": list(paper.SANITY_CLAIMS),
            "table_m1": [{"model": m, "zeroed": z, "pruned": p} for (m, z), p in paper.TABLE_M1.items()],
            "table3_seconds": {m: {"pruned": a, "not_pruned": b} for m, (a, b) in paper.TABLE3_SECONDS.items()},
        },
    }


def to_markdown(doc: dict[str, Any], *, wall_seconds: float | None = None) -> str:
    g = doc["grid"]
    epochs = ", ".join(sorted({f"{c['arch']} {c['epochs']}" for c in g["cells"]}))
    lim = f", first {g['limit']} training and test images" if g["limit"] else ""
    out = [
        "# ExplainFix's experiments, reproduced",
        "",
        f"Data `{g['data']}`{lim}; seeds {', '.join(map(str, g['seeds']))}; epochs: {epochs}; adam lr {g['lr']:g}, "
        f"batch {g['batch_size']}. Ours: top-1 % on the test split after the last epoch, mean ± sample std over seeds.",
        "",
        f"> {doc['note']}",
        "",
        *([f"Wall time of this invocation: {wall_seconds:.0f} s.", ""] if wall_seconds is not None else []),
        *_md_init(doc),
        *_md_sanity(doc),
        *pruning_markdown(doc),
    ]
    return "\n".join(out) + "\n"


def _md_init(doc: dict[str, Any]) -> list[str]:
    out = [
        "## Sec. 4.1: fixed spatial initialisations vs learned",
        "",
        "| arch | method | steered | top-1 % (ours) | values learned |",
        "|---|---|---|---|---|",
    ]
    for r in doc["init"]:
        steer = "learned baseline" if r["steered"] is None else ("yes" if r["steered"] else "no")
        out.append(f"| {r['arch']} | {r['method']} | {steer} | {_pm(r['accuracy'])} | {r['learnable'] or '—'} |")
    out += [""]
    for arch, o in doc["init_orderings"].items():
        if "not_available" in o:
            out.append(f"- {arch}: {o['not_available']}.")
            continue
        out.append(
            f"- {arch}: steered mean {o['steered_mean']:.2f} vs not steered {o['not_steered_mean']:.2f} "
            f"(every steered above every non-steered: {'yes' if o['every_steered_beats_every_not_steered'] else 'no'}); "
            f"GHaar minus learned {o['ghaar_minus_learned']:+.2f} points; best fixed: {o['best_fixed']}."
        )
    out += ["", "Paper:", *[f"- {c}" for c in doc["paper"]["init"]]]
    return out


def _md_sanity(doc: dict[str, Any]) -> list[str]:
    out = [
        "",
        "## App. I: saliency sanity check",
        "",
        "Test top-1 % with x % of the spatial kernels zeroed: least salient / random / most salient. *Ordered*: "
        "seeds where least >= random >= most.",
    ]
    for e in doc["sanity"]:
        out += ["", f"### {e['model']}: {e.get('kernels', '?')} spatial kernels, base {_pm(e['base'])}", ""]
        if "rows" not in e:
            out.append("not available: no finished run")
            continue
        out += ["| x % (kernels) | variant | least | random | most | ordered |", "|---|---|---|---|---|---|"]
        for r in e["rows"]:
            for v, name in VARIANT_NAMES.items():
                c = r[v]
                out.append(
                    f"| {r['percent']:g} ({r['zeroed']}) | {name} | {_pm(c['least'])} | {_pm(r['random'])} "
                    f"| {_pm(c['most'])} | {c['ordered_seeds']}/{c['seeds']} |"
                )
    out += ["", "Paper:", *[f"- {c}" for c in doc["paper"]["sanity"]]]
    return out


def _plot_sanity(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in doc["sanity"] if "rows" in e] or [{"model": "no finished run", "rows": []}]
    fig, axes = plt.subplots(1, len(entries), figsize=(5.5 * len(entries), 4), squeeze=False)
    for ax, e in zip(axes[0], entries):
        xs = [r["percent"] for r in e["rows"]]
        for label, get in (
            ("least salient", lambda r: r["weight_grad"]["least"]),
            ("random", lambda r: r["random"]),
            ("most salient", lambda r: r["weight_grad"]["most"]),
        ):
            ax.errorbar(
                xs,
                [get(r)["mean"] for r in e["rows"]],
                yerr=[get(r)["std"] or 0 for r in e["rows"]],
                marker="o",
                capsize=3,
                label=label,
            )
        ax.set_xscale("log")
        ax.set_xlabel("% of spatial kernels zeroed")
        ax.set_ylabel("test top-1 %")
        ax.set_title(e["model"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("ExplainFix App. I: zeroing by Eq. 4 saliency", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(doc: dict[str, Any], out: Path, *, wall_seconds: float | None = None) -> list[Path]:
    """``results.json``, ``results.md`` and ``saliency-sanity.png`` into ``out``, each written atomically."""
    paths = [Path(out) / name for name in OUTPUTS]
    with atomic_output(paths[0]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with atomic_output(paths[1]) as tmp:
        tmp.write_text(to_markdown(doc, wall_seconds=wall_seconds))
    write_plot(paths[2], lambda png: _plot_sanity(doc, png))
    return paths
