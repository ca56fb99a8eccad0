"""The RECOS view stage: its section, figure and report lines on an AnaNN-LeNet and a BatchNorm/residual model."""

from __future__ import annotations

import types

import torch

from pipeline.archs import DEFAULT_SPEC, build
from pipeline.stages import recos as stage
from pipeline.stages.base import JobConfig, RunContext
from tests.acl.test_recos import _digits, block_net


def _ctx(tmp_path, model, x) -> RunContext:
    data = types.SimpleNamespace(x_test=x)
    return RunContext(cfg=JobConfig(out=tmp_path / "run"), log=lambda m: None, staging=tmp_path, model=model, data=data)


def test_stage_on_an_anann_lenet(tmp_path):
    torch.manual_seed(0)
    net = build("lenet", DEFAULT_SPEC, layers="all").eval()
    threads = torch.get_num_threads()
    result = stage.run(_ctx(tmp_path, net, _digits(80)))
    assert torch.get_num_threads() == threads  # the stage's one thread is given back
    assert result.files == {"recos": "recos.png"}
    assert (tmp_path / "recos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = result.sections["recos"]
    assert list(section["layers"]) == ["conv1", "conv2", "fc1", "fc2", "fc3"] and section["images"] == 64
    assert section["pair"]["first"] == "conv1" and section["pair"]["second"] == "conv2"
    assert section["pair"]["subsample"] == 2 and section["pair"]["max_abs"] < 1e-5
    report = {"recos": section, "stages": {"recos": {"seconds": 1.234}}}
    md = "\n".join(stage.markdown(report))
    assert "## RECOS view" in md and "Cost: 1.23 s." in md and "![RECOS view](recos.png)" in md
    assert "| `conv1` | acl | 26 | 6 | - | 2048 |" in md and "| `fc3` | linear | 84 | 10 | - | 64 |" in md
    assert "| `conv2` | LoT |" in md  # the per-family table
    assert "First layer `conv1` as the paper augments it (N = 26" in md
    assert "Composite kernel of `conv1` and `conv2`" in md and "16 pixel-space anchors of 1x13x13" in md


def test_stage_on_a_batchnorm_residual_model(tmp_path):
    net = block_net()
    section = stage.run(_ctx(tmp_path, net, torch.randn(10, 1, 12, 12))).sections["recos"]
    assert section["layers"]["block.conv1"]["bn"] == "block.bn1"
    assert section["pair"]["first"] == "stem" and section["pair"]["second"] == "block.conv1"
    assert section["pair"]["max_abs"] < 1e-5
    md = "\n".join(stage.markdown({"recos": section}))
    assert "| `block.conv1` | conv | 72 | 8 | block.bn1 |" in md and "Cost:" not in md
    assert "Per ACL family" not in md  # a plain model has none


def test_reports_without_the_section_render_without_it():
    assert stage.markdown({"stages": {}}) == []
