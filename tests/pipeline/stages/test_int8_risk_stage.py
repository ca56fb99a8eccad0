"""The INT8 risk stage alone: its section, report lines and warnings on a model with a flagged ACL, and its place."""

from __future__ import annotations

import json

import torch
from torch import nn

import acl
from pipeline.datasets import Dataset
from pipeline.stages import JobConfig, RunContext
from pipeline.stages import int8_risk as risk_stage
from pipeline.stages.runner import STAGES
from tests.conftest import trained_looking_bn

IMAGE = (2, 12, 12)


def _model() -> nn.Module:
    """A flagged ACL (a small-sigma LoG beside Gabors in one channel) with BatchNorm, then a plain 1x1 conv."""
    torch.manual_seed(0)
    net = nn.Sequential(
        acl.AnalyticConv2d(2, 4, 5, padding=2, bias=False, spec="Lg1G7"),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 10),
    )
    with torch.no_grad():
        net[0].akp0_Lg.fill_(0.3)  # centre 39, the Gabors at most 1
    return trained_looking_bn(net, IMAGE)


def _context(model: nn.Module, said: list[str], **cfg) -> RunContext:
    x = torch.randn(40, *IMAGE, generator=torch.Generator().manual_seed(5))
    data = Dataset("fixture", None, None, x, torch.zeros(40, dtype=torch.int64), (0.0,), (1.0,), IMAGE[1], 10)
    config = JobConfig(log=said.append)
    for k, v in cfg.items():  # `int8` is the INT8 stage's field: set as an attribute, it works with or without it
        setattr(config, k, v)
    return RunContext(cfg=config, log=said.append, model=model, data=data)


def test_the_stage_reports_every_convolution_and_flags_the_starved_family():
    said: list[str] = []
    result = risk_stage.run(_context(_model(), said, int8=True))
    assert (result.status, result.reason) == ("ok", None)
    section = result.sections["int8_risk"]
    json.dumps(section, allow_nan=False)  # strict JSON, as report.json needs
    assert section["images"] == 32, "the first test images, as many as the Inside the ACLs section uses"
    assert list(section["layers"]) == ["0", "3"] and section["layers"]["0"]["batchnorm"] == "1"
    assert len(result.warnings) == 1
    warning = result.warnings[0]
    assert warning.startswith("INT8 risk in `0`: LoG kernels set the INT8 scale of 1 of the 4 channels holding Gabor")
    assert "effective bits there at worst (< 4)" in warning
    assert any("2 convolutions (1 ACLs) on 32 test images" in line and "1 family flag" in line for line in said)
    md = "\n".join(risk_stage.markdown(result.sections))
    assert "## INT8 risk per layer and kernel family" in md
    assert "### `0`: `(2x4)Lg1G7`, BatchNorm `1` folded in" in md and "### Plain convolutions" in md
    assert "| LoG | 1 | 1 | 1 |" in md and "| Gabor | 7 | 4 | 3 |" in md, md
    assert "| `3` | 16 | 4 | 4 |" in md and f"- {warning}" in md


def test_without_int8_the_stage_is_not_available_and_says_why():
    result = risk_stage.run(_context(_model(), []))
    assert result.status == "not-available" and "--int8" in result.reason
    assert result.sections == {} and result.warnings == []
    assert risk_stage.markdown({}) == []


def test_the_stage_runs_after_parity_and_any_int8_file_stage():
    names = [m.NAME for m in STAGES if hasattr(m, "run")]
    assert names.index("int8_risk") > names.index("parity")
    if "int8" in names:
        assert names.index("int8_risk") > names.index("int8")


def test_a_layer_the_int8_file_keeps_fp32_is_not_a_warning_of_the_verdict(monkeypatch):
    """Accuracy control kept the flagged ACL FP32, the 1x1 conv reads one channel: neither has INT8 weights."""
    from pathlib import Path

    from pipeline.stages import int8 as int8_stage

    monkeypatch.setattr(int8_stage, "module_names", lambda static: {"node_conv2d_1": "3"})
    said: list[str] = []
    ctx = _context(_model(), said, int8=True)
    ctx.onnx = {"static": Path("model.static.onnx")}
    ctx.sections["int8"] = {
        "fp32_layers": [{"layer": "node_conv2d", "module": "0", "sensitivity": 0.5}],
        "single_channel_fp32": ["node_conv2d_1"],
    }
    result = risk_stage.run(ctx)
    section = result.sections["int8_risk"]
    assert section["layers"]["0"]["fp32_in_file"] == "kept FP32 by accuracy control"
    assert section["layers"]["3"]["fp32_in_file"] == "FP32 always, it reads one input channel"
    assert section["layers"]["0"]["flags"], "the figures stay: what INT8 weights would cost"
    assert result.warnings == [], "a layer without INT8 weights is no INT8 risk of the file"
    assert any("2 FP32 in the INT8 file; no convolution has INT8 weights" in s and "0 family flags" in s for s in said)
    md = "\n".join(risk_stage.markdown(result.sections))
    assert "**FP32 in the INT8 file** (kept FP32 by accuracy control)" in md
    assert "`3` (FP32 in the INT8 file)" in md and "Not flags of the file" in md and "\n- INT8 risk" not in md
