"""The INT8 stage alone: not requested without --int8; a failed accuracy bound is plainly failed, never deployed."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import nn

from pipeline.datasets.base import TensorImages
from pipeline.stages import JobConfig, RunContext
from pipeline.stages import int8 as int8_stage
from tests.deploy.int8.models import IMAGE, export_static


def _context(tmp_path: Path, int8: bool) -> RunContext:
    from pipeline.datasets import Dataset

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10)).eval()
    static = export_static(net, tmp_path / "model.static.onnx")
    g = torch.Generator().manual_seed(1)
    images, labels = torch.rand(60, *IMAGE, generator=g), torch.arange(60) % 10
    data = Dataset(
        "fixture",
        TensorImages(images, labels),
        None,
        (images[:20] - 0.5) / 0.25,
        labels[:20],
        (0.5,),
        (0.25,),
        IMAGE[1],
        10,
    )
    (tmp_path / "staging").mkdir()
    cfg = JobConfig(out=tmp_path / "out", int8=int8, log=lambda m: None)
    return RunContext(cfg=cfg, log=cfg.log, staging=tmp_path / "staging", model=net, data=data, onnx={"static": static})


def test_without_int8_the_stage_is_not_requested(tmp_path):
    ctx = _context(tmp_path, int8=False)
    result = int8_stage.run(ctx)
    assert result.status == "not-available" and "--int8" in result.reason
    assert result.sections == {"int8": None} and ctx.int8_path is None and not list(ctx.staging.iterdir())
    assert int8_stage.markdown({"int8": None}) == []


def _failed_and_kept_aside(ctx, reason: str):
    """The stage failed its check for ``reason``: its file is written only as the failed one, and no later stage
    (parity, latency, fastest runtime, serving) gets an INT8 file to run."""
    result = int8_stage.run(ctx)
    assert result.status == "failed" and result.checks == {"int8-accuracy": False}
    assert reason in result.reasons["int8-accuracy"], result.reasons
    assert ctx.int8_path is None, "no later stage runs or deploys it"
    assert sorted(p.name for p in ctx.staging.iterdir()) == [int8_stage.FAILED_FILE]
    return result


def test_no_mix_meeting_the_bound_fails_the_check_and_deploys_nothing(tmp_path, monkeypatch):
    from deploy.int8 import sensitivity

    def no_mix(static, out, calibration, x_val, y_val, max_drop, method, threads, log):
        assert len(calibration) == 30 and len(x_val) == 30, "half the 60 training images calibrate, the rest validate"
        shutil.copy(static, out)
        return sensitivity.Int8Result(
            Path(out),
            False,
            90.0,
            70.0,
            max_drop,
            [("node_conv2d", 0.5)],
            {"node_conv2d": 0.5},
            ["node_conv2d", "node_linear"],
            [{"fp32_layers": 0, "accuracy": 70.0}],
        )

    monkeypatch.setattr(sensitivity, "controlled_int8", no_mix)
    ctx = _context(tmp_path, int8=True)
    result = _failed_and_kept_aside(ctx, "no mix of INT8 and FP32 layers met the 1 pp bound")
    assert result.files == {"onnx:static-int8-failed": int8_stage.FAILED_FILE}
    section = result.sections["int8"]
    assert section["passed"] is False and section["fp32_layers"] == [
        {"layer": "node_conv2d", "module": "0", "sensitivity": 0.5}
    ]
    text = "\n".join(int8_stage.markdown({"int8": section}))
    assert "FAILED: no mix" in text and "`0 (node_conv2d)`: 0.5" in text, (
        "the layer by its PyTorch name and its node name"
    )


def test_a_file_whose_every_layer_control_kept_fp32_is_not_deployed_as_int8(tmp_path, monkeypatch):
    """Control's last resort (every quantizable layer FP32) meets any bound but has no Q/DQ node left."""
    from deploy.int8 import sensitivity

    def all_fp32(static, out, calibration, x_val, y_val, max_drop, method, threads, log):
        shutil.copy(static, out)  # what Quantizer.write gives with every layer excluded: the float graph
        r = sensitivity.Int8Result(
            Path(out), True, 50.0, 50.0, max_drop, [("node_linear", 0.1)], layers=["node_linear"]
        )
        r.min_agreement, r.agreement = 0.97, 1.0
        return r

    monkeypatch.setattr(sensitivity, "controlled_int8", all_fp32)
    _failed_and_kept_aside(
        _context(tmp_path, int8=True), "the file holds no INT8 layer: 1 of 1 quantizable layers kept"
    )


def test_single_channel_convolutions_are_named_in_the_section_and_the_report(tmp_path):
    """The fixture's first conv reads the one-channel image: FP32 always, said as such, not ranked."""
    ctx = _context(tmp_path, int8=True)
    section = int8_stage.run(ctx).sections["int8"]
    assert section["single_channel_fp32"] == ["node_conv2d"] and section["layers"] == ["node_linear"]
    text = "\n".join(int8_stage.markdown({"int8": {**section, "file": int8_stage.INT8_FILE}}))
    assert "Always FP32, reading one input channel (ONNX Runtime's INT8 kernel is slower there): `node_conv2d`." in text


def test_test_images_that_disagree_more_than_the_tolerance_table_allows_fail_the_check(tmp_path, monkeypatch):
    """Validation met both bars, but on the test images the INT8 answers differ from the float ones too often."""
    import numpy as np

    from deploy.int8 import sensitivity

    def met(static, out, calibration, x_val, y_val, max_drop, method, threads, log):
        shutil.copy(static, out)
        r = sensitivity.Int8Result(Path(out), True, 50.0, 50.0, max_drop, layers=["node_conv2d", "node_linear"])
        r.min_agreement, r.agreement = 0.97, 1.0
        return r

    real_logits = sensitivity.logits

    def logits(model, x, threads=None):
        out = real_logits(model, x, threads)
        if Path(model).name == int8_stage.INT8_FILE:  # the "INT8" file: every other image's answer moved
            out, rows = out.copy(), np.arange(0, len(out), 2)
            out[rows, (out[rows].argmax(-1) + 1) % out.shape[1]] += 1e3
        return out

    monkeypatch.setattr(sensitivity, "controlled_int8", met)
    monkeypatch.setattr(sensitivity, "logits", logits)
    ctx = _context(tmp_path, int8=True)
    result = int8_stage.run(ctx)
    section = result.sections["int8"]
    assert section["test"]["agreement"] == 0.5, section["test"]
    assert result.status == "failed" and ctx.int8_path is None
    assert (
        "agrees with the float file's on 50.00 % of the test images, below the 97 %" in result.reasons["int8-accuracy"]
    )
    assert "| test, 20 |" in "\n".join(int8_stage.markdown({"int8": section}))
