"""The saliency and ExplainSteer stages alone: sections, report lines, the heatmap, their place in the plan."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import acl
from pipeline.datasets.base import in_memory_dataset
from pipeline.stages import JobConfig, RunContext
from pipeline.stages import explainsteer as steer_stage
from pipeline.stages import saliency as saliency_stage
from pipeline.stages.runner import STAGES
from tests.qdq_models import IMAGE, dw_net


def _data(image, n: int = 80):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, *image, generator=g)
    y = torch.arange(n) % 10
    return in_memory_dataset("fixture", (x, y), (x[:20], y[:20]), None, classes=[str(i) for i in range(10)])


def _context(model, image, tmp_path, said):
    return RunContext(cfg=JobConfig(log=said.append), log=said.append, model=model, data=_data(image), staging=tmp_path)


def _lenet():
    from pipeline.archs import DEFAULT_SPEC, build

    torch.manual_seed(0)
    return build("lenet", DEFAULT_SPEC).eval()


@pytest.mark.parametrize("which", ["anann-lenet", "dwnet"])
def test_saliency_then_explainsteer_sections_and_heatmap(which, tmp_path):
    """AnaNN-LeNet, and an ACL net with BatchNorm, a residual sum, a depthwise and 1x1 convolutions."""
    model, image = (_lenet(), (1, 32, 32)) if which == "anann-lenet" else (dw_net(), IMAGE)
    said: list[str] = []
    ctx = _context(model, image, tmp_path, said)
    result = saliency_stage.run(ctx)
    sec = result.sections["saliency"]
    json.dumps(sec, allow_nan=False)
    assert sec["minibatches"] == 15 and sec["batch_size"] == 4 and sec["variant"] == "weight_grad"
    assert list(sec["layers"]) == list(ctx.saliency.kernels)  # the 1x1 convolutions have no saliency
    assert sum(e["share"] for e in sec["layers"].values()) == pytest.approx(1)
    assert sum(e["kernel_share"] for e in sec["layers"].values()) == pytest.approx(1)
    assert sum(f["share"] for f in sec["families"].values()) == pytest.approx(1)
    assert sec["top"][0]["saliency"] >= sec["top"][-1]["saliency"] >= sec["bottom"][-1]["saliency"]
    assert sec["bottom"][0]["saliency"] == min(float(k.min()) for k in ctx.saliency.kernels.values())
    top = sec["top"][0]
    assert float(ctx.saliency.kernels[top["layer"]][top["out"], top["in"]]) == pytest.approx(top["saliency"])
    assert top["family"] in {f.name for f in acl.FAMILIES.values()}
    assert any("saliency of" in line and "15 minibatches of 4" in line for line in said)

    out = steer_stage.run(ctx)
    assert out.files == {"explainsteer": "explainsteer.png"}
    assert (tmp_path / "explainsteer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    layers = out.sections["explainsteer"]["layers"]
    json.dumps(layers, allow_nan=False)
    assert list(layers) == list(sec["layers"])
    plain, salient = acl.model_spectra(model), acl.model_spectra(model, ctx.saliency)
    for name, e in layers.items():
        assert e["e_d"] == pytest.approx(plain[name].displayed().tolist())
        assert e["e_d_saliency"] == pytest.approx(salient[name].displayed().tolist())
        assert len(e["e_1"]) == sum(e["kernel_size"]) and len(e["e_0"]) == e["kernel_size"][0]

    md = "\n".join(saliency_stage.markdown({**result.sections, "saliency": {**sec, "seconds": 0.5}}))
    assert "## Spatial-kernel saliency (ExplainFix)" in md and "| ACL family |" in md and "Most salient kernels" in md
    md = "\n".join(steer_stage.markdown(out.sections))
    assert "![ExplainSteer heatmaps](explainsteer.png)" in md and f"| {next(iter(layers))} |" in md


def test_a_plain_cnn_has_layer_shares_and_no_family_table(tmp_path):
    from pipeline.archs import build

    torch.manual_seed(0)
    ctx = _context(build("lenet", None).eval(), (1, 32, 32), tmp_path, [])
    sec = saliency_stage.run(ctx).sections["saliency"]
    assert sec["families"] == {} and all("families" not in e for e in sec["layers"].values())
    assert sec["top"][0]["family"] is None and list(sec["layers"]) == ["conv1", "conv2"]
    md = "\n".join(saliency_stage.markdown({"saliency": {**sec, "seconds": 0.1}}))
    assert "| ACL family |" not in md and "| conv1 | 6 |" in md and "| plain |" in md
    assert steer_stage.run(ctx).files == {"explainsteer": "explainsteer.png"}


def test_a_model_without_spatial_convolutions_is_not_available(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Flatten(), nn.Linear(4 * 64, 10))
    ctx = _context(model, (1, 8, 8), tmp_path, [])
    for stage, key in ((saliency_stage, "saliency"), (steer_stage, "explainsteer")):
        result = stage.run(ctx)
        assert result.status == "not-available" and "no spatial convolution" in result.reason
        assert result.sections == {key: None} and stage.markdown(result.sections) == []
    assert not list(tmp_path.iterdir())


def test_the_stages_run_after_training_saliency_first():
    names = [m.NAME for m in STAGES if hasattr(m, "run")]
    assert names.index("model") < names.index("saliency") < names.index("explainsteer") < names.index("report")
