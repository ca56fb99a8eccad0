"""Replay commands per TensorRT major version, the INT8 file's TensorRT form, and the report's TensorRT build table."""

from __future__ import annotations

import shlex

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from export.compare import TOLERANCES, Tolerance
from pipeline import report as rep
from pipeline import serving
from pipeline.trt_int8 import tensorrt_form_check
from tests.qdq_models import images, int8_files

PRECISION_FLAGS = {"--fp16", "--int8", "--best", "--bf16", "--fp8", "--stronglyTyped", "--calib"}


@pytest.fixture()
def int8_row(monkeypatch):
    """Issue 20's ``int8`` tolerance row where this branch runs without it (its owner adds it to export/compare.py)."""
    if "int8" not in TOLERANCES:
        monkeypatch.setitem(TOLERANCES, "int8", Tolerance(atol=float("inf"), rtol=float("inf"), min_top1=0.9))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from deploy.fp16 import to_fp16_onnx

    folder = tmp_path_factory.mktemp("run")
    model, files = int8_files(folder)
    files["static-fp16"] = folder / "model.static-fp16.onnx"
    to_fp16_onnx(files["static"], files["static-fp16"])
    checks, form = tensorrt_form_check(files["static-int8"], folder)
    files["static-int8-tensorrt"] = form
    return model, files, checks, folder


def test_the_int8_files_tensorrt_form_is_written_and_passes_the_parser_check(run):
    _, files, checks, folder = run
    ((label, problems),) = checks.items()
    assert problems == [] and files["static-int8-tensorrt"] == folder / "model.static-int8.tensorrt.onnx"
    assert label.startswith("model.static-int8.onnx (as TensorRT builds it: model.static-int8.tensorrt.onnx, ")
    assert "INT32 bias DequantizeLinear folded" in label


def test_a_qdq_file_tensorrt_cannot_take_is_reported_and_nothing_is_written(run, tmp_path):
    _, files, _, _ = run
    model = onnx.load(str(files["static-int8"]))
    zero = next(
        t for t in model.graph.initializer if t.name.endswith("_zero_point") and t.data_type == onnx.TensorProto.INT8
    )
    zero.CopyFrom(numpy_helper.from_array(np.ones_like(numpy_helper.to_array(zero)), zero.name))  # asymmetric
    bad = tmp_path / "model.static-int8.onnx"
    onnx.save(model, bad)
    checks, form = tensorrt_form_check(bad, tmp_path)
    assert form is None and sorted(p.name for p in tmp_path.iterdir()) == ["model.static-int8.onnx"]
    (problems,) = checks.values()
    assert any(f"zero point {zero.name!r} is not all zeros" in p for p in problems), problems


def test_replay_commands_follow_each_tensorrt_version(run, int8_row):
    model, files, _, folder = run
    x = images(8, seed=21)
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    replay = serving.replay(files, folder, x, expected, (1, 4))["files"]
    assert {n: f["precision"] for n, f in replay.items()} == {
        "model.static.onnx": "fp32",
        "model.live.onnx": "fp32",
        "model.static-fp16.onnx": "fp16",
        "model.static-int8.onnx": "int8",
        "model.static-int8.tensorrt.onnx": "int8",
    }
    for name, f in replay.items():
        cmds = f["commands"]
        if name == "model.static-int8.onnx":  # ONNX Runtime's INT32 biases: TensorRT builds the form instead
            assert set(cmds) == {"polygraphy", "check", "trtexec"}
            assert cmds["trtexec"].startswith("# ") and "model.static-int8.tensorrt.onnx" in cmds["trtexec"]
            continue
        # one command per distinct flag set: FP32 files get one for both versions, not the same line twice
        trt = {k: v for k, v in cmds.items() if k.startswith("trtexec (")}
        assert len(set(trt.values())) == len(trt) == (1 if f["precision"] == "fp32" else 2), (name, trt)
        by_major = {m: v for k, v in trt.items() for m in ("10", "11") if m in k}
        assert not PRECISION_FLAGS & set(shlex.split(by_major["11"])), (name, cmds)
        ten = set(shlex.split(by_major["10"])) & PRECISION_FLAGS
        assert ten == {"fp32": set(), "fp16": {"--stronglyTyped"}, "int8": {"--int8"}}[f["precision"]], (name, ten)
        assert f"--onnx={name}" in by_major["10"] and "trtexec" not in cmds
    # The form computes what the INT8 file computes: the same error against the source model, to the bit.
    i8, form = replay["model.static-int8.onnx"]["check"], replay["model.static-int8.tensorrt.onnx"]["check"]
    assert np.isfinite(i8["max_abs_err"]) and i8["max_abs_err"] == form["max_abs_err"]
    assert replay["model.static.onnx"]["check"]["passed"] and replay["model.static-fp16.onnx"]["check"]["passed"]


def test_report_states_how_each_version_builds_each_precision():
    from deploy.tensorrt.versions import build_table

    trt = {"available": False, "reason": "TensorRT is not installed", "check": {}, "builds": build_table()}
    text = "\n".join(rep.tensorrt_section(trt, listed=True))
    assert "| precision | TensorRT 10 | TensorRT 11 |" in text and "not verified on a GPU" in text
    assert "| int8 | weakly typed, BuilderFlag.INT8, from the Q/DQ file | strongly typed, no precision flag, " in text
    assert "| fp16 | weakly typed, BuilderFlag.FP16 | strongly typed, no precision flag, from the FP16 file |" in text
