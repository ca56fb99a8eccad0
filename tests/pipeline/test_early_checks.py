"""One message per bad --arch, --model, --spec or --layers value, whichever way the job is started.

``python -m pipeline.export`` refuses these values in ``pipeline.early_checks``,
before torch is imported; ``pipeline.stages.run(JobConfig(...))`` (the API) refuses
them in the inputs stage's check. Both call the function of ``early_checks`` that
owns the message, so the CLI's one ``error:`` line (exit 2) is the API's
``UserError``, word for word, with and without a ``--checkpoint`` (whose own
metadata checks would otherwise speak first).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import early_checks
from pipeline.errors import UserError

# A value that wrongly got through would make a quick run, not a long one.
QUICK = {"epochs": 0, "batch_sizes": (1,), "latency_seconds": 0.01, "backends": ("ort-cpu",), "progress": False}
QUICK_ARGS = [
    "--epochs",
    "0",
    "--batch-sizes",
    "1",
    "--latency-seconds",
    "0.01",
    "--backends",
    "ort-cpu",
    "--threads",
    "1",
]

CASES = {
    # name: (JobConfig fields, the owner's message)
    "unknown-arch": ({"arch": "lenett"}, early_checks.unknown_arch("lenett")),
    "empty-arch": ({"arch": ""}, early_checks.unknown_arch("")),
    "torchvision-name": ({"arch": "torchvision:9x"}, early_checks.torchvision_name_malformed("torchvision:9x")),
    "code-as-arch": (
        {"arch": "a.b:c"},
        "--arch a.b:c names your own code; pass it as --model a.b:c (which imports and runs it), "
        "expected a built-in name or torchvision:<name> after --arch",
    ),
    "builtin-as-model": (
        {"model": "lenet"},
        "--model 'lenet' is not 'package.module:factory'; expected your own factory, "
        "or a built-in name or torchvision:<name> as --arch",
    ),
    "malformed-model": ({"model": "a b:c"}, early_checks.malformed_model("a b:c")),
    "model-not-importable": (
        {"model": "no_such_module_h6.x:f"},
        early_checks.model_not_importable(
            "no_such_module_h6.x:f", "no_such_module_h6.x", "No module named 'no_such_module_h6'"
        ),
    ),
    "empty-spec": (
        {"spec": ""},
        "--spec '' is empty, expected a spec such as G0.5P0.5, or none for plain convolutions",
    ),
    "blank-spec": (
        {"spec": "  "},
        "--spec '  ' is empty, expected a spec such as G0.5P0.5, or none for plain convolutions",
    ),
    "spec-ratios": (
        {"spec": "G0.5P0.4"},
        "bad arrangement spec 'G0.5P0.4': ratios sum to 0.9, expected 1 (within 0.001)",
    ),
    "spec-token": ({"spec": "G0.5Q0.5"}, early_checks.spec_problem("G0.5Q0.5")),
    "layers-nothing": ({"layers": " , "}, early_checks.layers_select_nothing(" , ")),
}
"""A case per message; the literal ones pin the text itself, the others name their owner."""


def _flags(fields: dict) -> list[str]:
    return [arg for key, value in fields.items() for arg in (f"--{key}", value)]


def _cli_error(capsys, argv: list[str]) -> str:
    from pipeline.export import main

    try:
        code = main(argv)
    except SystemExit as e:  # refused before torch loads: argparse's exit
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.rstrip("\n").removeprefix("error: ")


def _api_error(cfg) -> str:
    from pipeline.stages import run

    with pytest.raises(UserError) as e:
        run(cfg)
    return str(e.value)


@pytest.fixture(scope="module")
def lenet_checkpoint(tmp_path_factory) -> Path:
    """An untrained AnaNN-LeNet's checkpoint, as a trained run writes it (only its metadata matters here)."""
    from pipeline import archs
    from pipeline import checkpoint as ckpt

    path = tmp_path_factory.mktemp("ckpt") / "lenet.safetensors"
    return ckpt.save(archs.build("lenet"), path, {"arch": "lenet", "spec": archs.DEFAULT_SPEC, "convert_layers": "all"})


@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["build", "checkpoint"])
@pytest.mark.parametrize("case", list(CASES))
def test_cli_and_api_give_the_owners_message(case, with_checkpoint, lenet_checkpoint, capsys, tmp_path):
    from pipeline.stages import JobConfig

    fields, message = CASES[case]
    source = {"checkpoint": lenet_checkpoint} if with_checkpoint else {}
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    argv = ["--out", str(cli_out), *QUICK_ARGS, *_flags(source), *_flags(fields)]
    said = _cli_error(capsys, [str(a) for a in argv])
    raised = _api_error(JobConfig(out=api_out, **QUICK, **source, **fields))
    assert said == raised == message
    assert not cli_out.exists() and not api_out.exists()


def test_arch_and_model_together_one_message_in_the_api(lenet_checkpoint, tmp_path):
    """The CLI refuses the pair in argparse (exclusive options); the job and ``checkpoint.load`` share one text."""
    from pipeline import checkpoint as ckpt
    from pipeline.stages import JobConfig

    message = "--arch lenet and --model a.b:c were both given, expected one of them"
    assert early_checks.arch_and_model_problem("lenet", "a.b:c") == message
    assert _api_error(JobConfig(out=tmp_path / "api", arch="lenet", model="a.b:c", **QUICK)) == message
    with pytest.raises(UserError) as e:
        ckpt.load(lenet_checkpoint, arch="lenet", model="a.b:c")
    assert str(e.value) == message


def test_the_job_path_raises_the_owners_message_too():
    """Library calls that reach the same values deeper (``pipeline.archs``) give the owner's text."""
    from pipeline import archs

    deeper = {
        "unknown-arch": lambda: archs.resolve("lenett"),
        "torchvision-name": lambda: archs.resolve("torchvision:9x"),
        "malformed-model": lambda: archs.load_factory("a b:c"),
        "model-not-importable": lambda: archs.load_factory("no_such_module_h6.x:f"),
        "spec-ratios": lambda: archs.check_spec("G0.5P0.4"),
        "spec-token": lambda: archs.check_spec("G0.5Q0.5"),
        "layers-nothing": lambda: archs.parse_layers(" , "),
    }
    for case, call in deeper.items():
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) == CASES[case][1], case
