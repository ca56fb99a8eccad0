"""``--prune`` / ``--prune-finetune`` through the job: smaller exported initializers, no gather or mask nodes,
the checkpoint rebuilt from its recorded shapes; bad values are one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.pipeline.conftest import SHORT_JOB
from tests.pipeline.test_cli_help import _probe

FAST = ["--epochs", "2", *SHORT_JOB]
SPEC = "G0.25D0.25P0.5"  # analytic, fixed and plain kernels
MASKING_OPS = {"Gather", "GatherElements", "GatherND", "Where", "Compress", "ScatterND", "ScatterElements"}


def test_bad_values_are_refused_before_torch_with_one_line_and_nothing_written(tmp_path):
    out = str(tmp_path / "never")
    cases = [
        (["--prune", "100"], "error: argument --prune: 100 is out of range, expected 0 to 99.9"),
        (["--prune", "-1"], "error: argument --prune: -1 is out of range, expected 0 to 99.9"),
        (["--prune", "nan"], "error: argument --prune: nan is out of range, expected 0 to 99.9"),
        (["--prune", "half"], "error: argument --prune: 'half' is not a number, expected 0 to 99.9"),
        (["--prune-finetune", "2"], "error: --prune-finetune 2 fine-tunes a pruned model, but --prune is not given"),
        (["--prune", "50", "--prune-finetune", "-1"], "error: --prune-finetune -1 is out of range, expected 0 to"),
        (["--prune", "50", "--prune-rank", "flops"],
         "error: argument --prune-rank: 'flops' is not a ranking, expected saliency, saliency-per-flop, "
         "saliency-per-cost or channel-per-cost"),
        (["--prune-rank", "saliency-per-flop"], "error: --prune-rank saliency-per-flop ranks kernels to prune, but "
         "--prune is not given, expected --prune PCT too"),
        (["--prune", "50", "--prune-align", "0"], "error: --prune-align 0 is out of range, expected 1 to 64"),
        (["--prune-align", "8"], "error: --prune-align 8 aligns pruned channels, but --prune is not given, expected"),
    ]  # fmt: skip
    results = _probe([("pipeline.export", ["--out", out, *argv]) for argv, _ in cases])
    assert len(results) == len(cases)
    for r, (_, fragment) in zip(results, cases):
        lines = r["err"].splitlines()
        assert not r["heavy"], f"{r['argv']} imported {r['heavy']}"
        assert r["code"] == 2 and len(lines) == 1 and lines[0].startswith(fragment) and "expected" in lines[0], r
    assert not Path(out).exists() and list(tmp_path.iterdir()) == []


def test_the_stage_refuses_bad_values_given_through_the_api():
    from pipeline.errors import UserError
    from pipeline.stages import JobConfig
    from pipeline.stages import prune as stage

    with pytest.raises(UserError, match="--prune 120 is out of range, expected 0 to 99.9"):
        stage.check(JobConfig(prune=120))
    with pytest.raises(UserError, match="but --prune is not given, expected --prune PCT too"):
        stage.check(JobConfig(prune_finetune=1))
    with pytest.raises(UserError, match="--prune-rank 'flops' is not a ranking, expected saliency, saliency-per-flop"):
        stage.check(JobConfig(prune=50, prune_rank="flops"))
    stage.check(JobConfig(prune=99.9, prune_finetune=1))
    with pytest.raises(UserError, match="--prune-align 65 is out of range, expected 1 to 64"):
        stage.check(JobConfig(prune=50, prune_align=65))
    stage.check(JobConfig(prune=50, prune_rank="saliency-per-flop", prune_align=8))
    for rank in ("saliency-per-cost", "channel-per-cost"):
        stage.check(JobConfig(prune=90, prune_rank=rank))
        with pytest.raises(UserError, match=f"--prune-rank {rank} ranks kernels to prune, but --prune is not given"):
            stage.check(JobConfig(prune_rank=rank))


def _ops(model: onnx.ModelProto) -> set[str]:
    """The graph's op types; the live files' ``ai.acl`` functions (the family generators, which read AKP columns
    with Gather in any live file) are not pruning's and are left out."""
    return {n.op_type for n in model.graph.node}


def _conv_weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    names = [n.input[1] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    return {n: inits[n] for n in names}


def _check_files(out: Path, report: dict, model) -> None:
    """Every exported file: no masking op; the static file's Conv/Gemm weights are the pruned model's, none all-zero."""
    import acl

    for key, rel in report["files"].items():
        if key.startswith("onnx:"):
            assert not _ops(onnx.load(str(out / rel))) & MASKING_OPS, key
    baked = {f"{k}": v.detach().numpy() for k, v in acl.bake(model).state_dict().items() if k.endswith("weight")}
    static = _conv_weights(onnx.load(str(out / report["files"]["onnx:static"])))
    assert static and sum(w.size for w in static.values()) == sum(
        baked[k].size for k in baked if k.startswith(("conv", "fc"))
    )
    for name, w in static.items():
        if w.ndim == 4:  # no all-zero output or input slice: those channels would have been removed or refilled
            assert (np.abs(w).reshape(w.shape[0], -1).sum(1) > 0).all(), name
            assert (np.abs(w).transpose(1, 0, 2, 3).reshape(w.shape[1], -1).sum(1) > 0).all(), name


@pytest.mark.slow
def test_a_pruned_fine_tuned_anann_exports_smaller_files_and_reloads(tmp_path):
    from pipeline import checkpoint
    from pipeline.export import main

    out = tmp_path / "run"
    assert main(["--out", str(out), *FAST, "--spec", SPEC, "--prune", "60", "--prune-finetune", "1", "--int8"]) == 0
    report = json.loads((out / "report.json").read_text())
    prune = report["prune"]
    assert prune["form"] == "acl" and prune["exact"]["passed"] and "finetuned" in prune["accuracy"]
    assert prune["parameters"]["after"]["deployed"] < prune["parameters"]["before"]["deployed"]
    assert prune["channels"], "some channel was removed"
    assert "## Channel pruning (ExplainFix ChannelPrune)" in (out / "report.md").read_text()
    model, meta = checkpoint.load(out / "model.safetensors")  # rebuilt from the recorded shapes
    assert json.loads(meta["pruned"]) == prune["shapes"]
    for name, entry in prune["shapes"].items():
        m = model.get_submodule(name)
        if entry["kind"] == "acl":
            assert str(m.spec) == entry["spec"]
    _check_files(out, report, model)
    assert "onnx:static-int8" in report["files"] or "int8" in json.dumps(report["stages"].get("int8", {}))


@pytest.mark.slow
def test_pruning_a_checkpoint_without_fine_tuning_keeps_the_exact_model_and_bad_shapes_are_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from pipeline import checkpoint
    from pipeline.export import main

    first = tmp_path / "first"
    assert main(["--out", str(first), *FAST, "--spec", SPEC, "--prune", "30"]) == 0
    report = json.loads((first / "report.json").read_text())
    assert report["prune"]["form"] == "baked" and "finetuned" not in report["prune"]["accuracy"]
    assert report["prune"]["rank"] == "saliency"  # the paper's ranking unless asked
    model, _ = checkpoint.load(first / "model.safetensors")
    _check_exported_equals(first, report, model)
    second = tmp_path / "second"  # prune the pruned checkpoint again, ranked per multiply-add
    source = ["--checkpoint", str(first / "model.safetensors"), "--prune", "30", "--prune-rank", "saliency-per-flop",
              "--prune-align", "4"]  # fmt: skip
    assert main(["--out", str(second), *FAST, *source]) == 0
    again = json.loads((second / "report.json").read_text())["prune"]
    assert again["rank"] == "saliency-per-flop" and again["exact"]["passed"] and again["zeroed_kernels"] > 0
    convs = [n for n, e in again["shapes"].items() if e["kind"] in ("conv", "acl")]
    assert again["align"] == 4 and all(a % 4 == 0 or a == b for n in convs for b, a in again["channels"].get(n, {}).values())
    assert "per multiply-add" in (second / "report.md").read_text()
    with safe_open(str(second / "model.safetensors"), "pt") as f:
        assert f.metadata()["prune_rank"] == "saliency-per-flop"
    with safe_open(str(first / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["prune_rank"] == "saliency"
    shapes = json.loads(meta["pruned"])
    shapes["conv2"]["out"] = 99
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(first / "model.safetensors")), str(bad), metadata=meta | {"pruned": json.dumps(shapes)})
    never = tmp_path / "never"
    results = _probe([("pipeline.export", ["--out", str(never), "--checkpoint", str(bad), *FAST])])
    lines = results[0]["err"].splitlines()
    assert results[0]["code"] == 2 and len(lines) == 1, results[0]
    assert "pruned shapes do not match the architecture at 'conv2'" in lines[0] and "expected" in lines[0]
    assert not never.exists()


def _check_exported_equals(out: Path, report: dict, model) -> None:
    import acl

    static = _conv_weights(onnx.load(str(out / report["files"]["onnx:static"])))
    baked = acl.bake(model)
    for name, w in static.items():
        assert tuple(w.shape) == tuple(baked.get_parameter(name).shape), name


def test_a_model_pruning_cannot_read_is_a_one_line_user_error():
    import torch
    from torch import nn

    from pipeline.errors import UserError
    from pipeline.stages.prune_steps import prune_model

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            y = self.conv(x)
            y = y if y.sum() > 0 else -y  # data-dependent control flow: torch.fx cannot trace it
            return self.fc(y.mean((2, 3)))

    x, y = torch.randn(60, 1, 8, 8), torch.randint(0, 3, (60,))
    with pytest.raises(UserError, match="cannot trace the model's channels with torch.fx .* expected a forward"):
        prune_model(Branchy().eval(), x, y, 50)
    pointwise = nn.Sequential(nn.Conv2d(1, 4, 1), nn.Flatten(), nn.Linear(256, 3)).eval()
    with pytest.raises(UserError, match="--prune: the model has no spatial convolution .* expected at least one"):
        prune_model(pointwise, x, y, 50)


def test_pruning_the_shared_runs_checkpoint_is_exact_and_its_checkpoint_rebuilds(lenet_run, tmp_path):
    """The quick suite's pruning job: the default run's AnaNN-LeNet pruned at 70 %, no fine-tuning."""
    from pipeline import checkpoint
    from pipeline.export import main

    out = tmp_path / "pruned"
    source = ["--checkpoint", str(lenet_run["out"] / "model.safetensors"), "--prune", "70", "--prune-align", "2"]
    assert main(["--out", str(out), *SHORT_JOB, *source]) == 0
    report = json.loads((out / "report.json").read_text())
    prune = report["prune"]
    assert prune["exact"]["passed"] and prune["rank"] == "saliency" and prune["align"] == 2, prune["exact"]
    assert prune["parameters"]["after"]["deployed"] < prune["parameters"]["before"]["deployed"]
    assert report["verdict"]["passed"] and all(row["passed"] for row in report["parity"].values())
    model, meta = checkpoint.load(out / "model.safetensors")  # rebuilt from the recorded pruned shapes
    assert json.loads(meta["pruned"]) == prune["shapes"]
    _check_exported_equals(out, report, model)
    for name, entry in prune["shapes"].items():
        if entry["kind"] == "acl":
            assert str(model.get_submodule(name).spec) == entry["spec"], name


def test_channel_per_cost_through_the_job_is_exact_recorded_and_has_no_masking_op(lenet_run, tmp_path):
    """``--prune-rank channel-per-cost`` (ours) on the shared run's checkpoint: exact, parity rows pass, the ranking in
    report.json, report.md and the checkpoint, and the files hold smaller initializers and no gather or mask node."""
    from safetensors import safe_open

    from pipeline import checkpoint
    from pipeline.export import main

    out = tmp_path / "classes"
    source = ["--checkpoint", str(lenet_run["out"] / "model.safetensors"), "--prune", "70", "--prune-rank",
              "channel-per-cost"]  # fmt: skip
    assert main(["--out", str(out), *SHORT_JOB, *source]) == 0
    report = json.loads((out / "report.json").read_text())
    prune = report["prune"]
    assert prune["exact"]["passed"] and prune["rank"] == "channel-per-cost" and prune["channels"], prune["exact"]
    assert prune["parameters"]["after"]["deployed"] < prune["parameters"]["before"]["deployed"]
    assert report["verdict"]["passed"] and all(row["passed"] for row in report["parity"].values())
    md = (out / "report.md").read_text()
    assert "first whole channel classes, lowest Eq. 4" in md and "Zeroed the least salient" not in md, md
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.metadata()["prune_rank"] == "channel-per-cost"
    model, _ = checkpoint.load(out / "model.safetensors")
    _check_exported_equals(out, report, model)
    for key, rel in report["files"].items():
        if key.startswith("onnx:"):
            assert not _ops(onnx.load(str(out / rel))) & MASKING_OPS, key


def test_report_line_names_what_each_ranking_zeroed():
    from pipeline.stages.prune_steps import zeroed_line

    s = {"zeroed_kernels": 45, "spatial_kernels": 50, "percent": 90.0}
    assert zeroed_line({**s, "rank": "saliency"}) == (
        "- Zeroed the least salient 45 of 50 spatial kernels (90 %, Eq. 4 weight x gradient, global ranking)"
    )
    assert "per multiply-add at the layer's output size" in zeroed_line({**s, "rank": "saliency-per-flop"})
    line = zeroed_line({**s, "rank": "channel-per-cost"})
    assert line.startswith("- Zeroed 45 of 50 spatial kernels (90 %): first whole channel classes") and "least salient 45" not in line
