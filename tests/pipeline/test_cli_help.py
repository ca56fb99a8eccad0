"""The commands' ``--help`` (each default stated once, and truly) and their argument checks before torch loads."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "onnx", "onnxruntime", "numpy", "tensorrt", "torchvision")


PARSERS = {
    "python -m pipeline.export": ("pipeline.export", None),
    "python -m pipeline.reproduce": ("pipeline.reproduce", None),
    "python -m deploy.tensorrt": ("deploy.tensorrt.__main__", None),
    "python -m deploy.tensorrt check": ("deploy.tensorrt.__main__", "check"),
}


def _parser(name: str) -> argparse.ArgumentParser:
    import importlib

    module, sub = PARSERS[name]
    p = importlib.import_module(module).parser()
    if sub is None:
        return p
    return next(a for a in p._actions if isinstance(a, argparse._SubParsersAction)).choices[sub]


def _typed(value) -> str:
    """A default as typed on the command line."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(_typed, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _helps(p: argparse.ArgumentParser) -> dict[str, str]:
    fmt = p._get_formatter()
    return {"/".join(a.option_strings) or a.dest: fmt._expand_help(a) for a in p._actions if a.help}


@pytest.mark.parametrize("name", list(PARSERS))
def test_every_default_is_stated_once_and_is_the_real_one(name):
    p = _parser(name)
    helps = _helps(p)
    for action in p._actions:
        text = helps.get("/".join(action.option_strings) or action.dest, "")
        assert text.count("(default") <= 1, f"{name} {action.option_strings}: {text}"
        assert "(default: None)" not in text and "(default: False)" not in text, f"{name}: {text}"
        default = action.default
        if action.option_strings and not any(default is v for v in (None, False, argparse.SUPPRESS)):
            assert f"(default: {_typed(default)})" in text, f"{name} {action.option_strings}: {text}"
    page = " ".join(p.format_help().split())
    assert "(default: None)" not in page and "(default: False)" not in page, page


def test_defaults_described_in_words_are_the_ones_the_code_uses():
    from pipeline import archs
    from pipeline.experiments.grid import FULL, QUICK
    from pipeline.experiments.runner import default_jobs
    from pipeline.train import DEFAULT_LR

    export = _helps(_parser("python -m pipeline.export"))
    assert f"else exp3's ratio {archs.DEFAULT_SPEC})" in export["--spec"]
    adam, sgd = re.search(r"\(default: (\S+) for adam, (\S+) for sgd\)", export["--lr"]).groups()
    assert (float(adam), float(sgd)) == (DEFAULT_LR["adam"], DEFAULT_LR["sgd"])
    reproduce = _helps(_parser("python -m pipeline.reproduce"))
    assert f"(default: {QUICK.seeds} with --quick, else {FULL.seeds})" in reproduce["--seeds"]
    for arch in ("lenet", "cnn4"):
        assert f"{arch} {QUICK.epochs[arch]}" in reproduce["--epochs"].split("with --quick")[0]
        assert f"{arch} {FULL.epochs[arch]}" in reproduce["--epochs"].split("with --quick")[1]
    assert "(default: min(2, cores))" in reproduce["--jobs"]
    assert default_jobs() == min(2, os.cpu_count() or 1)


def test_backends_help_lists_every_backend():
    from deploy.backends import ALL_BACKENDS

    text = _helps(_parser("python -m pipeline.export"))["--backends"]
    assert f"subset of {','.join(ALL_BACKENDS)};" in text and "openvino" in text


# ------------------------------------------------------- argument errors before torch

_PROBE = r"""
import contextlib, io, json, sys
from pathlib import Path
HEAVY = {heavy!r}
results = []
for module, argv in json.loads(sys.argv[1]):
    main = __import__(module, fromlist=["main"]).main
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    results.append({{"argv": argv, "code": code, "err": err.getvalue(), "out": out.getvalue(),
                     "heavy": [m for m in HEAVY if m in sys.modules]}})
    if results[-1]["heavy"]:
        break  # later cases would see what this one imported
print(json.dumps(results))
"""


def _probe(cases: list[tuple[str, list[str]]]) -> list[dict]:
    code = _PROBE.format(heavy=HEAVY)
    res = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


def test_bad_arguments_are_refused_before_torch_or_onnx_is_imported(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    text = tmp_path / "model.txt"
    text.write_text("not a checkpoint")
    out = str(tmp_path / "never")
    export_cases = [
        ["--typo"],
        ["--arch", "lenett"],
        ["--arch", "mynets.small:build"],
        ["--arch", "torchvision:9x"],
        ["--model", "lenet"],
        ["--model", "my nets:build"],
        ["--model", "no_such_module_h6:build"],
        ["--backends", "torch,ort-cpuu"],
        ["--data", "digitz"],
        ["--data", "mnist:"],
        ["--spec", "G0.5X"],
        ["--layers", " , "],
        ["--checkpoint", str(tmp_path / "missing.safetensors")],
        ["--checkpoint", str(folder)],
        ["--checkpoint", str(text)],
        ["--init-from", str(tmp_path / "missing.pt")],
        ["--checkpoint", str(text), "--init-from", str(text)],
        ["--batch-size", "0"],
        ["--batch-size", "70000"],
        ["--lr", "nan"],
        ["--lr", "-1"],
        ["--workers", "65"],
        ["--epochs", "-1"],
        ["--optimizer", "adamw"],
    ]
    cases = [("pipeline.export", ["--out", out, *argv]) for argv in export_cases]
    cases += [
        ("pipeline.reproduce", ["--out", out, *argv])
        for argv in (
            ["--typo"],
            ["--jobs", "0"],
            ["--data", "digitz"],
            ["--lr", "-1"],
            ["--seeds", "2"],
            ["--batch-size", "0"],
            ["--limit", "0"],
            ["--sweep-arch", "resnet18"],
        )
    ]
    cases += [("deploy.tensorrt.__main__", argv) for argv in ([], ["--typo"], ["check"], ["chek", "m.onnx"])]
    cases += [("pipeline.export", ["--help"]), ("pipeline.reproduce", ["--help"])]
    results = _probe(cases)
    for r in results:
        assert not r["heavy"], f"{r['argv']} imported {r['heavy']} before refusing: {r['err']}"
    assert len(results) == len(cases)
    for r in results:
        lines = r["err"].splitlines()
        if r["argv"][-1:] == ["--help"]:
            assert r["code"] == 0 and "usage:" in r["out"], r
            continue
        assert r["code"] == 2, r
        assert len(lines) == 1 and lines[0].startswith("error: "), r
        assert "Traceback" not in r["err"]
    assert not (tmp_path / "never").exists()


def _late(fn) -> str:
    """The message the job's own (later) check gives."""
    from pipeline.errors import UserError

    with pytest.raises((ValueError, UserError)) as e:
        fn()
    return str(e.value)


def test_early_messages_are_the_jobs_own(tmp_path):
    from pipeline import archs, early_checks, stages, train
    from pipeline import checkpoint as ckpt
    from pipeline.datasets import DATA_HELP, load_dataset
    from pipeline.export import parser
    from pipeline.stages import inputs as inputs_stage
    from pipeline.stages import parity as parity_stage

    assert early_checks.ARCH_NAMES == tuple(archs.ARCHS)
    assert early_checks.DATA_HELP == DATA_HELP
    assert early_checks.MAX_TRAIN_BATCH == train.MAX_BATCH_SIZE
    assert early_checks.MAX_TRAIN_WORKERS == train.MAX_WORKERS

    def early(*argv: str) -> str:
        return early_checks.problem(parser().parse_args(list(argv)))

    missing = tmp_path / "missing.safetensors"
    text = tmp_path / "model.txt"
    text.write_text("x")
    pairs = [
        (early("--backends", "ort-cpuu"), lambda: parity_stage.backend_names(("ort-cpuu",))),
        (early("--arch", "lenett"), lambda: archs.resolve("lenett")),
        (early("--arch", "torchvision:9x"), lambda: archs.resolve("torchvision:9x")),
        (early("--arch", "a.b:c"), lambda: inputs_stage._check_model_options(stages.JobConfig(arch="a.b:c"))),
        (early("--model", "lenet"), lambda: inputs_stage._check_model_options(stages.JobConfig(model="lenet"))),
        (early("--model", "a b:c"), lambda: archs.load_factory("a b:c")),
        (early("--model", "no_such_module_h6.x:f"), lambda: archs.load_factory("no_such_module_h6.x:f")),
        (early("--data", "digitz"), lambda: load_dataset("digitz")),
        (early("--data", "cifar10:"), lambda: load_dataset("cifar10:")),
        (early("--layers", ","), lambda: archs.parse_layers(",")),
        (early("--checkpoint", str(missing)), lambda: ckpt.load(missing, arch="lenet")),
        (early("--checkpoint", str(text)), lambda: ckpt.load(text, arch="lenet")),
        (early("--checkpoint", str(tmp_path)), lambda: ckpt.load(tmp_path, arch="lenet")),
        (early("--init-from", str(missing)), lambda: ckpt.read_init(missing, arch="lenet")),
        (
            early("--init-from", str(text), "--checkpoint", str(text)),
            lambda: inputs_stage._check_model_options(stages.JobConfig(init_from=text, checkpoint=text)),
        ),
    ]
    for args, (batch, lr, workers) in {
        ("--batch-size", "0"): (0, None, None),
        ("--batch-size", "65537"): (65537, None, None),
        ("--lr", "inf"): (64, float("inf"), None),
        ("--workers", "-1"): (64, None, -1),
    }.items():
        options = {"batch_size": batch, "lr": lr, "optimizer": "adam", "workers": workers, "amp": "off"}
        pairs.append((early(*args), lambda options=options: train.check_options(**options)))
    for said, late in pairs:
        assert said is not None
        assert said == _late(late)
    assert early() is None  # the defaults pass
    assert early("--arch", "torchvision:resnet18", "--spec", "G3P5", "--data", "folder:x:64") is None


def test_a_typo_reaches_the_user_as_one_line_through_the_command(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "pipeline.export", "--out", str(tmp_path / "o"), "--arch", "lenett"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 2 and res.stderr.startswith("error: unknown --arch 'lenett'; expected one of lenet")
    assert len(res.stderr.splitlines()) == 1 and not (tmp_path / "o").exists()
