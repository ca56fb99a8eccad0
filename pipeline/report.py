"""The run's report: ``report.json`` (schema below), ``report.md`` and PNG charts.

``report.json`` schema (version 1)::

    {
      "schema": "acl-deploy/report/1",
      "created": ISO-8601 time,
      "model": {"arch", "spec", "layers", "skipped_layers": {layer: "hxw"}, "checkpoint", "trained": bool,
                "epochs", "train_seconds", "world_size", "training": {"optimizer", "lr", "batch_size", "amp",
                "workers", "device", "compile_generator", "resumed_from", "images_per_second"} | null,
                "parameters": {"total", "learnable_kernel", "conv_kernel_equivalent"}},
      "data": {"name", "train", "test", "parity_images", "channels", "num_classes", "image_size",
               "mean": [per channel], "std": [per channel]},
      "fix_spatial": null | {"method", "fixed": [layers], "learning": [1x1 layers], "frozen", "learnable"},
                                                # --fix-spatial (pipeline.stages.fix_spatial); "guide": path
                                                # with guidedsteer
      "accuracy": float,                        # source model, test split
      "verdict": {"passed", "checks", "failed": [keys], "not_available": [keys],
                  "reasons": {check: why it failed}, "warnings": [text]},
      "stages": {stage: {"status": "ok" | "failed" | "not-available", "reason", "seconds"}},
      "compact_factor": {layer: {"spec", "value"}},   # eq. 25, per ACL layer
      "tolerances": [{"precision", "atol", "rtol", "min_top1"}],
      "parity": {"<backend>:<mode>": {"precision", "runtime_precision" (where the runtime reports it),
                 "max_abs_err", "max_rel_err", "mean_abs_err", "top1_agreement", "atol", "rtol", "min_top1",
                 "passed", "fp16_overflow" (an FP16 row failed by the FP16 range check: why)}
                 | {"available": false, "reason"}},
      "latency": {"<backend>:<mode>": {"<batch>": {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                 "min_ms", "max_ms", "iterations", "throughput", "speedup_vs_torch", "outliers",
                 "outlier_share", "load_avg", "cores", "loaded"}}
                 | {"available": false, "reason"}},
      "fastest": {"<batch>": {"row", "precision", "p50_ms", "loaded", "runner_up", "runner_up_p50_ms"}},
                 # among rows that passed parity (pipeline.fastest)
      "fp16_range": {"forms": {form: description}, "images", "emulated_images",
                     "layers": [{"name", "kind", "node", "forms": {form: {"precision", "weight_max_abs",
                                 "weight_subnormal_share", "activation_max_abs", "fp16_rel_error", "note",
                                 "flags"}}}],
                     "overflow": {form: {place: max_abs}}, "kept_fp32": {node: reason},
                     "checks": {"fp16-range:<form>": null | reason}, "flagged": {layer: {form: [flags]}},
                     "file", "applies_to": {form: [files]},
                     "computed": {row: null | {"fp16": {op: n}, "fp32": {op: n}, "opaque": {op: n}}}},
      "tensorrt": {"available": bool, "reason", "check": {file: [problems]}},
      "replay": {"test_data": {"folder", "inputs", "outputs", "polygraphy_inputs",
                    "polygraphy_outputs", "trtexec_inputs", "reference"}, "images", "reference",
                    "files": {file: {"precision", "commands": {tool: command},
                                     "check": {"passed", "max_abs_err"}}}},
      "triton": null | {"path" (null: a temporary repository for --serve-test), "kept", "models":
                {name: {"backend", "instance_kind", "configs", "source", "served_by_a_server_here"}},
                "io", "batching": {"max_batch_size", "preferred", "max_queue_delay_us", "curve",
                "throughput", "rule"}, "batching_from", "validated", "validation", "unverified", "files"},
      "serving": null (no --serve-test) | {"available": false, "reason"}
                 | {"available": true, "model", "server": {"version", "start_seconds"},
                    "parity": {as a parity row}, "load": {"protocol", "model", "batch",
                    "load_avg", "cores", "levels": {clients: {"requests", "errors", "throughput",
                    "p50_ms", "p99_ms", "mean_ms", "server_mean_batch", "server_batches":
                    {size: executions}, ...}}}},
      "files": {name: relative path},
      "environment": {"python", "platform", "cpu", "cores", "torch_threads", "ort_threads",
                      "device", "kernel_generator_cpu", "versions": {package: version}}
    }

``skipped_layers`` names the convolutions ``--layers all`` (or ``first``) left
plain because their kernels are 1 pixel wide (``acl.selection``).
``throughput`` is samples per second; ``speedup_vs_torch`` is the eager PyTorch
p50 at the same batch size divided by the row's p50; ``loaded`` marks a
measurement taken on a busy machine (``deploy.timing.LatencyStats.loaded``).
Backends that cannot run here appear in ``report.md`` once, in one *Not
available here* list, not in the parity and latency tables.

Keys appear in the order of the stages that fill them (``pipeline.stages``), then
``verdict``, ``stages``, ``files`` and ``environment``; ``stages`` lists every stage
that ran before the report was written. ``report.md`` is put together by
``pipeline.stages.write_markdown``: each stage's section, in the stages' order, from
the section functions here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from deploy.timing import LOADED_OUTLIER_SHARE
from pipeline import fastest, fp16_report, interpretability
from pipeline.figures import FAMILY_COLOURS, FAMILY_NAMES, plot_mosaic

__all__ = [
    "SCHEMA",
    "backend_modes",
    "environment_section",
    "files_section",
    "fp16_section",
    "latency_section",
    "latency_table",
    "model_section",
    "mosaics_section",
    "not_available",
    "not_available_section",
    "parity_lines",
    "parity_section",
    "plot_latency",
    "plot_mosaic",
    "replay_section",
    "serving_section",
    "skipped_layers_line",
    "tensorrt_listed",
    "tensorrt_section",
    "title_lines",
    "triton_section",
    "verdict_line",
    "write_json",
    "write_lines",
]

SCHEMA = "acl-deploy/report/1"


def write_json(report: dict[str, Any], path: Path) -> Path:
    """Strict JSON (RFC 8259): a NaN or infinite number is written as null, and listed with what it was.

    ``json.dumps`` would write a bare ``NaN``, which strict parsers reject. Each
    such value's place is recorded under ``non_finite`` (``{"parity.x.max_abs_err":
    "NaN"}``), so a null that stands for a NaN is not mistaken for "not measured".
    """
    import math

    found: dict[str, str] = {}

    def clean(v: Any, where: str) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            found[where] = "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{where}.{k}" if where else str(k)) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if hasattr(v, "dtype") and hasattr(v, "tolist"):  # a NumPy scalar or array
            return clean(v.tolist(), where)
        return v

    out = clean(report, "")
    if found:
        out["non_finite"] = found
    path.write_text(json.dumps(out, indent=2, sort_keys=False, allow_nan=False) + "\n")
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


def verdict_line(v: dict[str, Any]) -> str:
    head = (
        # every stage's checks (parity rows, FP16 range, INT8, pruning, serving), not only parity's
        f"- **Checks: all {v['checks']} passed**"
        if v["passed"]
        else f"- **Checks: FAILED {len(v['failed'])} of {v['checks']} ({', '.join(v['failed'])})**"
    )
    if v["not_available"]:
        head += f"; {len(v['not_available'])} backend modes not available on this machine (see *Not available here*)"
    return "\n".join([head, *fp16_report.headline_lines(v)])  # FP16 range failures and warnings, named


def tensorrt_section(trt: dict[str, Any] | None, listed: bool) -> list[str]:
    """``listed``: the TensorRT backends are in the *Not available here* list, which gives the reason."""
    if not trt:
        return []
    if trt["available"]:
        state = "built (rows trt:* and trt-fp16:* above)"
    elif listed:
        state = "not built (see *Not available here*)"
    else:
        state = f"not available: {trt['reason']}"
    lines = ["", "## TensorRT", "", f"- Engines: {state}", f"- Verified on a GPU: {_gpu_verified(trt)}"]
    lines.append(
        "- ONNX parser check (`python -m deploy.tensorrt check`, on the CPU without TensorRT) against "
        "onnx-tensorrt's support matrix and ONNX's built-in op names:"
    )
    for name, problems in trt["check"].items():
        verdict = "ok" if not problems else f"{len(problems)} problem(s): " + "; ".join(problems)
        lines.append(f"  - `{name}`: {verdict}")
    return lines + _trt_builds(trt.get("builds"))


def _gpu_verified(trt: dict[str, Any]) -> str:
    if trt["available"]:
        return "by this run's `trt:*` rows above, on this machine's GPU"
    return "no (no TensorRT or GPU here); `python -m deploy.tensorrt selfcheck` verifies the path on a GPU machine"


def _trt_builds(builds: dict[str, dict[str, str]] | None) -> list[str]:
    """How each TensorRT major version builds each precision (as documented; no GPU here to verify it)."""
    if not builds:
        return []
    majors = list(next(iter(builds.values())))
    lines = [
        "",
        "How each precision is built, per TensorRT major version (as TensorRT documents it; not verified on a GPU "
        "here):",
        "",
        "| precision | " + " | ".join(majors) + " |",
        "|---|" + "---|" * len(majors),
    ]
    return lines + [f"| {p} | " + " | ".join(row[m] for m in majors) + " |" for p, row in builds.items()]


def fp16_section(fp16: dict[str, Any] | None) -> list[str]:
    return fp16_report.section(fp16, _fmt)


def _cell(text: Any) -> str:
    """Text for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _load_note(r: dict[str, Any]) -> str:
    if not r.get("loaded"):
        return ""
    parts = []
    share = r.get("outlier_share") or 0.0
    if share > LOADED_OUTLIER_SHARE:
        parts.append(f"{share * 100:.1f} % far outliers, slowest {_ms(r.get('max_ms'))} ms")
    load, cores = r.get("load_avg"), r.get("cores") or 0
    if load is not None and cores and load > cores:
        parts.append(f"load average {load:.1f} on {cores} cores")
    return "loaded: " + "; ".join(parts)


def latency_table(latency: dict[str, Any]) -> list[str]:
    rows = {k: v for k, v in latency.items() if v.get("available", True)}
    if not rows:
        return ["No backend could be timed here."]
    batches = sorted({int(b) for v in rows.values() for b in v if b.isdigit()})
    lines = [
        "| backend:mode | batch | mean ms | std ms | p50 ms | p90 ms | p99 ms | throughput /s | speed-up | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    loaded = 0
    for name, table in rows.items():
        for b in batches:
            r = table.get(str(b))
            if r is None:
                continue
            note = _load_note(r)
            loaded += bool(note)
            lines.append(
                f"| {name} | {b} | {_ms(r.get('mean_ms'))} | {_ms(r.get('std_ms'))} | {r['p50_ms']:.3f} | "
                f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput']:.0f} | {r['speedup_vs_torch']:.2f}x | "
                f"{note} |"
            )
    if loaded:
        lines += [
            "",
            f"*loaded* ({loaded} of {len(lines) - 2} rows): the machine was busy while that row was timed: more than "
            f"{LOADED_OUTLIER_SHARE:.0%} of the runs were far outliers (slower than Q3 + 3 IQR), or the 1-minute load "
            "average exceeded the core count. Its p99, mean and std are inflated by other work; p50 is the "
            "steadier figure.",
        ]
    return lines


def replay_section(repro: dict[str, Any] | None) -> list[str]:
    if not repro:
        return []
    td = repro["test_data"]
    lines = [
        "",
        "## Replay with other tools",
        "",
        f"`test_data_set_0/` (ONNX's test-data layout, `input_0.pb` and `output_0.pb`), `{td['polygraphy_inputs']}`, "
        f"`{td['polygraphy_outputs']}` and "
        + ", ".join(f"`{f}`" for f in td["trtexec_inputs"].values())
        + f" hold {repro['images']} test images and the {repro['reference']}'s logits for them. Every ONNX file "
        "of this run must reproduce those logits within its precision's tolerance. Run from this folder; "
        "`trtexec` needs TensorRT and a GPU and is untested here. Each file has one `trtexec` command per TensorRT "
        "major version: 10 takes precision flags (`--int8` for a Q/DQ file, `--stronglyTyped` for the FP16 file), "
        "11 has none (the file's types and Q/DQ nodes set the precision).",
    ]
    for name, f in repro["files"].items():
        c = f["check"]
        if c["passed"]:
            verdict = f"pass, max abs err {_fmt(c['max_abs_err'])}"
        else:
            verdict = f"FAIL: {c.get('error') or 'max abs err ' + _fmt(c['max_abs_err'])}"
        lines += [
            "",
            f"`{name}` ({f['precision']}; replayed here in ONNX Runtime: {verdict}):",
            "",
            "```bash",
            *f["commands"].values(),
            "```",
        ]
    return lines


def triton_section(triton: dict[str, Any] | None) -> list[str]:
    if not triton:
        return []
    b = triton["batching"]
    where = f"`{triton['path']}`" if triton.get("path") else "a temporary folder for `--serve-test`, removed afterwards"
    lines = [
        "",
        "## Triton repository",
        "",
        f"- Written to {where}",
        f"- Configs: {_configs_checked(triton)}",
        f"- Batching: `max_batch_size` {b['max_batch_size']}, preferred batch sizes "
        f"{', '.join(map(str, b['preferred'])) or 'none'} (from {triton['batching_from']}; {b['rule']})",
        "",
        "| model | backend | instances | serves | loaded by a server here |",
        "|---|---|---|---|---|",
    ]
    for name, m in triton["models"].items():
        kinds = "; ".join(f"`{cfg}`: {kind}" for cfg, kind in m["configs"].items())
        served = "yes, with `--serve-test`" if m["served_by_a_server_here"] else "no (unverified, below)"
        lines.append(f"| `{name}` | {m['backend']} | {kinds} | {m['source']} | {served} |")
    lines += ["", f"Unverified here: {triton['unverified']}."]
    return lines


def _configs_checked(triton: dict[str, Any]) -> str:
    """One statement on the configs, from whether the protobuf check ran in this run (not from fixed prose)."""
    if triton["validated"]:
        return f"parsed with {triton['validation']} and checked against the ONNX file"
    why = triton["validation"].removeprefix("not validated: ")
    return f"not validated, neither parsed with Triton's protobuf nor checked against the ONNX file: {why}"


def _int8_serving(int8: dict[str, Any] | None) -> list[str]:
    """The INT8 model's line: its answers against ONNX Runtime on the same Q/DQ file."""
    if not int8:
        return []
    p = int8["parity"]
    if "error" in p:
        return [f"- **`{int8['model']}` (INT8) against {int8['reference']}: FAIL: {p['error']}**"]
    return [
        f"- `{int8['model']}` (INT8) against {int8['reference']} (fp32 tolerance, check `triton-python:static-int8`): "
        f"max abs err {_fmt(p['max_abs_err'])}, top-1 agreement {p['top1_agreement'] * 100:.2f} %, {_fmt(p['passed'])}"
    ]


def serving_section(serving: dict[str, Any] | None, triton: dict[str, Any] | None) -> list[str]:
    head = ["", "## Serving with Triton", ""]
    if serving is None:
        if not triton:
            return []
        return [*head, "No load test: pass `--serve-test` to serve the python-backend model with a real Triton server."]
    if not serving.get("available", True):
        return [*head, "No server here (see *Not available here*)."]
    server, p = serving["server"], serving.get("parity") or {}
    start = server.get("start_seconds")
    lines = [
        *head,
        f"- `{serving['model']}` on nvidia-pytriton {server['version']}'s `tritonserver`, ready in "
        + (f"{start:.2f} s" if start is not None else "- (it did not start)"),
    ]
    if "error" in p:
        lines.append(f"- **Parity of the server's answers with PyTorch: FAIL: {p['error']}**")
    elif p:
        lines.append(
            f"- Parity of the server's answers with PyTorch ({p['precision']}, row `triton-python:static`): "
            f"max abs err {_fmt(p['max_abs_err'])}, top-1 agreement {p['top1_agreement'] * 100:.2f} %, "
            f"{_fmt(p['passed'])}"
        )
    lines += _int8_serving(serving.get("int8"))
    load = serving.get("load")
    if load:
        lines += [
            f"- Load test: {load['protocol']} clients in this process on the same cores as the server, "
            f"{load['batch']} image(s) per request; server batch sizes from Triton's statistics"
            + (
                f"; 1-minute load average {load['load_avg']:.1f} on {load['cores']} cores at the end"
                if load.get("load_avg") is not None
                else ""
            ),
            "",
            "| clients | requests | errors | throughput images/s | p50 ms | p99 ms | server mean batch | "
            "server executions per batch size |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for clients, lv in load["levels"].items():
            sizes = ", ".join(f"{size}: {n}" for size, n in lv["server_batches"].items()) or "-"
            mean_batch = "-" if lv["server_mean_batch"] is None else f"{lv['server_mean_batch']:.2f}"
            lines.append(
                f"| {clients} | {lv['requests']} | {lv['errors']} | {lv['throughput']:.0f} | {_ms(lv['p50_ms'])} | "
                f"{_ms(lv['p99_ms'])} | {mean_batch} | {sizes} |"
            )
    return lines


def not_available(report: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """``{reason: {backend: [modes]}}`` of everything that cannot run here: each backend and each reason once."""
    out: dict[str, dict[str, list[str]]] = {}
    for table in (report.get("parity") or {}, report.get("latency") or {}):
        for key, v in table.items():
            if v.get("available", True):
                continue
            backend, _, mode = key.partition(":")
            modes = out.setdefault(v["reason"], {}).setdefault(backend, [])
            if mode and mode not in modes:
                modes.append(mode)
    serving = report.get("serving")
    if serving is not None and not serving.get("available", True):
        out.setdefault(serving["reason"], {})["Triton server (--serve-test)"] = []
    return out


def parity_lines(parity: dict[str, Any]) -> list[str]:
    """The parity table for the console: a line per row that ran, then one per reason a backend could not.

    >>> parity_lines({
    ...     "ort-cpu:static": {"max_abs_err": 6.7e-6, "top1_agreement": 1.0, "passed": True},
    ...     "trt:static": {"available": False, "reason": "TensorRT is not installed"},
    ...     "trt:live": {"available": False, "reason": "TensorRT is not installed"},
    ... })
    ['ort-cpu:static               max abs 6.70e-06  top-1 100.00 %  pass', 'not available: trt (static, live): TensorRT is not installed']
    """
    lines = []
    for key, p in parity.items():
        if "error" in p:
            lines.append(f"{key:28s} FAIL: {p['error']}")
        elif p.get("available", True):
            verdict = "pass" if p.get("passed") else "FAIL"
            lines.append(
                f"{key:28s} max abs {p['max_abs_err']:.2e}  top-1 {p['top1_agreement'] * 100:.2f} %  {verdict}"
            )
    for reason, backends in not_available({"parity": parity}).items():
        lines.append(f"not available: {backend_modes(backends)}: {reason}")
    return lines


def backend_modes(backends: dict[str, list[str]]) -> str:
    """``{"ort-cuda": ["static", "live"]}`` -> ``"ort-cuda (static, live)"``."""
    return ", ".join(f"{b} ({', '.join(modes)})" if modes else b for b, modes in backends.items())


def not_available_section(missing: dict[str, dict[str, list[str]]]) -> list[str]:
    if not missing:
        return []
    lines = ["", "## Not available here", "", "| backends | reason |", "|---|---|"]
    for reason, backends in missing.items():
        lines.append(f"| {backend_modes(backends)} | not available: {_cell(reason)} |")
    return lines


def title_lines(report: dict[str, Any]) -> list[str]:
    m = report.get("model")
    return [
        f"# acl-deploy report: {m['arch']} with `{m['spec']}`" if m else "# acl-deploy report",
        "",
        f"Created {report['created']}. Schema `{report['schema']}` in `report.json`.",
    ]


def skipped_layers_line(skipped: dict[str, str] | None, *, limit: int | None = 8) -> str | None:
    """The line naming the convolutions left plain for 1-pixel-wide kernels (``{name: "hxw"}``), or None if none.

    Examples:
        >>> skipped_layers_line({"layer2.0.downsample.0": "1x1", "layer3.0.downsample.0": "1x1"}, limit=1)
        'Left plain, 1-pixel-wide kernels (an analytic kernel needs a spatial extent): 2 convolutions, layer2.0.downsample.0 (1x1) and 1 more (report.json: model.skipped_layers)'
    """
    if not skipped:
        return None
    named = [f"{name} ({size})" for name, size in skipped.items()]
    shown = named if limit is None else named[:limit]
    rest = f" and {len(named) - len(shown)} more (report.json: model.skipped_layers)" if shown != named else ""
    count = f"{len(named)} convolution{'s' if len(named) > 1 else ''}"
    return f"Left plain, 1-pixel-wide kernels (an analytic kernel needs a spatial extent): {count}, {', '.join(shown)}{rest}"


def _accuracy_line(report: dict[str, Any]) -> str:
    """The headline accuracy: that of the model every file and parity row stands for (the pruned one after --prune)."""
    source = f"{report['accuracy'] * 100:.2f} %"
    prune = report.get("prune")
    if not prune:
        return f"- **Test accuracy of the source model: {source}**"
    # The files are exported from the pruned (and maybe fine-tuned) model: the trained one's accuracy is not theirs.
    acc = prune["accuracy"]
    deployed = acc["finetuned"] if "finetuned" in acc else acc["pruned"]
    return (
        f"- **Test accuracy of the pruned model, the one every file is exported from and checked against: "
        f"{deployed * 100:.2f} %** (the source model before --prune: {source})"
    )


def model_section(report: dict[str, Any]) -> list[str]:
    """The source model, its accuracy, the verdict, and the compact factor per ACL."""
    m, d = report["model"], report["data"]
    lines = [
        "",
        "## Model",
        "",
        f"- Source model: **{m['arch']}**, convolutions made ACLs (`--layers {m.get('layers', 'all')}`) "
        f"with spec `{m['spec']}`"
        if m["spec"] != "none"
        else f"- Source model: **{m['arch']}** (plain convolutions)",
        *[f"- {line}" for line in [skipped_layers_line(m.get("skipped_layers"), limit=None)] if line],
        f"- {'Trained here' if m['trained'] else 'Loaded from'}: "
        + (
            f"{m['epochs']} epochs in {m['train_seconds']:.1f} s on {m['world_size']} process(es)"
            + (", ACL kernels by the compiled generator" if (m.get("training") or {}).get("compile_generator") else "")
            if m["trained"]
            else f"`{m['checkpoint']}`"
        ),
        f"- Data: {d['name']}, {d['train']} train / {d['test']} test images at {d['image_size']}x{d['image_size']}",
        _accuracy_line(report),
        verdict_line(report["verdict"]),
        f"- Parameters: {m['parameters']['total']} in total; convolution kernels learn "
        f"{m['parameters']['learnable_kernel']} values where plain convolutions would learn "
        f"{m['parameters']['conv_kernel_equivalent']}" + (" (before --prune)" if report.get("prune") else ""),
        "",
        "### Compact factor per ACL (eq. 25)" + (" of the source model, before --prune" if report.get("prune") else ""),
        "",
        "| layer | spec | compact factor |",
        "|---|---|---|",
    ]
    for name, cf in report["compact_factor"].items():
        lines.append(f"| `{name}` | `{cf['spec']}` | {cf['value']:.4f} |")
    return lines


def parity_section(report: dict[str, Any]) -> list[str]:
    """Tolerances, then a row per backend mode that ran (unavailable ones go to *Not available here*)."""
    lines = ["", "## Parity against the source PyTorch model", "", "Tolerances per precision:", ""]
    lines += ["| precision | atol | rtol | min top-1 agreement |", "|---|---|---|---|"]
    for t in report["tolerances"]:
        atol, rtol = (f"{t['atol']:g}", f"{t['rtol']:g}") if t.get("elementwise", True) else ("not judged",) * 2
        lines.append(f"| {t['precision']} | {atol} | {rtol} | {t['min_top1']:g} |")
    lines += [
        "",
        f"On the {report['data']['test']} test images (not used for training or export):",
        "",
        "| backend:mode | precision | max abs err | max rel err | mean abs err | top-1 agreement | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in report["parity"].items():
        if not p.get("available", True):
            continue  # one list, below
        if "error" in p:
            lines.append(f"| {name} | {p.get('precision', '')} | | | | | FAIL: {p['error']} |")
        else:
            lines.append(
                f"| {name} | {p['precision']} | {_fmt(p['max_abs_err'])} | {_fmt(p['max_rel_err'])} | "
                f"{_fmt(p['mean_abs_err'])} | {p['top1_agreement'] * 100:.2f} % | {_fmt(p['passed'])} |"
            )
    return lines


def latency_section(report: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Latency",
        "",
        "Host wall clock per `infer` call; speed-up over eager PyTorch at the same batch size.",
        "",
    ]
    lines += latency_table(report["latency"])
    if report["files"].get("latency_chart"):
        lines += ["", f"![latency]({report['files']['latency_chart']})"]
    lines += fastest.section(report)
    return lines


def mosaics_section(report: dict[str, Any]) -> list[str]:
    """Kernel mosaics before and after training, then what the ACLs learned (``pipeline.interpretability``)."""
    lines = [
        "",
        "## Kernel mosaics",
        "",
        "Frames: " + ", ".join(f"{FAMILY_NAMES[k]} {c}" for k, c in FAMILY_COLOURS.items()),
        "",
    ]
    trained = {name.removeprefix("mosaic:"): rel for name, rel in report["files"].items() if name.startswith("mosaic:")}
    lines += interpretability.mosaic_lines(report.get("interpretability"), trained)
    lines += interpretability.markdown(report.get("interpretability"))
    return lines


def environment_section(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    return [
        "",
        "## Environment",
        "",
        f"- {env['platform']}, Python {env['python']}, {env['cores']} cores ({env['cpu']}), device: {env['device']}",
        f"- threads: PyTorch {env['torch_threads']}, ONNX Runtime {env['ort_threads']}",
        f"- ACL kernels on CPU: {env.get('kernel_generator_cpu', 'not recorded')}",
        "- " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()),
    ]


def files_section(report: dict[str, Any]) -> list[str]:
    return ["", "## Files", "", *(f"- `{rel}`: {name}" for name, rel in report["files"].items())]


def tensorrt_listed(report: dict[str, Any]) -> bool:
    """Whether the TensorRT backends are in the *Not available here* list (which then gives the reason)."""
    return any(b.startswith("trt") for backends in not_available(report).values() for b in backends)


def write_lines(lines: list[str], path: Path) -> Path:
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
