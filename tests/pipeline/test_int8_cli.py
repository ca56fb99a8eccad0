"""``--int8`` from the command line: bad values are one line and exit 2 with nothing written; a run writes the file.

(An earlier run left untouched by a bad value: the corpus of ``test_bad_inputs`` checks that for every case that
fails as these do, before the output folder is opened.)
"""

from __future__ import annotations

import json

import pytest

FAST = ["--batch-sizes", "1", "--latency-seconds", "0.01", "--no-progress", "--backends", "ort-cpu", "--threads", "1"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8-method", "entropy"], "--int8-method was given without --int8, expected --int8 as well"),
        (["--int8", "--int8-calibration", "0"], "--int8-calibration 0 is out of range, expected 1 to 100000"),
        (["--int8", "--int8-calibration", "100001"], "--int8-calibration 100001 is out of range"),
        (
            ["--int8", "--int8-method", "kl"],
            "--int8-method 'kl' is unknown, expected one of minmax, entropy, percentile",
        ),
        (["--int8", "--int8-max-drop", "-0.5"], "--int8-max-drop -0.5 is out of range, expected 0 to 100"),
        (["--int8", "--int8-max-drop", "abc"], "--int8-max-drop 'abc' is not a finite number, expected"),
        (["--int8", "--int8-max-drop", "nan"], "--int8-max-drop 'nan' is not a finite number, expected"),
        (
            ["--int8", "--int8-calibration", "1437", "--epochs", "1"],
            "--int8-calibration 1437 is larger than the training split allows (sklearn digits",
        ),
    ],
)
def test_bad_int8_values_are_one_line_exit_2_and_touch_nothing(args, message, tmp_path, capsys):
    from pipeline.export import main

    out = tmp_path / "run"
    try:
        code = main(["--out", str(out), *FAST, *args])
    except SystemExit as e:  # argument errors exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and message in err[-1] and "expected" in err[-1]
    assert not [line for line in err if "Traceback" in line]
    assert not list(tmp_path.iterdir()), "nothing written: no --out, no staging or resume folder beside it"


def test_a_default_job_run_with_int8_writes_the_file_its_rows_and_its_section(tmp_path):
    from pipeline.export import main

    out = tmp_path / "run"
    code = main(["--out", str(out), *FAST, "--epochs", "2", "--int8", "--int8-calibration", "64"])
    report = json.loads((out / "report.json").read_text())
    section = report["int8"]
    assert section["calibration_images"] == 64 and section["method"] == "minmax"
    assert section["test"]["images"] == 360 and section["validation"]["images"] > 0
    manifest = report["files"]
    if section["passed"]:
        assert manifest["onnx:static-int8"] == "model.static-int8.onnx" and (out / "model.static-int8.onnx").exists()
        row = report["parity"]["ort-cpu:static-int8"]
        assert row["precision"] == "int8" and "max_abs_err" in row and "ort-cpu:static-int8" in report["latency"]
    else:  # said plainly, and nothing deployable is left under the INT8 name
        assert not (out / "model.static-int8.onnx").exists() and "ort-cpu:static-int8" not in report["parity"]
        assert code == 1 and "int8-accuracy" in report["verdict"]["failed"]
    assert "## INT8" in (out / "report.md").read_text()


def test_the_cli_names_the_methods_the_quantizer_has():
    from deploy.int8.quantize import METHODS
    from pipeline import int8_args

    assert int8_args.METHODS == METHODS
