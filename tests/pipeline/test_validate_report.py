import json

import numpy as np
import pytest
from PIL import Image

from pipeline import report as rep
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
        "min_ms": 0.9,
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
    text = rep.write_markdown(r, tmp_path / "r.md").read_text()
    assert "Test accuracy of the source model: 90.00 %" in text
    assert "| `conv1` | `(1x6)P3Lg3` | 0.4800 |" in text
    assert "| ort-cuda:static | | | | | | not available: no CUDA device |" in text
    assert "| ort-cpu:static | 1 | 0.500 | 1.200 | 1.500 | 900 | 2.00x |" in text
    assert "| fp32 | 0.0001 | 0.001 | 0.995 |" in text
    assert "Parity: all 1 checks passed" in text
    assert "- ACL kernels on CPU: torch, eager autograd (acl.kernels)" in text
    assert json.loads(rep.write_json(r, tmp_path / "r.json").read_text())["accuracy"] == 0.9


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
