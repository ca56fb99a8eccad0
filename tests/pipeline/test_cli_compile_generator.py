"""``--compile-generator``: parsed into the ``JobConfig``, threaded to every ``train`` call of the job, refused up
front without a C++ compiler, outside the resume key, in the report's training section."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline import early_checks
from pipeline.errors import UserError
from tests.in_process import run_main
from tests.pipeline.test_early_checks import QUICK, QUICK_ARGS


def test_the_flag_reaches_the_job_config_and_takes_no_value(capsys, tmp_path):
    from pipeline.export import job_config, parser

    assert job_config(parser().parse_args(["--compile-generator"])).compile_generator is True
    assert job_config(parser().parse_args([])).compile_generator is False
    code, _, err = run_main(capsys, ["--out", str(tmp_path / "o"), "--compile-generator=yes"])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: argument --compile-generator: ignored explicit argument 'yes'"), err
    assert not (tmp_path / "o").exists()


def test_help_lists_the_flag():
    from pipeline.export import parser

    page = " ".join(parser().format_help().split())
    assert (
        "--compile-generator train the ACLs with the compiled kernel generator (torch.compile; the first step "
        "compiles for some seconds; needs a C++ compiler)" in page
    ), page


def test_no_compiler_is_one_line_and_exit_2_in_the_cli_and_a_user_error_in_the_api(monkeypatch, capsys, tmp_path):
    from pipeline.stages import JobConfig, run

    missing = str(tmp_path / "no-such-c++")
    monkeypatch.setenv("CXX", missing)  # what inductor would run: nothing there
    message = early_checks.no_compiler(missing)
    assert early_checks.compiler_problem(True) == message and early_checks.compiler_problem(False) is None
    assert f"{missing!r} ($CXX) was not found" in message
    assert "install g++" in message and "drop --compile-generator" in message
    out = tmp_path / "cli"
    code, _, err = run_main(capsys, ["--out", str(out), *QUICK_ARGS, "--compile-generator"])
    assert code == 2, err
    assert err.splitlines() == [f"error: {message}"] and "Traceback" not in err
    with pytest.raises(UserError) as e:
        run(JobConfig(out=tmp_path / "api", compile_generator=True, **QUICK))
    assert str(e.value) == message
    assert not out.exists() and not (tmp_path / "api").exists()


def test_the_default_compiler_is_looked_up_when_cxx_is_unset(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(early_checks.shutil, "which", lambda name: None)
    name = early_checks.cxx_compiler()
    assert name in ("g++", "clang++", "cl")
    assert early_checks.compiler_problem(True) == early_checks.no_compiler(name)
    assert "(the default; set CXX to use another)" in early_checks.no_compiler(name)


def test_training_and_prune_finetuning_get_the_flag(monkeypatch, tmp_path):
    from pipeline import train as T
    from pipeline.stages import JobConfig, RunContext
    from pipeline.stages import model as model_stage
    from pipeline.stages.prune_steps import finetune
    from tests.pipeline.resume_job import tiny_net

    calls = []
    monkeypatch.setattr(T, "train", lambda *a, **k: calls.append(k) or SimpleNamespace(seconds=0.0))
    data = SimpleNamespace(name="d", train_size=1, image_size=8, mean=(0.0,), std=(1.0,), describe=lambda: "d")
    for flag in (True, False):
        cfg = JobConfig(out=tmp_path / "o", compile_generator=flag, prune_finetune=1, log=lambda m: None)
        ctx = RunContext(cfg=cfg, log=lambda m: None, model=tiny_net(), data=data, arch="x", spec="G0.25P0.75")
        model_stage._train(ctx)
        finetune(ctx, ctx.model)
    assert [k["compile_generator"] for k in calls] == [True, True, False, False]


def test_resuming_with_or_without_the_flag_continues_the_same_run(tmp_path):
    from pipeline.stages import JobConfig
    from pipeline.stages.model import _resume_store

    data = SimpleNamespace(name="d", train_size=1, image_size=8, mean=(0.0,), std=(1.0,))
    dist = SimpleNamespace(world_size=1, is_main=True)
    model = torch.nn.Linear(1, 1)
    keys = set()
    for flag in (False, True):
        cfg = JobConfig(out=tmp_path / "o", compile_generator=flag, log=lambda m: None)
        ctx = SimpleNamespace(cfg=cfg, arch="lenet", spec="G0.5P0.5", layers="all", model=model, data=data)
        keys.add(_resume_store(ctx, None, dist).key)
    assert len(keys) == 1


def test_the_report_records_it():
    from pipeline.report import model_section
    from pipeline.stages.model import _training
    from pipeline.train import TrainResult

    for flag in (False, True):
        training = _training(TrainResult(epochs=1, world_size=1, compile_generator=flag))
        assert training["compile_generator"] is flag
        model = {"arch": "x", "spec": "G1", "trained": True, "epochs": 1, "train_seconds": 1.0, "world_size": 1}
        model |= {"training": training, "parameters": {"total": 1, "learnable_kernel": 1, "conv_kernel_equivalent": 1}}
        data = {"name": "d", "train": 1, "test": 1, "image_size": 8}
        verdict = {"passed": True, "checks": 1, "failed": [], "not_available": [], "warnings": []}
        lines = model_section({"model": model, "data": data, "accuracy": 0.5, "compact_factor": {}, "verdict": verdict})
        assert any("ACL kernels by the compiled generator" in ln for ln in lines) is flag
