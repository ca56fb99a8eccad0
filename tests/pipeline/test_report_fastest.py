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
