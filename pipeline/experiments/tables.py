"""The results: mean and spread over seeds per table row, beside the paper's numbers; JSON, Markdown, plots.

Every number of ours is a mean over the grid's seeds with the sample standard
deviation (``std``, n - 1 in the denominator) as its spread; accuracies are top-1 %
on the whole test split after the last epoch. Table 3's attribution
(``acl.attribution``) is computed per seed and then averaged. With ``--finetune N``
the ablated rows also hold ``accuracy_finetuned`` and ``loss_finetuned`` (exp3's
accuracy minus the fine-tuned one), and ``attribution_finetuned`` is the same
attribution on the fine-tuned accuracies.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export.atomic import atomic_output
from pipeline.experiments import paper
from pipeline.experiments.grid import ABLATIONS, ANANN_ROWS, TABLE3_TRAINED, Grid
from pipeline.experiments.runner import ABLATE_MISSING

__all__ = ["RESULTS_FORMAT", "results", "stat", "to_markdown", "write_outputs"]

RESULTS_FORMAT = "acl-deploy/reproduce-results/1"
FAMILY_ORDER = ("G", "Lg", "Lt", "Tf", "P")
_NO_BASE = "not available: no trained exp3 model (every run diverged)"


def stat(values: Sequence[float | None]) -> dict[str, Any]:
    """``{"mean", "std", "n", "values", "diverged"}`` over the values that are not None (runs that diverged).

    std is the sample standard deviation (None below 2 values).

    >>> stat([97.0, 98.0, 99.0, None])["std"], stat([97.0, None])["diverged"]
    (1.0, 1)
    """
    vals = [float(v) for v in values if v is not None]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "std": statistics.stdev(vals) if len(vals) > 1 else None,
        "n": len(vals),
        "values": vals,
        "diverged": sum(v is None for v in values),
    }


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _cell_row(grid: Grid, records: dict, cell_id: str) -> dict[str, Any]:
    cell = grid.cell(cell_id)
    recs = [records[(cell_id, s)] for s in grid.seeds if (cell_id, s) in records]
    cfs = {r["compact_factor"] for r in recs}
    specs = recs[0]["specs"] if recs else {}
    return {
        "cell": cell_id,
        "arch": cell.arch,
        "spec": cell.spec,
        "epochs": cell.epochs,
        "specs": specs,
        "compact_factor": next(iter(cfs)) if len(cfs) == 1 else None,
        "accuracy": stat([r["accuracy"] for r in recs]),
    }


def _ablation_rows(grid: Grid, records: dict, base_id: str) -> tuple[list[dict], dict[str, Any], dict[str, Any]]:
    """Table 3's ablated rows, the attribution and (``grid.finetune`` > 0) the fine-tuned one (else ``{}``)."""
    # A diverged exp3 run has no trained model to ablate: its seed drops out of these rows.
    recs = [records[(base_id, s)] for s in grid.seeds if (base_id, s) in records]
    recs = [r for r in recs if r["accuracy"] is not None]
    rows = []
    unavailable = None
    for exp, families in ABLATIONS.items():
        entries = [(r["accuracy"], (r.get("ablations") or {}).get(exp, {"error": ABLATE_MISSING})) for r in recs]
        errors = [e["error"] for _, e in entries if "error" in e] or ([] if recs else [_NO_BASE])
        p = paper.TABLE3[exp]
        row: dict[str, Any] = {
            "exp": exp,
            "kind": "ablated",
            "how": f"exp3 ablated: {'+'.join(families)} -> M",
            "paper": {"arrangement": p[0], "accuracy": p[1], "compact_factor": p[2], "loss": p[3]},
        }
        if errors:
            row["not_available"] = errors[0]
            unavailable = unavailable or errors[0]
        else:
            row["specs"] = entries[0][1]["specs"]
            row["compact_factor"] = entries[0][1]["compact_factor"]
            row["accuracy"] = stat([e["accuracy"] for _, e in entries])
            row["loss"] = stat([base - e["accuracy"] for base, e in entries])
            if grid.finetune:  # None: that seed's fine-tuning diverged
                row["accuracy_finetuned"] = stat([e.get("accuracy_finetuned") for _, e in entries])
                row["loss_finetuned"] = stat([_diff(base, e.get("accuracy_finetuned")) for base, e in entries])
        rows.append(row)
    if unavailable is not None or not recs:
        missing = {"not_available": unavailable or _NO_BASE}
        return rows, missing, (missing if grid.finetune else {})
    try:
        import acl

        attribution = acl.attribution
    except (AttributeError, ImportError):
        missing = {"not_available": ABLATE_MISSING}
        return rows, missing, (missing if grid.finetune else {})
    tuned = {"epochs": grid.finetune, **_attribution(recs, attribution, "accuracy_finetuned")} if grid.finetune else {}
    return rows, _attribution(recs, attribution, "accuracy"), tuned


def _attribution(recs: list[dict], attribution, key: str) -> dict[str, Any]:
    """Table 3's attribution per seed of the ablations' ``key`` accuracies (a seed with one None counts as diverged)."""
    per_seed = []
    single = {ABLATIONS[e][0]: e for e in ABLATIONS if len(ABLATIONS[e]) == 1}
    for r in recs:
        ablated = {f: r["ablations"][single[f]].get(key) for f in FAMILY_ORDER if f in single}
        every = r["ablations"]["exp15"].get(key)
        if every is None or None in ablated.values():
            per_seed.append(None)
        else:
            per_seed.append(attribution(r["accuracy"], ablated, every))

    def agg(get) -> dict[str, Any]:
        vals = [None if a is None else get(a) for a in per_seed]
        ok = all(v is None or (isinstance(v, float) and math.isfinite(v)) for v in vals)
        return stat(vals) if ok else stat([])

    printed = {f: paper.TABLE3[single[f]][3] for f in single}
    total_p = paper.TABLE3["exp15"][3]
    attr = {
        "loss": {f: agg(lambda a, f=f: a.loss[f]) for f in single},
        "total": agg(lambda a: a.total),
        "interaction": agg(lambda a: a.interaction),
        "share": {k: agg(lambda a, k=k: a.share[k]) for k in [*single, "interaction"]},
        "paper": {
            "loss": printed,
            "total": total_p,
            "interaction": paper.TABLE3_INTERACTION[0],
            "share": {
                **{f: v / total_p for f, v in printed.items()},
                "interaction": paper.TABLE3_INTERACTION[1],
            },
        },
    }
    return attr


def _table3_trained_rows(grid: Grid, records: dict[tuple[str, int], dict], base_id: str) -> list[dict[str, Any]]:
    """Table 3's trained arrangements in the grid, their loss measured against exp3 seed by seed."""
    s = grid.sweep_arch
    # Table 3's order: exp9-14, exp15 (Table 1's exp7), exp16-19.
    trained = [(e, f"{s}-{e}") for e in TABLE3_TRAINED if int(e[3:]) < 15] + [("exp15", f"{s}-exp7")]
    trained += [(e, f"{s}-{e}") for e in TABLE3_TRAINED if int(e[3:]) > 15]
    rows = []
    for exp, cid in trained:
        if grid.cell(cid) is None:
            continue
        row = _cell_row(grid, records, cid)
        pairs = [(records.get((base_id, s)), records.get((cid, s))) for s in grid.seeds]
        p = paper.TABLE3[exp]
        rows.append(
            {
                "exp": exp,
                "kind": "trained",
                "how": "trained" + (" (Table 1's exp7)" if exp == "exp15" else ""),
                **row,
                "loss": stat([_diff(b["accuracy"], r["accuracy"]) for b, r in pairs if b and r]),
                "paper": {"arrangement": p[0], "accuracy": p[1], "compact_factor": p[2], "loss": p[3]},
            }
        )
    return rows


def results(grid: Grid, records: dict[tuple[str, int], dict]) -> dict[str, Any]:
    """Every table as JSON: ours (mean, std, per-seed values) beside the paper's numbers.

    Only what a run's cell and seed determine goes in (no timings), so a resumed
    grid gives the same document as an uninterrupted one.
    """
    s = grid.sweep_arch
    anann = []
    for label, cid in ANANN_ROWS:
        anann.append({"model": label, **_cell_row(grid, records, cid), "paper": {"accuracy": paper.ANANN[label]}})
    table1 = []
    for exp, (arr, acc, cf) in paper.TABLE1.items():
        row = _cell_row(grid, records, f"{s}-{exp}")
        table1.append({"exp": exp, **row, "paper": {"arrangement": arr, "accuracy": acc, "compact_factor": cf}})
    table2 = []
    for exp, (arr, acc, cf) in paper.TABLE2.items():
        row = _cell_row(grid, records, f"{s}-{'exp3' if exp == 'exp3' else 't2' + exp}")
        table2.append({"exp": exp, **row, "paper": {"arrangement": arr, "accuracy": acc, "compact_factor": cf}})
    base_id = f"{s}-exp3"
    base = _cell_row(grid, records, base_id)
    p3 = paper.TABLE3["exp3"]
    table3 = [
        {
            "exp": "exp3",
            "kind": "trained",
            "how": "trained",
            **base,
            "loss": stat([0.0 for _ in base["accuracy"]["values"]]),  # by definition, per trained seed
            "paper": {"arrangement": p3[0], "accuracy": p3[1], "compact_factor": p3[2], "loss": p3[3]},
        }
    ]
    ablation_rows, attribution, attribution_finetuned = _ablation_rows(grid, records, base_id)
    table3 += ablation_rows + _table3_trained_rows(grid, records, base_id)
    return {
        "format": RESULTS_FORMAT,
        "grid": grid.to_json(),
        "grid_key": grid.key,
        "note": paper.DATA_NOTE,
        "anann": anann,
        "table1": table1,
        "table2": table2,
        "table3": table3,
        "attribution": attribution,
        **({"attribution_finetuned": attribution_finetuned} if grid.finetune else {}),
    }


def _pm(s: dict | None, digits: int = 2) -> str:
    if s and s.get("mean") is None and s.get("diverged"):
        return f"all {s['diverged']} diverged"
    if not s or s.get("mean") is None:
        return "n/a"
    std = "" if s.get("std") is None else f" ± {s['std']:.{digits}f}"
    lost = f" ({s['diverged']} diverged)" if s.get("diverged") else ""
    return f"{s['mean']:.{digits}f}{std}{lost}"


def _cf(v: float | None) -> str:
    return "0 (plain)" if v is None else f"{v:.4f}"


def _specs(specs: dict[str, str]) -> str:
    return ", ".join(f"{k} `{v}`" for k, v in specs.items()) or "plain"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def to_markdown(doc: dict[str, Any], *, wall_seconds: float | None = None) -> str:
    """The results as Markdown tables (ours: mean ± std over the seeds)."""
    ft = doc["grid"].get("finetune") or 0
    out = [
        *_md_intro(doc, wall_seconds),
        *_md_anann(doc),
        *_md_tables_1_2(doc),
        *_md_table3(doc, ft),
        *_md_attribution(doc, ft),
    ]
    return "\n".join(out) + "\n"


def _md_intro(doc: dict[str, Any], wall_seconds: float | None) -> list[str]:
    """Title and how the numbers were made (data, seeds, epochs, optimizer)."""
    g = doc["grid"]
    epochs = ", ".join(sorted({f"{c['arch']} {c['epochs']}" for c in g["cells"]}))
    seeds = ", ".join(str(s) for s in g["seeds"])
    lim = f", first {g['limit']} training and test images" if g["limit"] else ""
    ft = g.get("finetune") or 0
    tuned = f"; Table 3's ablated models also fine-tuned {ft} epoch{'s' if ft > 1 else ''}" if ft else ""
    out = [
        "# The paper's experiments, reproduced",
        "",
        f"Data `{g['data']}`{lim}; seeds {seeds} (n = {len(g['seeds'])}); epochs: {epochs}; "
        f"{g['optimizer']} lr {g['lr']:g}, batch {g['batch_size']}{tuned}. Ours: top-1 % on the test split after the last "
        "epoch, mean ± sample std over the seeds. Every convolution of a model is an ACL with the arrangement's "
        "ratios (counts per layer shown); compact factor: eq. 25 over all ACLs together.",
        "",
        f"> {doc['note']}",
        "",
    ]
    if wall_seconds is not None:
        out += [f"Wall time of this invocation: {wall_seconds:.0f} s.", ""]
    return out


def _md_anann(doc: dict[str, Any]) -> list[str]:
    out = [
        "## AnaNN tests (sec. 4.2, Fig. 5)",
        "",
        "| model | ACLs | top-1 % (ours) | compact factor | paper top-1 % (MNIST) |",
        "|---|---|---|---|---|",
    ]
    for r in doc["anann"]:
        out.append(
            f"| {r['model']} | {_specs(r['specs'])} | {_pm(r['accuracy'])} | {_cf(r['compact_factor'])} "
            f"| {r['paper']['accuracy']:.2f} |"
        )
    return out


def _md_tables_1_2(doc: dict[str, Any]) -> list[str]:
    out = []
    for title, key in (
        ("Table 1: compactness against accuracy", "table1"),
        ("Table 2: the order of ACKs", "table2"),
    ):
        out += [
            "",
            f"## {title}",
            "",
            "| exp | paper arrangement (3x64) | ours per layer | top-1 % (ours) | compact factor (ours) "
            "| paper top-1 % | paper compact factor |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in doc[key]:
            p = r["paper"]
            out.append(
                f"| {r['exp']} | `{p['arrangement']}` | {_specs(r['specs'])} | {_pm(r['accuracy'])} "
                f"| {_cf(r['compact_factor'])} | {p['accuracy']:.2f} | {p['compact_factor']:.4f} |"
            )
    return out


def _md_table3(doc: dict[str, Any], ft: int) -> list[str]:
    """Table 3's rows (fine-tuned columns with ``--finetune``), then how they were made."""
    ft_head = f"| top-1 % fine-tuned {ft} ep (ours) | loss fine-tuned (ours) " if ft else ""
    out = [
        "",
        "## Table 3: ablation by Mean kernels",
        "",
        f"| exp | how | ours per layer | top-1 % (ours) | loss (ours) {ft_head}| compact factor (ours) "
        "| paper arrangement | paper top-1 % | paper loss |",
        "|---|---|---|---|---|" + ("---|---|" if ft else "") + "---|---|---|---|",
    ]
    for r in doc["table3"]:
        p = r["paper"]
        out.append(
            f"| {r['exp']} | {r['how']} | {_md_table3_ours(r, ft)} | `{p['arrangement']}` | {p['accuracy']:.2f} "
            f"| {_num(p['loss'])} |"
        )
    return out + _md_table3_notes(doc["grid"], ft)


def _md_table3_ours(r: dict[str, Any], ft: int) -> str:
    """The cells of our numbers in a Table 3 row."""
    if "not_available" in r:
        return f"{r['not_available']} | — | — | —" + (" | — | —" if ft else "")
    tuned_cols = ""
    if ft:
        tuned_cols = (
            f" | {_pm(r['accuracy_finetuned'])} | {_pm(r['loss_finetuned'])}"
            if "accuracy_finetuned" in r
            else " | — | —"
        )
    return (
        f"{_specs(r['specs'])} | {_pm(r['accuracy'])} | {_pm(r.get('loss'))}{tuned_cols} | {_cf(r['compact_factor'])}"
    )


def _md_table3_notes(g: dict[str, Any], ft: int) -> list[str]:
    notes = [
        "",
        "Ablated rows: exp3's trained models (each seed's) with those families' kernels replaced by Mean kernels "
        "(`acl.ablate`), evaluated without retraining; loss: exp3's accuracy minus the row's, per seed. Trained "
        "rows are models trained from scratch with that arrangement. The paper's compact factors of exp11 "
        "(0.4347) and exp13 (0.0274) are not eq. 25's (0.4742, 0.9726; exp9, exp10 and exp12 agree with it), "
        "module `pipeline.experiments.paper`; ours are eq. 25's.",
    ]
    if ft:
        notes += [
            "",
            f"Fine-tuned (`--finetune {ft}`): each ablated model trained {ft} more epoch{'s' if ft > 1 else ''} "
            f"({g['optimizer']} lr {g['lr']:g}, batch {g['batch_size']}, a fresh optimizer, data order from the "
            "run's seed), then evaluated; its loss is against exp3's trained accuracy (exp3 itself not trained "
            "further).",
        ]
    return notes


def _md_attribution(doc: dict[str, Any], ft: int) -> list[str]:
    a = doc["attribution"]
    t = doc.get("attribution_finetuned") if ft else None
    if t is not None and "not_available" in t:
        t = None  # unavailable for the same reason as the zero-shot attribution (the same runs)
    out = ["", "### Attribution (Fig. 4b): accuracy loss per family, and what interactions explain", ""]
    if "not_available" in a:
        return [*out, f"Not available: {a['not_available']}"]
    return out + _md_attribution_table(a, t, ft)


def _md_attribution_table(a: dict[str, Any], t: dict[str, Any] | None, ft: int) -> list[str]:
    """Loss and share per family and for the interaction, ours (and fine-tuned, ``t``) beside the paper's."""
    t_head = f" loss fine-tuned {ft} ep | share fine-tuned |" if t else ""
    out = [
        f"| part | loss (ours, points) | share (ours) |{t_head} paper loss | paper share |",
        "|---|---|---|---|---|" + ("---|---|" if t else ""),
    ]

    def part(doc_a: dict, k: str) -> dict:
        return doc_a["interaction"] if k == "interaction" else doc_a["loss"][k]

    for k in [*a["loss"], "interaction"]:
        ploss = part(a["paper"], k)
        t_cols = f" {_pm(part(t, k))} | {_pm(t['share'][k], 3)} |" if t else ""
        out.append(
            f"| {k} | {_pm(part(a, k))} | {_pm(a['share'][k], 3)} |{t_cols} {ploss:.2f} | {a['paper']['share'][k]:.3f} |"
        )
    t_total = f" {_pm(t['total'])} | 1 |" if t else ""
    out.append(f"| all (exp15) | {_pm(a['total'])} | 1 |{t_total} {a['paper']['total']:.2f} | 1 |")
    out += [
        "",
        "Shares divide by the exp15 loss (every kernel Mean); the interaction share is what the single-family "
        "losses leave unexplained. The paper's shares follow its printed loss column (exp13: 5.09).",
    ]
    if t:
        out.append(
            "Fine-tuned columns: the same attribution on the fine-tuned accuracies (losses against exp3's "
            "trained accuracy)."
        )
    return out


def _plot_compact(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axp) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    seen = set()
    for key, marker, colour in (("table1", "o", "tab:blue"), ("table2", "s", "tab:orange")):
        for r in doc[key]:
            if r["cell"] in seen or r["accuracy"]["mean"] is None:
                continue
            seen.add(r["cell"])
            cf = r["compact_factor"] or 0.0
            ax.errorbar(cf, r["accuracy"]["mean"], yerr=r["accuracy"]["std"] or 0, fmt=marker, color=colour, capsize=3)
            name = r["exp"] if key == "table1" else f"T2 {r['exp']}"
            ax.annotate(name, (cf, r["accuracy"]["mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            p = r["paper"]
            axp.plot(p["compact_factor"], p["accuracy"], marker, color=colour)
            axp.annotate(
                name, (p["compact_factor"], p["accuracy"]), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
    g = doc["grid"]
    ax.set_title(f"ours: {g['sweep_arch']} on {g['data']}, mean ± std over {len(g['seeds'])} seeds", fontsize=10)
    axp.set_title("paper: ACL-ResNet-34 on Flowers-102 (Tables 1-2)", fontsize=10)
    for a in (ax, axp):
        a.set_xlabel("compact factor (eq. 25)")
        a.set_ylabel("top-1 accuracy (%)")
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_ablation(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axs) = plt.subplots(1, 2, figsize=(12, 4.2))
    ft = doc["grid"].get("finetune") or 0
    # Bars per group: ours zero-shot, ours fine-tuned (with --finetune), the paper's.
    width = 0.27 if ft else 0.4
    offsets = (-width, 0.0, width) if ft else (-width / 2, None, width / 2)
    _plot_ablation_losses(ax, doc, ft, width, offsets)
    _plot_attribution_shares(axs, doc, ft, width, offsets)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _mean(s: dict | None) -> float:
    """A stat's mean for a bar; NaN (no bar) when there is none."""
    return s["mean"] if s and s.get("mean") is not None else float("nan")


def _std(s: dict | None) -> float:
    return (s.get("std") or 0) if s else 0


def _plot_ablation_losses(ax, doc: dict[str, Any], ft: int, width: float, offsets: tuple) -> None:
    """Table 3's ablated rows: accuracy loss against exp3, ours (and fine-tuned) beside the paper's."""
    rows = [r for r in doc["table3"] if r["kind"] == "ablated"]
    labels = [f"{r['exp']}\n{'+'.join(ABLATIONS[r['exp']]) if len(ABLATIONS[r['exp']]) < 5 else 'all'}" for r in rows]
    x = list(range(len(rows)))
    ax.bar(
        [i + offsets[0] for i in x],
        [_mean(r.get("loss")) for r in rows],
        width,
        yerr=[_std(r.get("loss")) for r in rows],
        capsize=3,
        label="ours (no retraining)",
    )
    if ft:
        ax.bar(
            [i + offsets[1] for i in x],
            [_mean(r.get("loss_finetuned")) for r in rows],
            width,
            yerr=[_std(r.get("loss_finetuned")) for r in rows],
            capsize=3,
            label=f"ours (fine-tuned {ft} ep)",
        )
    ax.bar([i + offsets[2] for i in x], [r["paper"]["loss"] for r in rows], width, label="paper")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("top-1 accuracy loss vs exp3 (points)")
    ax.set_title("Table 3: families replaced by Mean kernels", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _plot_attribution_shares(axs, doc: dict[str, Any], ft: int, width: float, offsets: tuple) -> None:
    """Fig. 4b: each family's and the interaction's share of the exp15 loss, ours (and fine-tuned) and the paper's."""
    a = doc["attribution"]
    if "not_available" in a:
        axs.text(0.5, 0.5, f"attribution {a['not_available']}", ha="center", va="center", wrap=True)
        axs.set_axis_off()
        return
    t = doc.get("attribution_finetuned") if ft else None
    keys = [*a["loss"], "interaction"]
    xs = list(range(len(keys)))
    axs.bar(
        [i + offsets[0] for i in xs],
        [_mean(a["share"][k]) for k in keys],
        width,
        yerr=[_std(a["share"][k]) for k in keys],
        capsize=3,
        label="ours (no retraining)",
    )
    if ft:
        tuned = t if t and "not_available" not in t else None
        axs.bar(
            [i + offsets[1] for i in xs],
            [_mean(tuned["share"][k]) if tuned else float("nan") for k in keys],
            width,
            yerr=[_std(tuned["share"][k]) if tuned else 0 for k in keys],
            capsize=3,
            label=f"ours (fine-tuned {ft} ep)",
        )
    axs.bar([i + offsets[2] for i in xs], [a["paper"]["share"][k] for k in keys], width, label="paper")
    axs.set_xticks(xs, keys)
    axs.set_ylabel("share of the exp15 loss")
    axs.set_title("Fig. 4b: contribution shares", fontsize=10)
    axs.legend(fontsize=8)
    axs.grid(axis="y", alpha=0.3)


OUTPUTS = ("results.json", "results.md", "accuracy-vs-compact-factor.png", "ablation.png")


def write_outputs(doc: dict[str, Any], out: Path, *, wall_seconds: float | None = None) -> list[Path]:
    """``results.json``, ``results.md`` and the two plots into ``out``, each written atomically."""
    out = Path(out)
    paths = [out / name for name in OUTPUTS]
    with atomic_output(paths[0]) as tmp:
        tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    with atomic_output(paths[1]) as tmp:
        tmp.write_text(to_markdown(doc, wall_seconds=wall_seconds))
    for path, plot in zip(paths[2:], (_plot_compact, _plot_ablation)):
        write_plot(path, lambda png, plot=plot: plot(doc, png))
    return paths


def write_plot(path: Path, plot: Callable[[Path], None]) -> None:
    """``plot(png)`` written atomically to ``path`` (a ``.png``); nothing left behind if it fails or is interrupted."""
    with atomic_output(path) as tmp:
        png = tmp.with_suffix(".png")  # matplotlib picks the format from the suffix
        try:
            plot(png)
            png.replace(tmp)
        finally:  # interrupted or failed mid-plot: atomic_output removes tmp, not this file
            png.unlink(missing_ok=True)
