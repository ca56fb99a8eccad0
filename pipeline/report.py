"""The run's report: ``report.json`` (schema below), ``report.md`` and PNG charts.

``report.json`` schema (version 1)::

    {
      "schema": "acl-deploy/report/1",
      "created": ISO-8601 time,
      "model": {"arch", "spec", "checkpoint", "trained": bool, "epochs", "train_seconds",
                "world_size", "training": {"optimizer", "lr", "batch_size", "amp", "workers", "device",
                "resumed_from", "images_per_second"} | null, "parameters": {"total", "learnable_kernel",
                "conv_kernel_equivalent"}},
      "data": {"name", "train", "test", "parity_images", "channels", "num_classes", "image_size",
               "mean": [per channel], "std": [per channel]},
      "accuracy": float,                        # source model, test split
      "verdict": {"passed", "checks", "failed": [keys], "not_available": [keys]},
      "compact_factor": {layer: {"spec", "value"}},   # eq. 25, per ACL layer
      "tolerances": [{"precision", "atol", "rtol", "min_top1"}],
      "parity": {"<backend>:<mode>": {"precision", "max_abs_err", "max_rel_err", "mean_abs_err",
                 "top1_agreement", "atol", "rtol", "min_top1", "passed"}
                 | {"available": false, "reason"}},
      "latency": {"<backend>:<mode>": {"<batch>": {"p50_ms", "p90_ms", "p99_ms", "mean_ms",
                 "min_ms", "iterations", "throughput", "speedup_vs_torch"}}
                 | {"available": false, "reason"}},
      "fp16_range": {"layers": [{"name", "kind", "weight_max_abs", "weight_subnormal_share",
                     "activation_max_abs", "fp16_rel_error", "flags"}], "flagged": {layer: [flags]},
                     "applies_to": [files]},
      "tensorrt": {"available": bool, "reason", "check": {file: [problems]}},
      "files": {name: relative path},
      "environment": {"python", "platform", "cpu", "cores", "torch_threads", "ort_threads",
                      "device", "kernel_generator_cpu", "versions": {package: version}}
    }

``throughput`` is samples per second; ``speedup_vs_torch`` is the eager PyTorch
p50 at the same batch size divided by the row's p50.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from acl.families import FAMILIES

__all__ = ["SCHEMA", "plot_latency", "plot_mosaic", "write_json", "write_markdown"]

SCHEMA = "acl-deploy/report/1"

FAMILY_COLOURS = {sym: f.colour for sym, f in FAMILIES.items()}  # Fig. 4a's frame colours
FAMILY_NAMES = {sym: f.name for sym, f in FAMILIES.items()}


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n")
    return path


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "pass" if v else "FAIL"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) < 1e-3 or abs(v) >= 1e5:
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def _verdict_line(v: dict[str, Any]) -> str:
    head = (
        f"- **Parity: all {v['checks']} checks passed**"
        if v["passed"]
        else f"- **Parity: FAILED {len(v['failed'])} of {v['checks']} checks ({', '.join(v['failed'])})**"
    )
    if v["not_available"]:
        head += f"; {len(v['not_available'])} backend modes not available on this machine (listed below)"
    return head


def _tensorrt_section(trt: dict[str, Any] | None) -> list[str]:
    if not trt:
        return []
    state = "built (rows trt:* and trt-fp16:* above)" if trt["available"] else f"not available: {trt['reason']}"
    lines = ["", "## TensorRT", "", f"- Engines: {state}"]
    lines.append("- ONNX parser check (`python -m deploy.tensorrt check`) against onnx-tensorrt's support matrix:")
    for name, problems in trt["check"].items():
        verdict = "ok" if not problems else f"{len(problems)} problem(s): " + "; ".join(problems)
        lines.append(f"  - `{name}`: {verdict}")
    return lines


def _fp16_section(fp16: dict[str, Any] | None) -> list[str]:
    if not fp16:
        return []
    files = ", ".join(f"`{n}`" for n in fp16["applies_to"])
    lines = [
        "",
        "## FP16 range",
        "",
        "Every Conv and Linear of the deploy form, run in FP16 on the CPU beside FP32 on the test images "
        f"(applies to {files}: they hold the same kernels).",
        "",
        "| layer | max abs weight | weights below FP16 normal | max abs activation | FP16 rel. error | flags |",
        "|---|---|---|---|---|---|",
    ]
    for r in fp16["layers"]:
        lines.append(
            f"| `{r['name']}` | {_fmt(r['weight_max_abs'])} | {r['weight_subnormal_share'] * 100:.2f} % | "
            f"{_fmt(r['activation_max_abs'])} | {_fmt(r['fp16_rel_error'])} | {'; '.join(r['flags']) or 'none'} |"
        )
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> Path:
    m, d = report["model"], report["data"]
    lines = [
        f"# acl-deploy report: {m['arch']} with `{m['spec']}`",
        "",
        f"Created {report['created']}. Schema `{report['schema']}` in `report.json`.",
        "",
        "## Model",
        "",
        f"- Source model: **{m['arch']}**, every convolution an ACL with spec `{m['spec']}`"
        if m["spec"] != "none"
        else f"- Source model: **{m['arch']}** (plain convolutions)",
        f"- {'Trained here' if m['trained'] else 'Loaded from'}: "
        + (
            f"{m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['world_size']} process(es)"
            if m["trained"]
            else f"`{m['checkpoint']}`"
        ),
        f"- Data: {d['name']}, {d['train']} train / {d['test']} test images at {d['image_size']}x{d['image_size']}",
        f"- **Test accuracy of the source model: {report['accuracy'] * 100:.2f} %**",
        _verdict_line(report["verdict"]),
        f"- Parameters: {m['parameters']['total']} in total; convolution kernels learn "
        f"{m['parameters']['learnable_kernel']} values where plain convolutions would learn "
        f"{m['parameters']['conv_kernel_equivalent']}",
        "",
        "### Compact factor per ACL (eq. 25)",
        "",
        "| layer | spec | compact factor |",
        "|---|---|---|",
    ]
    for name, cf in report["compact_factor"].items():
        lines.append(f"| `{name}` | `{cf['spec']}` | {cf['value']:.4f} |")
    lines += ["", "## Parity against the source PyTorch model", "", "Tolerances per precision:", ""]
    lines += ["| precision | atol | rtol | min top-1 agreement |", "|---|---|---|---|"]
    for t in report["tolerances"]:
        lines.append(f"| {t['precision']} | {t['atol']:g} | {t['rtol']:g} | {t['min_top1']:g} |")
    lines += [
        "",
        f"On the {d['test']} test images (not used for training or export):",
        "",
        "| backend:mode | precision | max abs err | max rel err | mean abs err | top-1 agreement | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in report["parity"].items():
        if not p.get("available", True):
            lines.append(f"| {name} | | | | | | not available: {p['reason']} |")
        elif "error" in p:
            lines.append(f"| {name} | {p.get('precision', '')} | | | | | FAIL: {p['error']} |")
        else:
            lines.append(
                f"| {name} | {p['precision']} | {_fmt(p['max_abs_err'])} | {_fmt(p['max_rel_err'])} | "
                f"{_fmt(p['mean_abs_err'])} | {p['top1_agreement'] * 100:.2f} % | {_fmt(p['passed'])} |"
            )
    lines += [
        "",
        "## Latency",
        "",
        "Host wall clock per `infer` call; speed-up over eager PyTorch at the same batch size.",
        "",
    ]
    batches = sorted({int(b) for v in report["latency"].values() if isinstance(v, dict) for b in v if b.isdigit()})
    lines += [
        "| backend:mode | batch | p50 ms | p90 ms | p99 ms | throughput /s | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in report["latency"].items():
        if not rows.get("available", True):
            lines.append(f"| {name} | | | | | | not available: {rows['reason']} |")
            continue
        for b in batches:
            r = rows.get(str(b))
            if r is None:
                continue
            lines.append(
                f"| {name} | {b} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['throughput']:.0f} | {r['speedup_vs_torch']:.2f}x |"
            )
    if report["files"].get("latency_chart"):
        lines += ["", f"![latency]({report['files']['latency_chart']})"]
    lines += _tensorrt_section(report.get("tensorrt")) + _fp16_section(report.get("fp16_range"))
    lines += [
        "",
        "## Kernel mosaics",
        "",
        "Frames: " + ", ".join(f"{FAMILY_NAMES[k]} {c}" for k, c in FAMILY_COLOURS.items()),
        "",
    ]
    for name, rel in report["files"].items():
        if name.startswith("mosaic:"):
            lines.append(f"![{name}]({rel})")
    env = report["environment"]
    lines += [
        "",
        "## Environment",
        "",
        f"- {env['platform']}, Python {env['python']}, {env['cores']} cores ({env['cpu']}), device: {env['device']}",
        f"- threads: PyTorch {env['torch_threads']}, ONNX Runtime {env['ort_threads']}",
        f"- ACL kernels on CPU: {env.get('kernel_generator_cpu', 'not recorded')}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
        "",
        "## Files",
        "",
    ]
    lines += [f"- `{rel}`: {name}" for name, rel in report["files"].items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_latency(latency: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: p50 (with p90-p99 whiskers) per backend and batch size, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {k: v for k, v in latency.items() if v.get("available", True)}
    if not rows:
        return None
    batches = sorted({int(b) for v in rows.values() for b in v if b.isdigit()})
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(batches) * len(rows) / 2), 4))
    width = 0.8 / len(rows)
    xs = np.arange(len(batches))
    for i, (name, v) in enumerate(rows.items()):
        p50 = [v[str(b)]["p50_ms"] for b in batches]
        lo = [v[str(b)]["p50_ms"] - v[str(b)]["p50_ms"] for b in batches]
        hi = [v[str(b)]["p99_ms"] - v[str(b)]["p50_ms"] for b in batches]
        ax.bar(xs + (i - (len(rows) - 1) / 2) * width, p50, width, label=name, yerr=[lo, hi], capsize=2)
    ax.set_xticks(xs, [f"batch {b}" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("latency per call, ms (bar p50, whisker p99)")
    ax.set_title("Inference latency by backend")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


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
