"""The parity stage alone, from fixtures: a small AnaNN with BatchNorm, a residual depthwise block and a 1x1 conv,
its three ONNX files, and test images that were not the export's inputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import acl
from pipeline.datasets import Dataset
from pipeline.stages import JobConfig, RunContext
from pipeline.stages import parity as parity_stage
from pipeline.validate import FP16_FILE
from tests.conftest import trained_looking_bn

IMAGE = (1, 12, 12)
ORT_ROWS = {"ort-cpu:static", "ort-cpu:live", "ort-cpu:live-akp", "ort-cpu:static-fp16", "ort-cpu:live-akp(fed)"}


class _Residual(nn.Module):
    """Depthwise 3x3, BatchNorm, pointwise 1x1, BatchNorm, added to its input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import export

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        _Residual(8),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    model = trained_looking_bn(acl.convert(net, "G0.25Lg0.25P0.5", layers="all"), IMAGE)
    assert len(acl.acl_layers(model)) >= 2, "the stem and the depthwise conv are ACLs"
    folder = tmp_path_factory.mktemp("onnx")
    paths = export.export_files(model, {k: folder / f"model.{k}.onnx" for k in export.KINDS}, (1, *IMAGE))
    return model, paths


def _context(model, paths, staging, log) -> RunContext:
    x = np.random.default_rng(123).standard_normal((16, *IMAGE)).astype(np.float32)  # not the export's inputs
    data = Dataset(
        name="fixture",
        train_set=None,
        test_set=None,
        x_test=torch.from_numpy(x),
        y_test=torch.zeros(16, dtype=torch.int64),
        mean=(0.0,),
        std=(1.0,),
        image_size=IMAGE[1],
        num_classes=10,
    )
    staging.mkdir()
    cfg = JobConfig(out=staging.parent / "out", backends=("ort-cpu",), batch_sizes=(1,), log=log)
    return RunContext(cfg=cfg, log=log, staging=staging, threads=1, model=model, data=data, onnx=dict(paths))


def test_every_row_passes_and_the_fp16_file_is_returned(exported, tmp_path):
    model, paths = exported
    said: list[str] = []
    ctx = _context(model, paths, tmp_path / "staging", said.append)
    result = parity_stage.run(ctx)
    assert (result.status, result.reason) == ("ok", None)
    assert set(result.sections) == {"tolerances", "parity"} and result.sections["parity"] is ctx.parity
    parity = ctx.parity
    assert set(parity) == {"torch:baked", *ORT_ROWS}
    assert all(parity[k]["passed"] and parity[k]["top1_agreement"] == 1.0 for k in parity), parity
    assert parity["ort-cpu:static"]["max_abs_err"] < 1e-4 and parity["ort-cpu:static-fp16"]["precision"] == "fp16"
    assert result.checks == dict.fromkeys(parity, True)
    assert result.files == {"onnx:static-fp16": FP16_FILE} and (ctx.staging / FP16_FILE).is_file()
    assert "torch:eager" in [r.key for r in ctx.rows], "the reference row is kept for the latency stage"
    assert any(line.strip().startswith("ort-cpu:live-akp(fed)") and line.endswith("pass") for line in said)
    md = "\n".join(parity_stage.markdown({**result.sections, "data": {"test": 16}}))
    assert "On the 16 test images" in md and "| ort-cpu:static-fp16 | fp16 |" in md


def test_a_model_changed_after_export_fails_the_stage_row_by_row(exported, tmp_path):
    model, paths = exported
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed[-1].bias += 0.5  # every logit moves; the ONNX files keep the old bias
    result = parity_stage.run(_context(changed, paths, tmp_path / "staging", lambda msg: None))
    assert result.status == "failed"
    assert result.checks["torch:baked"] is True, "PyTorch's own baked copy follows the change"
    assert {k for k, ok in result.checks.items() if ok is False} == ORT_ROWS
    assert result.reason.startswith("parity failed for ") and "ort-cpu:static" in result.reason


def test_an_unknown_backend_is_refused_before_anything_runs():
    from pipeline.errors import UserError

    with pytest.raises(UserError, match=r"unknown backend\(s\) tpu; expected some of torch, ort-cpu"):
        parity_stage.check(JobConfig(backends=("ort-cpu", "tpu")))
    assert parity_stage.backend_names(("ort-cpu",)) == ("torch", "ort-cpu")
