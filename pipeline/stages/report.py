"""The report: ``report.json`` from every earlier stage's sections, files, checks and status; ``report.md`` from it.

``report.json`` holds ``schema`` and ``created``, the stages' sections in plan order,
then ``verdict`` (every check of every stage, and every failed stage), ``stages``
(status, reason and seconds of each stage before this one), ``files`` and
``environment``. ``report.md`` is rendered from that JSON alone: the title, then each
module's ``markdown`` in plan order (this stage's last: the environment and the files).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib import metadata as _md
from pathlib import Path
from typing import Any, Iterable

from pipeline import report as rep
from pipeline.stages.base import RunContext, StageResult

NAME = "report"
TITLE = "report"
FILES = {"report_json": "report.json", "report_md": "report.md"}
VERSIONS_OF = (
    "torch",
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "onnx-graphsurgeon",
    "polygraphy",
    "scikit-learn",
    "safetensors",
    "tensorrt",
    "openvino",
)


def run(ctx: RunContext) -> StageResult:
    report = {
        "schema": rep.SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **ctx.sections,
        "verdict": verdict(ctx.results),
        "stages": {
            name: {"status": r.status, "reason": r.reason, "seconds": round(ctx.seconds[name], 3)}
            for name, r in ctx.results.items()
        },
        "files": {**ctx.files, **FILES},
        "environment": environment(ctx.threads),
    }
    rep.write_json(report, ctx.staging / FILES["report_json"])
    write_markdown(report, ctx.staging / FILES["report_md"], ctx.plan)
    ctx.report = report
    return StageResult(files=dict(FILES))


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.environment_section(report) + rep.files_section(report)


def write_markdown(report: dict[str, Any], path: Path, plan: Iterable[Any]) -> Path:
    lines = rep.title_lines(report)
    for module in plan:
        if hasattr(module, "markdown"):
            lines += module.markdown(report)
    return rep.write_lines(lines, path)


def verdict(results: dict[str, StageResult]) -> dict[str, Any]:
    """Passed when no check failed and no stage failed; a failed stage without a failed check is listed by name."""
    checks = {k: ok for r in results.values() for k, ok in r.checks.items()}
    failed = [k for k, ok in checks.items() if ok is False]
    silent = [
        f"stage {name}: {r.reason}"
        for name, r in results.items()
        if r.status == "failed" and False not in r.checks.values()
    ]
    return {
        "passed": not failed and not silent,
        "checks": sum(ok is not None for ok in checks.values()) + len(silent),
        "failed": failed + silent,
        "not_available": [k for k, ok in checks.items() if ok is None],
        "reasons": {k: why for r in results.values() for k, why in r.reasons.items() if checks.get(k) is False},
        "warnings": [w for r in results.values() for w in r.warnings],
    }


def environment(threads: int) -> dict[str, Any]:
    import torch

    from deploy.backends import cuda_device_present

    gpu, gpu_desc = cuda_device_present()
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ort_threads": threads,
        "device": gpu_desc if gpu else "cpu (no CUDA device)",
        # How AnalyticConv2d computes its kernels: one path everywhere since issue #10.
        "kernel_generator_cpu": "torch, eager autograd (acl.kernels)",
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    out = {}
    for pkg in VERSIONS_OF:
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
