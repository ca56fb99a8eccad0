import json

import numpy as np
import pytest
from PIL import Image

from pipeline import report as rep
from pipeline.stages import write_markdown
from pipeline.validate import TOLERANCES, compare_outputs


def test_compare_outputs_statistics_and_verdicts():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10)).astype(np.float32) * 5
    ok = compare_outputs(ref, ref + 2e-6, TOLERANCES["fp32"])
    assert ok["passed"] and ok["top1_agreement"] == 1.0
    assert ok["max_abs_err"] == pytest.approx(2e-6, rel=0.1)
    bad = compare_outputs(ref, ref + 1e-2, TOLERANCES["fp32"])
    assert not bad["passed"] and not bad["elementwise_passed"]
    swapped = ref.copy()
    swapped[:2] = swapped[:2, ::-1]  # two rows with a different argmax
    flip = compare_outputs(ref, swapped, TOLERANCES["fp16"])
    assert flip["top1_agreement"] == pytest.approx(48 / 50) and not flip["passed"]
    shape = compare_outputs(ref, ref[:3], TOLERANCES["fp32"])
    assert not shape["passed"] and "shape" in shape["error"]


def test_an_fp16_sized_error_passes_fp16_and_fails_fp32():
    ref = np.linspace(-5, 5, 40, dtype=np.float32).reshape(4, 10)
    half = ref.astype(np.float16).astype(np.float32) + 1e-3  # rounding to half precision, plus a little
    assert compare_outputs(ref, half, TOLERANCES["fp16"])["passed"]
    res = compare_outputs(ref, half, TOLERANCES["fp32"])
    assert not res["passed"] and res["max_abs_err"] > TOLERANCES["fp32"].atol


def test_non_finite_outputs_fail_even_when_both_sides_agree():
    nan = np.full((3, 4), np.nan, dtype=np.float32)
    res = compare_outputs(nan, nan.copy(), TOLERANCES["fp32"])
    assert not res["passed"] and "non-finite" in res["error"]


def _report():
    parity = {
        "ort-cpu:static": {
            "precision": "fp32",
            **compare_outputs(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), TOLERANCES["fp32"]),
        },
        "ort-cuda:static": {"available": False, "reason": "no CUDA device"},
    }
    lat_row = {
        "p50_ms": 1.0,
        "p90_ms": 1.2,
        "p99_ms": 1.5,
        "mean_ms": 1.1,
        "std_ms": 0.1,
        "min_ms": 0.9,
        "max_ms": 1.6,
        "outliers": 0,
        "outlier_share": 0.0,
        "load_avg": 0.5,
        "cores": 2,
        "loaded": False,
        "iterations": 10,
        "throughput": 900.0,
        "batch_size": 1,
    }
    return {
        "schema": rep.SCHEMA,
        "created": "2026-11-22T00:00:00+00:00",
        "model": {
            "arch": "lenet",
            "spec": "P0.5Lg0.5",
            "checkpoint": None,
            "trained": True,
            "epochs": 2,
            "train_seconds": 1.0,
            "world_size": 1,
            "parameters": {"total": 10, "learnable_kernel": 5, "conv_kernel_equivalent": 8},
        },
        "data": {"name": "digits", "train": 10, "test": 3, "image_size": 32, "mean": 0.0, "std": 1.0},
        "accuracy": 0.9,
        "verdict": {"passed": True, "checks": 1, "failed": [], "not_available": ["ort-cuda:static"]},
        "compact_factor": {"conv1": {"spec": "(1x6)P3Lg3", "value": 0.48}},
        "tolerances": [{"precision": "fp32", "atol": 1e-4, "rtol": 1e-3, "min_top1": 0.995}],
        "parity": parity,
        "latency": {
            "torch:eager": {"1": {**lat_row, "speedup_vs_torch": 1.0}},
            "ort-cpu:static": {"1": {**lat_row, "p50_ms": 0.5, "speedup_vs_torch": 2.0}},
            "ort-cuda:static": {"available": False, "reason": "no CUDA device"},
        },
        "files": {"latency_chart": "latency.png"},
        "environment": {
            "python": "3.11",
            "platform": "linux",
            "cpu": "x",
            "cores": 2,
            "torch_threads": 2,
            "ort_threads": 2,
            "device": "cpu",
            "kernel_generator_cpu": "torch, eager autograd (acl.kernels)",
            "versions": {"torch": "2"},
        },
    }


def test_markdown_states_every_number_and_unavailable_backends(tmp_path):
    r = _report()
    text = write_markdown(r, tmp_path / "r.md").read_text()
    assert "Test accuracy of the source model: 90.00 %" in text
    assert "| `conv1` | `(1x6)P3Lg3` | 0.4800 |" in text
    assert "| ort-cpu:static | 1 | 1.100 | 0.100 | 0.500 | 1.200 | 1.500 | 900 | 2.00x |  |" in text
    assert "| fp32 | 0.0001 | 0.001 | 0.995 |" in text
    assert "Checks: all 1 passed" in text
    assert "- ACL kernels on CPU: torch, eager autograd (acl.kernels)" in text
    assert json.loads(rep.write_json(r, tmp_path / "r.json").read_text())["accuracy"] == 0.9


def test_unavailable_backends_are_listed_once_and_not_in_the_tables(tmp_path):
    r = _report()
    r["parity"]["ort-cuda:live"] = {"available": False, "reason": "no CUDA device"}
    r["parity"]["trt:static"] = {"available": False, "reason": "TensorRT | not installed"}
    r["latency"]["trt:static"] = {"available": False, "reason": "TensorRT | not installed"}
    r["serving"] = {"available": False, "reason": "nvidia-pytriton is not installed"}
    r["tensorrt"] = {"available": False, "reason": "TensorRT | not installed", "check": {"m.onnx": []}}
    text = write_markdown(r, tmp_path / "r.md").read_text()
    assert text.count("no CUDA device") == 1 and text.count("TensorRT \\| not installed") == 1
    assert "| ort-cuda (static, live) | not available: no CUDA device |" in text
    assert "| trt (static) | not available: TensorRT \\| not installed |" in text
    assert "| Triton server (--serve-test) | not available: nvidia-pytriton is not installed |" in text
    assert "Engines: not built (see *Not available here*)" in text
    assert "- Verified on a GPU: no (no TensorRT or GPU here); `python -m deploy.tensorrt selfcheck`" in text
    tables = text.split("## Parity against")[1].split("## TensorRT")[0]
    assert "ort-cuda" not in tables and "| trt:static" not in tables and "not available" not in tables


def test_loaded_latency_rows_carry_a_note(tmp_path):
    r = _report()
    row = r["latency"]["ort-cpu:static"]["1"]
    row.update(loaded=True, outliers=3, outlier_share=0.3, load_avg=5.0, max_ms=40.0)
    text = write_markdown(r, tmp_path / "r.md").read_text()
    assert "| 2.00x | loaded: 30.0 % far outliers, slowest 40.000 ms; load average 5.0 on 2 cores |" in text
    assert "*loaded* (1 of 2 rows)" in text
    old = {k: v for k, v in row.items() if k not in ("std_ms", "loaded")}  # a report from before std_ms
    r["latency"]["ort-cpu:static"]["1"] = old
    assert "| ort-cpu:static | 1 | 1.100 | - | 0.500 |" in write_markdown(r, tmp_path / "o.md").read_text()


def test_serving_table_states_what_the_server_did(tmp_path):
    r = _report()
    level = {"requests": 300, "errors": 0, "throughput": 286.4, "p50_ms": 11.976, "p99_ms": 37.59}
    r["triton"] = None
    r["serving"] = {
        "available": True,
        "model": "acl_python",
        "server": {"version": "0.7.0", "start_seconds": 4.42},
        "parity": {"precision": "fp32", "max_abs_err": 4.8e-6, "top1_agreement": 1.0, "passed": True},
        "load": {
            "protocol": "grpc",
            "batch": 1,
            "load_avg": 11.5,
            "cores": 2,
            "levels": {
                "1": {**level, "server_mean_batch": 1.0, "server_batches": {"1": 300}},
                "4": {**level, "server_mean_batch": 2.27, "server_batches": {"1": 47, "4": 26}},
            },
        },
    }
    text = write_markdown(r, tmp_path / "r.md").read_text()
    assert "- `acl_python` on nvidia-pytriton 0.7.0's `tritonserver`, ready in 4.42 s" in text
    assert "max abs err 4.80e-06, top-1 agreement 100.00 %, pass" in text
    assert "1-minute load average 11.5 on 2 cores" in text
    assert "| 1 | 300 | 0 | 286 | 11.976 | 37.590 | 1.00 | 1: 300 |" in text
    assert "| 4 | 300 | 0 | 286 | 11.976 | 37.590 | 2.27 | 1: 47, 4: 26 |" in text
    r["serving"]["parity"] = {"precision": "fp32", "passed": False, "error": "server did not start: log"}
    assert "**Parity of the server's answers with PyTorch: FAIL: server did not start: log**" in (
        write_markdown(r, tmp_path / "f.md").read_text()
    )


class _Steady:
    """A runner that sleeps ``ms`` per call, and ``spike_ms`` every ``every``-th call."""

    def __init__(self, ms, spike_ms=0.0, every=0):
        self.ms, self.spike_ms, self.every, self.calls = ms, spike_ms, every, 0

    def infer(self, feed, check_inputs=True):
        import time

        self.calls += 1
        spike = self.every and self.calls % self.every == 0
        time.sleep((self.spike_ms if spike else self.ms) / 1e3)


def test_timing_counts_far_outliers_and_flags_a_disturbed_measurement():
    from deploy.timing import LatencyStats, measure_latency

    feed = {"input": np.zeros((2, 3), np.float32)}
    s = measure_latency(_Steady(1.0, spike_ms=40.0, every=10), feed, warmup=0, min_iters=100, min_seconds=0)
    assert s.iterations == 100 and s.outliers >= 10 and s.loaded  # 10 spikes of 40x the usual time
    assert s.max_ms >= 40 and s.std_ms > 5 and s.min_ms <= s.p50_ms <= s.mean_ms <= s.max_ms
    d = s.to_dict()
    assert d["outlier_share"] == s.outliers / 100 and d["loaded"] is True and d["cores"] >= 1
    calm = LatencyStats(1, 100, 1.0, 1.1, 1.2, 1.0, 0.9, 1000.0, 0.05, 1.3, 0, load_avg=0.5, cores=2)
    assert not calm.loaded
    assert LatencyStats(1, 100, 1.0, 1.1, 1.2, 1.0, 0.9, 1000.0, 0.05, 1.3, 0, load_avg=3.5, cores=2).loaded


def _image(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64)


def test_latency_chart_draws_available_rows_only(tmp_path):
    p = rep.plot_latency(_report()["latency"], tmp_path / "lat.png")
    img = _image(p)
    assert img.shape[0] > 200 and img.std() > 10
    assert rep.plot_latency({"x": {"available": False, "reason": "r"}}, tmp_path / "none.png") is None


def test_mosaic_frames_are_coloured_by_family(tmp_path):
    w = np.random.default_rng(0).standard_normal((4, 2, 5, 5)).astype(np.float32)
    kinds = ["G"] * 4 + ["P"] * 4
    p = rep.plot_mosaic("conv", w, kinds, "(2x4)G4P4", tmp_path / "m.png")
    rgb = np.asarray(Image.open(p).convert("RGB")).reshape(-1, 3).astype(int)

    def count(hex_colour):
        c = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(rgb - c).sum(1) < 30).sum())

    assert count(rep.FAMILY_COLOURS["G"]) > 50 and count(rep.FAMILY_COLOURS["P"]) > 50
    assert count(rep.FAMILY_COLOURS["Tf"]) == 0


def _triton(validated: bool) -> dict:
    from deploy.triton.repository import UNVERIFIED

    return {
        "path": "runs/x/triton",
        "kept": True,
        "models": {
            "acl_onnxruntime": {
                "backend": "onnxruntime",
                "configs": {"config.pbtxt": "KIND_GPU"},
                "source": "static",
                "served_by_a_server_here": False,
            },
            "acl_python": {
                "backend": "python",
                "configs": {"config.pbtxt": "KIND_CPU"},
                "source": "static",
                "served_by_a_server_here": True,
            },
        },
        "batching": {"max_batch_size": 8, "preferred": [4], "rule": "a rule"},
        "batching_from": "ort-cpu:static",
        "validated": validated,
        "validation": "Triton's model_config.proto (tritonclient.grpc.model_config_pb2)"
        if validated
        else "not validated: checking Triton configs needs Triton's model_config.proto from the tritonclient "
        "package: pip install tritonclient (or the project's 'serve' extra)",
        "unverified": UNVERIFIED,
    }


@pytest.mark.parametrize("validated", [True, False])
def test_triton_section_says_one_true_thing_about_the_configs(tmp_path, validated):
    r = _report()
    r["triton"] = _triton(validated)
    text = write_markdown(r, tmp_path / "r.md").read_text()
    section = text.split("## Triton repository")[1].split("\n## ")[0]
    claims_parsed = [c for c in ("- Configs: parsed with", "configs parsed with") if c in section]
    says_not = "not validated" in section
    assert bool(claims_parsed) != says_not, section  # one statement: never both, never neither
    if validated:
        assert "- Configs: parsed with Triton's model_config.proto" in section, section
        assert "and checked against the ONNX file" in section
    else:
        assert not claims_parsed, section
        assert (
            "- Configs: not validated, neither parsed with Triton's protobuf nor checked against the ONNX file: "
            in (section)
        )
        assert "pip install tritonclient" in section
    assert "Unverified here: onnxruntime and tensorrt_plan models: never loaded by a server here" in section


# FP16 range in the verdict, the console and the headline (issue 18, item 2).

QUICK = ["--batch-sizes", "2", "--latency-seconds", "0.01", "--backends", "ort-cpu", "--no-progress", "--threads", "1"]


def _row(precision="fp32"):
    one = np.eye(3, dtype=np.float32)
    return {"precision": precision, **compare_outputs(one, one, TOLERANCES[precision])}


def _form(precision, out=2.0, note=""):
    return {
        "precision": precision,
        "weight_max_abs": 1.0,
        "weight_subnormal_share": 0.0,
        "activation_max_abs": out,
        "fp16_rel_error": 1e-3 if precision == "fp16" else None,
        "note": note,
        "flags": [],
    }


def _fp16(trt_overflow):
    from deploy.fp16_range import FORMS
    from pipeline.fp16_verdict import checks

    kept = {"node_Conv_7": "output `conv2d_7` reaches 2.56e+07 > 65504 on 4 images"}
    f = {
        "forms": dict(FORMS),
        "images": 4,
        "emulated_images": 4,
        "layers": [
            {
                "name": "layer2.0.conv1",
                "kind": "Conv",
                "node": "node_Conv_7",
                "forms": {"onnx-fp16": _form("fp32", 2.56e7, kept["node_Conv_7"]), "tensorrt": _form("fp16")},
            },
            {
                "name": "layer4.1.conv2",
                "kind": "Conv",
                "node": "node_Conv_19",
                "forms": {"onnx-fp16": _form("fp32", 2.7e15), "tensorrt": _form("fp16", 2.7e15)},
            },
        ],
        "overflow": {"onnx-fp16": {}, "tensorrt": trt_overflow},
        "kept_fp32": kept,
        "file": "model.static-fp16.onnx",
        "applies_to": {"onnx-fp16": ["model.static-fp16.onnx"], "tensorrt": ["model.static.onnx"]},
        "flagged": {},
        "computed": {
            "ort-cpu:static-fp16": {"fp16": {"Max": 9}, "fp32": {"Conv": 40, "Gemm": 1}, "opaque": {}},
            "trt-fp16:static": None,
        },
    }
    f["checks"] = checks(f)
    return f


def test_a_predicted_fp16_overflow_fails_the_verdict_its_rows_and_reaches_the_headline(tmp_path):
    from pipeline import fp16_verdict
    from pipeline.stages import _verdict

    fp16 = _fp16({"layer4.1.conv2": 2.7e15, "node_add_402 (Add)": 2.7e15})
    parity = {
        "ort-cpu:static": _row(),
        "ort-cpu:static-fp16": _row("fp16"),
        "trt-fp16:static": _row("fp16"),  # as if it had run and matched: the prediction still fails it
        "ort-trt:static-fp16": {"available": False, "reason": "no CUDA device"},
    }
    marked = fp16_verdict.mark_rows(parity, fp16)
    assert marked == ["trt-fp16:static"]
    assert (
        parity["trt-fp16:static"]["passed"] is False
        and "`layer4.1.conv2`" in parity["trt-fp16:static"]["fp16_overflow"]
    )
    assert parity["ort-cpu:static-fp16"]["passed"], "the FP16 file's form is within range"
    v = _verdict(parity, fp16)
    assert v["passed"] is False and v["checks"] == 3 + 2
    assert v["failed"] == ["trt-fp16:static", "fp16-range:tensorrt"]
    assert "`layer4.1.conv2` (2.7e+15)" in v["reasons"]["fp16-range:tensorrt"]
    assert len(v["warnings"]) == 1 and "`layer2.0.conv1` (output `conv2d_7` reaches 2.56e+07" in v["warnings"][0]
    console = "\n".join(fp16_verdict.console_lines(fp16, marked))
    assert "FP16 range, TensorRT FP16 (BatchNorm folded): FAIL" in console and "`layer4.1.conv2`" in console
    assert "FP16 range, the FP16 file: within FP16" in console and "warning: FP16 file: 1 node(s)" in console
    r = {**_report(), "parity": parity, "verdict": v, "fp16_range": fp16}
    text = write_markdown(r, tmp_path / "r.md").read_text()
    headline = text.split("## Parity against")[0]
    assert "Checks: FAILED 2 of 5 (trt-fp16:static, fp16-range:tensorrt)" in headline
    assert "**fp16-range:tensorrt: FAILED**" in headline and "`layer4.1.conv2`" in headline
    assert "**warning**: FP16 file: 1 node(s) kept in FP32" in headline and "`layer2.0.conv1`" in headline
    section = text.split("## FP16 range")[1]
    assert "- `layer2.0.conv1` (node `node_Conv_7`): output `conv2d_7` reaches 2.56e+07" in section
    assert "`ort-cpu:static-fp16`: FP16: Max x9; FP32: Conv x40, Gemm x1. Where the FP16 file" in section
    assert "it does not prove FP16 arithmetic" in section
    assert "`trt-fp16:static`: not recorded: TensorRT picks its kernels inside the engine" in section


def test_fp16_checks_that_pass_are_counted_and_change_nothing_else():
    from pipeline.stages import _verdict

    parity = {"ort-cpu:static": _row(), "ort-cpu:static-fp16": _row("fp16")}
    fp16 = {**_fp16({}), "kept_fp32": {}}
    v = _verdict(parity, fp16)
    assert v == {
        "passed": True,
        "checks": 4,
        "failed": [],
        "not_available": [],
        "reasons": {},
        "warnings": [],
    }


def _run(tmp_path, *args):
    import json

    from pipeline.export import main

    out = tmp_path / "run"
    code = main(["--out", str(out), "--epochs", "0", *QUICK, *args])
    return code, json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), out


def test_plain_model_whose_batchnorm_the_exporter_folds_gives_no_fp16_alarm(tmp_path, capsys):
    code, r, text, _ = _run(tmp_path, "--model", "tests.fp16_models:overflow_net", "--spec", "none")
    f = r["fp16_range"]
    # The module's convolution reaches 7.9e5, but the files hold it folded with BatchNorm.
    assert f["flagged"] == {}, f["flagged"]
    assert f["kept_fp32"] == {} and f["overflow"] == {"onnx-fp16": {}, "tensorrt": {}}
    assert code == 0 and r["verdict"]["passed"] and r["verdict"]["warnings"] == [] and r["verdict"]["reasons"] == {}
    assert r["parity"]["ort-cpu:static-fp16"]["passed"]
    assert r["fp16_range"]["computed"]["ort-cpu:static-fp16"]["fp32"]["Conv"] == 1
    err = capsys.readouterr().err
    assert "FP16 range, the FP16 file: within FP16" in err and "warning" not in err
    assert "warning" not in text.split("## Parity against")[0] and "it does not prove FP16 arithmetic" in text


def test_acl_whose_conv_overflows_before_batchnorm_keeps_it_fp32_and_says_so(tmp_path, capsys):
    import onnx

    from tests.fp16_models import WEIGHT_MAX

    code, r, text, out = _run(tmp_path, "--model", "tests.fp16_models:overflow_net", "--spec", "G0.25Lg0.25P0.5")
    weights = {
        t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out / "model.static-fp16.onnx")).graph.initializer
    }
    w = weights["0.weight"]
    assert w.dtype == np.float32 and float(np.abs(w).max()) == pytest.approx(WEIGHT_MAX, rel=1e-6), "not clipped"
    v = r["verdict"]
    assert code == 0 and v["passed"], v
    assert len(v["warnings"]) == 1 and "`0` (weight `0.weight` reaches 2.3e+05 > 65504; output" in v["warnings"][0]
    err = capsys.readouterr().err
    assert "warning: FP16 file: 1 node(s) kept in FP32, not clipped" in err and "`0` (weight" in err
    headline = text.split("## Parity against")[0]
    assert "**warning**: FP16 file: 1 node(s) kept in FP32" in headline and "`0` (weight" in headline
    layer = {x["name"]: x for x in r["fp16_range"]["layers"]}["0"]
    assert layer["forms"]["onnx-fp16"]["precision"] == "fp32"
    assert layer["forms"]["tensorrt"]["note"].startswith("BatchNorm") and not r["fp16_range"]["overflow"]["tensorrt"]
    assert r["parity"]["ort-cpu:static-fp16"]["passed"]


@pytest.fixture()
def rgb_folder(tmp_path):
    """A tiny 3-channel image folder (2 classes of 16x16 PNGs, served at 32x32): 4 test images."""
    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cats", "dogs")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            img[:, :, c] += 150
            Image.fromarray(img).save(root / name / f"{i}.png")
    return f"folder:{root}:32"


# (model, the layer BatchNorm brings back, the layer that overflows in every form, how many of the two have
# a kernel mosaic); the ResNet-18 repeats the small net of its own blocks at full size, where both layers
# have more kernels than a mosaic charts
OVERFLOWING = [
    pytest.param("overflowing_blocks", "1.conv1", "2.conv2", 1, id="resnet-blocks"),
    pytest.param("overflowing_resnet", "layer2.0.conv1", "layer4.1.conv2", 0, id="resnet18", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("factory", "back", "over", "charted"), OVERFLOWING)
def test_resnet_predicted_to_overflow_fails_the_verdict_on_the_console_and_in_the_headline(
    tmp_path, capsys, rgb_folder, factory, back, over, charted
):
    # The two layers made to overflow are the ACLs (an ACL's BatchNorm stays apart in the FP16 file). Under
    # --layers all every 3x3 conv became an ACL with random analytic kernels under BatchNorm statistics measured
    # on the plain net: logits of 1e20 whose FP16 row passed or failed by chance (9.5 % off once the 1x1
    # downsample convs stayed plain and ran in FP16).
    code, r, text, _ = _run(
        tmp_path, "--model", f"tests.fp16_models:{factory}", "--data", rgb_folder, "--layers", f"{back},{over}"
    )
    v, f = r["verdict"], r["fp16_range"]
    assert over in f["overflow"]["tensorrt"] and over in f["flagged"]
    assert code == 1 and not v["passed"] and "fp16-range:tensorrt" in v["failed"]
    assert f"`{over}`" in v["reasons"]["fp16-range:tensorrt"]
    assert f"`{back}`" in v["warnings"][0]
    err = capsys.readouterr().err
    assert "FP16 range, TensorRT FP16 (BatchNorm folded): FAIL" in err and f"`{over}`" in err
    assert "warning: FP16 file:" in err and f"`{back}`" in err
    assert "checks FAILED for" in err and "fp16-range:tensorrt" in err.splitlines()[-1]
    assert f"kernel mosaics for the first {charted} ACLs of at most 4096 kernels; {2 - charted} not charted" in err
    headline = text.split("## Parity against")[0]
    assert "**fp16-range:tensorrt: FAILED**" in headline and f"`{over}`" in headline
    # The FP16 file keeps every overflowing node FP32, so the row that runs it is right to pass,
    # and the layer BatchNorm brings back is within range once TensorRT folds it.
    assert r["parity"]["ort-cpu:static-fp16"]["passed"], r["parity"]["ort-cpu:static-fp16"]
    layer = {x["name"]: x for x in f["layers"]}[back]
    assert layer["forms"]["onnx-fp16"]["precision"] == "fp32" and back not in f["overflow"]["tensorrt"]
