"""The fastest runtime and precision at each batch size, among the rows that passed parity.

Fed by a run's parity and latency dicts (``pipeline.validate``). A row counts only
if it passed parity; ``torch:eager`` is the reference everything is compared
with, so it counts as passing. An INT8 row (precision ``int8``) also needs the
INT8 file's accuracy check to have passed (the report's ``int8`` section,
``pipeline.stages.int8``): its parity is top-1 agreement with the source model,
which a file that lost more accuracy than ``--int8-max-drop`` can still meet. The precision shown is the one the runtime
reported computing in (``runtime_precision``) where it reports one, else the
row's. The ranking is by p50 on this machine at the time of the run: a
``loaded`` measurement (``deploy.timing``) is marked as such.

>>> parity = {"ort-cpu:static": {"precision": "fp32", "passed": True},
...           "openvino:static-bf16": {"precision": "bf16", "passed": False}}
>>> latency = {"torch:eager": {"1": {"p50_ms": 0.9}},
...            "ort-cpu:static": {"1": {"p50_ms": 0.2}},
...            "openvino:static-bf16": {"1": {"p50_ms": 0.1}}}
>>> fastest_passing(parity, latency)["1"]["row"]
'ort-cpu:static'
"""

from __future__ import annotations

from typing import Any

__all__ = ["REFERENCE", "fastest_passing", "int8_check_failed", "section"]

REFERENCE = "torch:eager"


def _precision(key: str, parity: dict[str, Any], computed: dict[str, Any] | None = None) -> str:
    """What the row computed in. ONNX Runtime reports nothing, but the FP16 section's profile does
    (``computed``): its CPU provider runs an FP16 file's ops by casting to FP32, so such a row is no FP16 result.
    """
    p = parity.get(key, {})
    label = p.get("runtime_precision") or p.get("precision") or "fp32"
    ops = (computed or {}).get(key)
    if label == "fp16" and isinstance(ops, dict) and not ops.get("fp16"):
        return "fp32 (an fp16 file, every op cast to fp32 by the runtime)"
    return label


def int8_check_failed(key: str, parity: dict[str, Any], int8: dict[str, Any] | None) -> bool:
    """``key`` is an INT8 row and the INT8 accuracy check did not pass (or is unknown: no ``int8`` section)."""
    return parity.get(key, {}).get("precision") == "int8" and not (int8 or {}).get("passed")


def fastest_passing(
    parity: dict[str, Any],
    latency: dict[str, Any],
    int8: dict[str, Any] | None = None,
    computed: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{batch: {"row", "precision", "p50_ms", "loaded", "runner_up", "runner_up_p50_ms"}}``.

    Batches as in ``latency`` (strings, ascending); a batch no passing row was timed at is left out.
    ``int8``: the report's ``int8`` section, whose ``passed`` lets INT8 rows count. ``computed``: the
    FP16 section's ``computed`` (``{row: {"fp16": {op: n}, ...}}``), what each FP16 row's runtime ran in.
    """
    passing = {k for k, p in parity.items() if p.get("passed") and not int8_check_failed(k, parity, int8)}
    passing |= {REFERENCE}
    timed = {k: v for k, v in latency.items() if k in passing and v.get("available", True)}
    batches = sorted({b for v in timed.values() for b in v if b.isdigit()}, key=int)
    out: dict[str, dict[str, Any]] = {}
    for b in batches:
        ranked = sorted((v[b]["p50_ms"], k) for k, v in timed.items() if b in v)
        (ms, key), rest = ranked[0], ranked[1:]
        out[b] = {
            "row": key,
            "precision": _precision(key, parity, computed),
            "p50_ms": ms,
            "loaded": bool(timed[key][b].get("loaded")),
            "runner_up": rest[0][1] if rest else None,
            "runner_up_p50_ms": rest[0][0] if rest else None,
        }
    return out


def _excluded(parity: dict[str, Any], latency: dict[str, Any]) -> list[str]:
    """Rows that were timed but failed parity: their speed is not on offer."""
    return [k for k, v in latency.items() if v.get("available", True) and k in parity and not parity[k].get("passed")]


def section(report: dict[str, Any]) -> list[str]:
    """The report.md section: one line per batch size, then what was left out and why."""
    fastest = report.get("fastest")
    if fastest is None:
        return []
    parity, latency = report.get("parity") or {}, report.get("latency") or {}
    lines = [
        "",
        "## Fastest passing runtime per batch size",
        "",
        "Among the rows that passed parity (and eager PyTorch, the reference), by p50 latency on this machine.",
        "",
    ]
    if not fastest:
        return [*lines, "No row that passed parity was timed."]
    lines += ["| batch | fastest | precision | p50 ms | runner-up | p50 ms | note |", "|---|---|---|---|---|---|---|"]
    for b, f in fastest.items():
        up = f["runner_up"] or "-"
        up_ms = "-" if f["runner_up_p50_ms"] is None else f"{f['runner_up_p50_ms']:.3f}"
        note = "measured on a loaded machine" if f["loaded"] else ""
        lines.append(f"| {b} | {f['row']} | {f['precision']} | {f['p50_ms']:.3f} | {up} | {up_ms} | {note} |")
    reported = {k: p["runtime_precision"] for k, p in parity.items() if p.get("runtime_precision")}
    if reported:
        lines += ["", "Precision each runtime reported computing in: " + ", ".join(f"{k} {v}" for k, v in reported.items())]
    excluded = _excluded(parity, latency)
    if excluded:
        lines += ["", "Not considered (failed parity): " + ", ".join(excluded)]
    timed = [k for k, v in latency.items() if v.get("available", True) and k not in excluded]
    inaccurate = [k for k in timed if int8_check_failed(k, parity, report.get("int8"))]
    if inaccurate:
        lines += ["", "Not considered (INT8 accuracy check failed): " + ", ".join(inaccurate)]
    return lines
