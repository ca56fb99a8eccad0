"""``pipeline.fastest``: the fastest runtime and precision per batch size, among rows that passed parity."""

from pipeline.fastest import fastest_passing, section
from pipeline.stages import write_markdown
from tests.pipeline.test_validate_report import _report


def _lat(**by_batch):
    return {b.removeprefix("b"): {"p50_ms": ms, "loaded": False} for b, ms in by_batch.items()}


PARITY = {
    "ort-cpu:static": {"precision": "fp32", "passed": True},
    "ort-cpu:static-fp16": {"precision": "fp16", "passed": True},
    "openvino:static": {"precision": "fp32", "runtime_precision": "fp32", "passed": True},
    # fastest everywhere, but it failed parity: never offered
    "openvino:static-bf16": {"precision": "bf16", "runtime_precision": "fp32", "passed": False, "error": "x"},
    "trt:static": {"available": False, "reason": "TensorRT is not installed"},
}
LATENCY = {
    "torch:eager": _lat(b1=0.9, b8=2.0, b64=9.0),
    "ort-cpu:static": _lat(b1=0.3, b8=1.5, b64=8.0),
    "ort-cpu:static-fp16": _lat(b1=0.5, b8=1.9),  # not timed at 64
    "openvino:static": _lat(b1=0.4, b8=1.2, b64=9.5),
    "openvino:static-bf16": _lat(b1=0.1, b8=0.2, b64=1.0),
    "trt:static": {"available": False, "reason": "TensorRT is not installed"},
}
LATENCY["openvino:static"]["8"]["loaded"] = True


def test_fastest_per_batch_picks_only_rows_that_passed():
    got = fastest_passing(PARITY, LATENCY)
    assert list(got) == ["1", "8", "64"]
    assert got["1"] == {
        "row": "ort-cpu:static",
        "precision": "fp32",
        "p50_ms": 0.3,
        "loaded": False,
        "runner_up": "openvino:static",
        "runner_up_p50_ms": 0.4,
    }
    assert (got["8"]["row"], got["8"]["precision"], got["8"]["runner_up"], got["8"]["loaded"]) == (
        "openvino:static",
        "fp32",
        "ort-cpu:static",
        True,
    )
    assert got["64"]["row"] == "ort-cpu:static" and got["64"]["runner_up"] == "torch:eager"


def test_the_reference_counts_and_a_lone_row_has_no_runner_up():
    failed = {k: {**v, "passed": False} for k, v in PARITY.items() if v.get("available", True)}
    got = fastest_passing(failed, LATENCY)
    assert {b: f["row"] for b, f in got.items()} == {"1": "torch:eager", "8": "torch:eager", "64": "torch:eager"}
    assert got["1"]["runner_up"] is None and got["1"]["runner_up_p50_ms"] is None
    assert fastest_passing({}, {"ort-cpu:static": _lat(b1=0.1)}) == {}


def test_the_section_names_winners_precisions_and_what_was_left_out():
    report = {"parity": PARITY, "latency": LATENCY, "fastest": fastest_passing(PARITY, LATENCY)}
    text = "\n".join(section(report))
    assert "| 1 | ort-cpu:static | fp32 | 0.300 | openvino:static | 0.400 |  |" in text
    assert "| 8 | openvino:static | fp32 | 1.200 | ort-cpu:static | 1.500 | measured on a loaded machine |" in text
    assert "Not considered (failed parity): openvino:static-bf16" in text
    assert "openvino:static fp32, openvino:static-bf16 fp32" in text  # as the runtime reported them
    assert section({"parity": PARITY, "latency": LATENCY}) == []  # a report from before the key


def test_report_md_has_the_section(tmp_path):
    r = _report()
    r["fastest"] = fastest_passing(r["parity"], r["latency"])
    text = write_markdown(r, tmp_path / "r.md").read_text()
    assert "## Fastest passing runtime per batch size" in text
    assert "| 1 | ort-cpu:static | fp32 | 0.500 | torch:eager | 1.000 |  |" in text


INT8_ROWS = {
    **PARITY,
    # top-1 agreement with the source model met: parity passed; the accuracy drop bound is a separate check
    "ort-cpu:static-int8": {"precision": "int8", "passed": True},
    "openvino:static-int8": {"precision": "int8", "runtime_precision": "int8", "passed": True},
}
INT8_LATENCY = {
    **LATENCY,
    "ort-cpu:static-int8": _lat(b1=0.05, b8=0.7, b64=5.0),
    "openvino:static-int8": _lat(b1=0.08, b8=0.6, b64=6.0),
}


def test_int8_rows_count_only_when_the_int8_accuracy_check_passed():
    passed = fastest_passing(INT8_ROWS, INT8_LATENCY, {"passed": True})
    assert {b: (f["row"], f["precision"]) for b, f in passed.items()} == {
        "1": ("ort-cpu:static-int8", "int8"),
        "8": ("openvino:static-int8", "int8"),
        "64": ("ort-cpu:static-int8", "int8"),
    }
    for int8 in ({"passed": False, "reason": "no mix met the bound"}, None):  # failed, or no INT8 section at all
        got = fastest_passing(INT8_ROWS, INT8_LATENCY, int8)
        assert {b: f["row"] for b, f in got.items()} == {
            "1": "ort-cpu:static",
            "8": "openvino:static",
            "64": "ort-cpu:static",
        }
        assert {f["precision"] for f in got.values()} == {"fp32"}
        assert not any((f["runner_up"] or "").endswith("int8") for f in got.values()), "nor runners-up"


def test_the_section_says_which_int8_rows_were_left_out_and_why():
    int8 = {"passed": False}
    report = {"parity": INT8_ROWS, "latency": INT8_LATENCY, "int8": int8}
    report["fastest"] = fastest_passing(INT8_ROWS, INT8_LATENCY, int8)
    text = "\n".join(section(report))
    assert "Not considered (INT8 accuracy check failed): ort-cpu:static-int8, openvino:static-int8" in text
    report["int8"] = {"passed": True}
    assert "INT8 accuracy check failed" not in "\n".join(section(report))


def test_the_latency_stage_passes_the_int8_section(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from pipeline import validate
    from pipeline.stages import latency as latency_stage

    monkeypatch.setattr(validate, "run_latency", lambda *a, **k: INT8_LATENCY)
    monkeypatch.setattr(latency_stage.rep, "plot_latency", lambda *a, **k: None)
    cfg = SimpleNamespace(batch_sizes=(1, 8, 64), latency_seconds=0.1)
    for passed, fastest_at_1 in ((False, "ort-cpu:static"), (True, "ort-cpu:static-int8")):
        ctx = SimpleNamespace(
            cfg=cfg,
            log=lambda m: None,
            rows=[],
            x_test=None,
            staging=tmp_path,
            parity=INT8_ROWS,
            latency={},
            sections={"int8": {"passed": passed}},
        )
        assert latency_stage.run(ctx).sections["fastest"]["1"]["row"] == fastest_at_1


def test_an_fp16_row_whose_runtime_cast_every_op_to_fp32_is_not_shown_as_fp16():
    """ONNX Runtime's CPU provider runs an FP16 file's ops in FP32: the FP16 section's profile says so, and the
    fastest table said "fp16" from the row's label alone."""
    latency = {"torch:eager": _lat(b1=0.9), "ort-cpu:static-fp16": _lat(b1=0.1)}
    cast = {"ort-cpu:static-fp16": {"fp16": {}, "fp32": {"Conv": 2, "Gemm": 3}, "opaque": {}}}
    got = fastest_passing(PARITY, latency, None, cast)["1"]
    assert got["row"] == "ort-cpu:static-fp16" and got["precision"].startswith("fp32"), got
    really = {"ort-cpu:static-fp16": {"fp16": {"Conv": 2}, "fp32": {"Gemm": 3}, "opaque": {}}}
    assert fastest_passing(PARITY, latency, None, really)["1"]["precision"] == "fp16"
    assert fastest_passing(PARITY, latency)["1"]["precision"] == "fp16"  # no profile: the row's label
