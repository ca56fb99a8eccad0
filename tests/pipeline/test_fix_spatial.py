"""``--fix-spatial`` through the job: frozen spatial filters survive training bit for bit, files pass parity;
bad values are one line, exit 2, refused before torch is imported, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch

from tests.pipeline.conftest import SHORT_JOB
from tests.pipeline.test_cli_help import _probe

FAST = ["--epochs", "2", *SHORT_JOB]
SPEC = "G0.2D0.3H0.1P0.4"  # analytic, fixed and plain kernels in both LeNet ACLs


def test_the_cli_methods_are_the_api_methods():
    from acl.fixing import METHODS
    from pipeline.fix_args import METHODS as CLI_METHODS

    assert CLI_METHODS == METHODS


def fixed_at_start(spec: str, method: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """What the job's inputs and fix_spatial stages make before training, rebuilt here from the same seed."""
    import acl
    from pipeline import archs

    torch.manual_seed(seed)
    model = archs.convert(archs.create("lenet", in_channels=1, num_classes=10), spec, layers="all")
    acl.fix_spatial(model, method, generator=torch.Generator().manual_seed(seed))
    return {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_an_anann_with_fixed_spatial_filters_trains_and_exports(tmp_path):
    from safetensors.torch import load_file

    from pipeline.export import main

    out = tmp_path / "run"
    assert main(["--out", str(out), *FAST, "--spec", SPEC, "--fix-spatial", "psine"]) == 0  # every parity row passed
    report = json.loads((out / "report.json").read_text())
    fix = report["fix_spatial"]
    assert fix["method"] == "psine" and fix["fixed"] == ["conv1", "conv2"] and fix["learning"] == []
    assert report["stages"]["fix_spatial"]["status"] == "ok"
    assert "## Fixed spatial filters (ExplainFix)" in (out / "report.md").read_text()
    start = fixed_at_start(SPEC, "psine")
    trained = load_file(str(out / "model.safetensors"))
    spatial = [k for k in start if k.startswith(("conv1.", "conv2."))]
    assert (
        any(".fixed" in k for k in spatial)
        and any(".akp" in k for k in spatial)
        and any(".plain" in k for k in spatial)
    )
    for k in spatial:
        assert torch.equal(trained[k], start[k]), f"{k} moved in training"
    moved = [k for k in start if k.startswith("fc") and not torch.equal(trained[k], start[k])]
    assert len(moved) == len([k for k in start if k.startswith("fc")]), "the linear layers learned"
    live = onnx.load(str(out / report["files"]["onnx:live-akp"]))
    assert not [i.name for i in live.graph.input if "fixed" in i.name]
    assert {i.name for i in live.graph.input} == {"input", "conv1.akp0_G", "conv2.akp0_G"}


def test_an_interrupted_run_is_not_resumed_under_another_fix(tmp_path):
    """The resume state's key includes the method: a run without --fix-spatial never continues a fixed one."""
    from types import SimpleNamespace

    from pipeline.stages import JobConfig
    from pipeline.stages.model import _resume_store

    data = SimpleNamespace(name="d", train_size=1, image_size=8, mean=(0.0,), std=(1.0,))
    dist = SimpleNamespace(world_size=1, is_main=True)
    model = torch.nn.Linear(1, 1)  # the same initial parameters each time: only the method differs
    keys = []
    for fix in ("none", "dct2", "ghaar", "none"):
        cfg = JobConfig(out=tmp_path / "o", fix_spatial=fix, log=lambda m: None)
        ctx = SimpleNamespace(cfg=cfg, arch="lenet", spec=SPEC, layers="all", model=model, data=data)
        keys.append(_resume_store(ctx, None, dist).key)
    assert len(set(keys)) == 3 and keys[0] == keys[3]


def test_bad_values_are_refused_before_torch_with_one_line_and_nothing_written(tmp_path):
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"not read: refused before")
    out = str(tmp_path / "never")
    cases = [
        (["--fix-spatial", "haar"], "error: argument --fix-spatial: unknown method 'haar', expected one of none"),
        (["--fix-spatial", ""], "error: argument --fix-spatial: unknown method '', expected one of none"),
        (["--fix-spatial", "dct2", "--checkpoint", str(ckpt)], "error: --fix-spatial dct2 sets and freezes spatial"),
        (["--spec", "G0.5H{f=2}P0.5"], "token H{f=2} gives fixed family H (GHaar) a parameter, which would make it"),
        (["--spec", "(1x6)D3S(1)P3"], "token S(1) gives fixed family S (Psine) a parameter"),
    ]
    results = _probe([("pipeline.export", ["--out", out, *argv]) for argv, _ in cases])
    assert len(results) == len(cases)
    for r, (_, fragment) in zip(results, cases):
        lines = r["err"].splitlines()
        assert not r["heavy"], f"{r['argv']} imported {r['heavy']}"
        assert r["code"] == 2 and len(lines) == 1 and fragment in lines[0] and "expected" in lines[0], r
    assert not Path(out).exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_the_job_refuses_a_checkpoint_with_a_fix_given_through_the_api(tmp_path):
    from pipeline.errors import UserError
    from pipeline.stages import JobConfig
    from pipeline.stages import fix_spatial as stage

    with pytest.raises(UserError, match="--checkpoint skips training .* expected one of the two"):
        stage.check(JobConfig(checkpoint=tmp_path / "m.safetensors", fix_spatial="ones"))
    with pytest.raises(UserError, match="unknown --fix-spatial method 'Ones', expected one of none, unchanged"):
        stage.check(JobConfig(fix_spatial="Ones"))
    stage.check(JobConfig(checkpoint=tmp_path / "m.safetensors"))  # none with a checkpoint is fine


def test_frozen_parameters_are_never_handed_to_the_optimizer():
    import acl
    from pipeline import archs
    from pipeline.train import _build_optimizer

    torch.manual_seed(0)
    model = archs.convert(archs.create("lenet", in_channels=1, num_classes=10), SPEC, layers="all")
    acl.fix_spatial(model, "dct2")
    for name in ("adam", "sgd"):
        opt, _ = _build_optimizer(model, name, 1e-3, 10)
        handed = {id(p) for group in opt.param_groups for p in group["params"]}
        assert handed == {id(p) for p in model.parameters() if p.requires_grad}, name
