"""The main job end to end, through the command line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.export import main
from pipeline.output_folder import first_unproven
from tests.conftest import digest
from tests.in_process import run_main
from tests.pipeline.conftest import JOB_FAST as FAST
from tests.pipeline.conftest import SHORT_JOB
from tests.pipeline.signal_on_import import run_signalled_on_torch_import

ROOT = Path(__file__).resolve().parents[2]
QUICK_CPU = ["--batch-sizes", "2", "--latency-seconds", "0.01", "--backends", "ort-cpu", "--threads", "1"]


@pytest.fixture()
def run_dir(lenet_run):
    """The default job's run with ``FAST`` (tests/pipeline/conftest.py): read it, or copy it to change it."""
    return lenet_run["out"]


def test_default_job_has_the_saliency_and_explainsteer_sections(run_dir):
    r = json.loads((run_dir / "report.json").read_text())
    assert r["files"]["explainsteer"] == "explainsteer.png" and (run_dir / "explainsteer.png").stat().st_size > 0
    assert set(r["saliency"]["layers"]) == set(r["explainsteer"]["layers"]) == {"conv1", "conv2"}
    assert r["stages"]["saliency"]["status"] == r["stages"]["explainsteer"]["status"] == "ok"
    md = (run_dir / "report.md").read_text()
    assert "## Spatial-kernel saliency (ExplainFix)" in md and "![ExplainSteer heatmaps](explainsteer.png)" in md


def test_default_job_outputs(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "model.safetensors",
        "model.static.onnx",
        "model.live.onnx",
        "model.live-akp.onnx",
        "report.json",
        "report.md",
        "latency.png",
        "mosaic-conv1.png",
        "mosaic-conv2.png",
        "mosaic-conv1-initial.png",
        "mosaic-conv2-initial.png",
        "manifest.json",
    } <= names
    assert not [n for n in names if n.startswith(".")], "no temporary files left"
    assert first_unproven(run_dir) is None, "manifest.json lists every file, with its size and hash"
    assert sorted(p.name for p in run_dir.parent.iterdir()) == ["run"], "no lock, staging or resume state beside it"
    r = json.loads((run_dir / "report.json").read_text())
    assert r["schema"] == "acl-deploy/report/1"
    assert r["model"]["arch"] == "lenet" and r["model"]["spec"] == "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
    assert r["accuracy"] > 0.85, r["accuracy"]  # 4 epochs; the default 15 reach ~97 %
    assert set(r["compact_factor"]) == {"conv1", "conv2"}
    assert r["compact_factor"]["conv2"]["spec"] == "(6x16)G15Lg8Lt7Tf18P48"
    inside = r["interpretability"]["layers"]
    assert set(inside) == {"conv1", "conv2"} and "initial_mosaics" not in r["interpretability"]
    assert set(inside["conv2"]["share"]) == {"Gabor", "LoG", "LoT", "TGD1st", "Plain"}
    assert sum(inside["conv2"]["share"].values()) == pytest.approx(1.0)
    assert inside["conv1"]["initial_mosaic"] == "mosaic-conv1-initial.png"
    assert r["compact_factor"]["conv2"]["value"] == pytest.approx(1 - (15 * 4 + 8 + 7 + 18 * 3 + 48 * 25) / (96 * 25))
    for key in ("ort-cpu:static", "ort-cpu:live", "ort-cpu:live-akp", "ort-cpu:live-akp(fed)", "torch:baked"):
        p = r["parity"][key]
        assert p["passed"], (key, p)
        assert p["max_abs_err"] < 1e-4 and p["top1_agreement"] == 1.0 and p["precision"] == "fp32"
        assert {"max_abs_err", "max_rel_err", "top1_agreement", "atol", "rtol", "passed"} <= set(p)
    half = r["parity"]["ort-cpu:static-fp16"]
    assert half["precision"] == "fp16" and half["passed"] and half["atol"] == 5e-2
    assert 1e-5 < half["max_abs_err"] < 5e-2  # really ran in half precision, and within its tolerance
    for key in ("ort-cuda:static", "ort-trt:live", "trt:static", "trt:refit", "trt-fp16:live"):
        assert r["parity"][key]["available"] is False and r["parity"][key]["reason"]
    assert r["tensorrt"]["check"] and all(v == [] for v in r["tensorrt"]["check"].values())
    assert [x["name"] for x in r["fp16_range"]["layers"]] == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    for key in ("torch:eager", "ort-cpu:static", "ort-cpu:live", "ort-cpu:live-akp", "ort-cpu:static-fp16"):
        for b in ("1", "4"):
            row = r["latency"][key][b]
            assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["throughput"] > 0
    assert r["latency"]["torch:eager"]["1"]["speedup_vs_torch"] == 1.0
    openvino = _openvino_rows_that_run()  # FP32 rows, in FP32 even where the CPU has native bf16
    for key in openvino:
        p = r["parity"][key]
        assert p["passed"] and p["runtime_precision"] == p["precision"], (key, p)
    assert r["verdict"] == {
        "passed": True,
        "checks": 6
        + len(openvino)
        + 2,  # the parity rows that ran, and the FP16 range of the FP16 file and of TensorRT
        "failed": [],
        "not_available": [
            k for k in r["parity"] if ("cuda" in k or "trt" in k or "openvino" in k) and k not in openvino
        ],
        "reasons": {},
        "warnings": [],
    }
    assert set(r["fastest"]) == {"1", "4"} and all(f["row"] in r["latency"] for f in r["fastest"].values())
    env = r["environment"]
    assert env["cores"] >= 1 and env["versions"]["onnxruntime"] != "not installed"
    assert env["kernel_generator_cpu"] == "torch, eager autograd (acl.kernels)"
    text = (run_dir / "report.md").read_text()
    assert f"Test accuracy of the source model: {r['accuracy'] * 100:.2f} %" in text
    assert "not available:" in text
    assert (
        "## Inside the ACLs" in text and "| `conv1` | ![](mosaic-conv1-initial.png) | ![](mosaic-conv1.png) |" in text
    )


def _openvino_rows_that_run() -> list[str]:
    from deploy.backends import availability
    from deploy.openvino import bf16_available

    fp32 = ["openvino:static", "openvino:live"] if availability("openvino")[0] else []
    return fp32 + (["openvino:static-bf16"] if bf16_available()[0] else [])


def test_exported_files_run_on_new_inputs(run_dir):
    import onnxruntime as ort

    from pipeline import checkpoint as ckpt
    from pipeline.data import load_digits_dataset

    model, meta = ckpt.load(run_dir / "model.safetensors")
    x = np.random.default_rng(5).standard_normal((7, 1, 32, 32)).astype(np.float32)
    import torch

    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    for name in ("model.static.onnx", "model.live.onnx", "model.live-akp.onnx"):
        onnx.checker.check_model(str(run_dir / name), full_check=True)
        got = ort.InferenceSession(str(run_dir / name), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        assert np.abs(got - want).max() < 1e-4, name
    data = load_digits_dataset()
    assert float(meta["mean"]) == pytest.approx(data.mean[0])  # one channel: a plain number, as before


def test_checkpoint_run_reproduces_accuracy(run_dir, tmp_path):
    out = tmp_path / "again"
    assert (
        main(
            [
                "--out",
                str(out),
                "--checkpoint",
                str(run_dir / "model.safetensors"),
                *QUICK_CPU,
            ]
        )
        == 0
    )
    a, b = (json.loads((d / "report.json").read_text()) for d in (run_dir, out))
    assert b["accuracy"] == a["accuracy"] and b["model"]["trained"] is False
    assert set(b["latency"]) == {
        "torch:eager",
        "ort-cpu:static",
        "ort-cpu:live",
        "ort-cpu:live-akp",
        "ort-cpu:static-fp16",
    }


def test_refuses_to_overwrite_without_force_and_replaces_with_force(run_dir, tmp_path, capsys):
    before = digest(run_dir)
    assert main(["--out", str(run_dir), *FAST]) == 2
    assert "is not empty, expected a new or empty folder; pass --force" in capsys.readouterr().err
    assert digest(run_dir) == before
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    again = ["--out", str(copy), "--force", "--checkpoint", str(run_dir / "model.safetensors"), *QUICK_CPU]

    # --force replaces only what the earlier run's manifest proves it wrote: a user's file or an edit stops it.
    (copy / "notes.txt").write_text("the user's")
    assert main(again) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"error: --out {copy} holds notes.txt, which its manifest.json does not list; refusing to replace it even "
        "with --force, expected only the files an earlier run wrote (remove or move the folder yourself)"
    )
    assert (copy / "notes.txt").read_text() == "the user's"
    assert {k: v for k, v in digest(copy).items() if k != "notes.txt"} == before, "untouched"
    (copy / "notes.txt").unlink()
    with (copy / "report.md").open("a") as f:
        f.write("my comments\n")
    assert main(again) == 2
    assert "holds report.md, which was modified after acl-deploy wrote it" in capsys.readouterr().err
    (copy / "report.md").write_bytes((run_dir / "report.md").read_bytes())

    assert main(again) == 0
    after = digest(copy)
    # A --checkpoint run cannot know the initial kernels, so it draws no initial mosaics; with
    # --backends ort-cpu it needs no inlined live file (that is OpenVINO's, when installed).
    assert set(after) == {f for f in before if not f.endswith("-initial.png") and f != "model.live.inlined.onnx"}
    assert after["report.json"] != before["report.json"]
    assert first_unproven(copy) is None
    assert [p.name for p in tmp_path.iterdir()] == ["copy"], "nothing left beside --out"


def test_failure_midway_leaves_previous_outputs_untouched(run_dir, tmp_path, monkeypatch, capsys):
    import export

    copy = tmp_path / "prev"
    shutil.copytree(run_dir, copy)
    before = digest(copy)

    def boom(*a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(export, "export_files", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        main(["--out", str(copy), "--force", "--checkpoint", str(run_dir / "model.safetensors"), "--batch-sizes", "1"])
    assert digest(copy) == before
    assert [p.name for p in tmp_path.iterdir()] == ["prev"], "staging folder removed"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--spec", "G0.5P0.4"], "error: bad arrangement spec 'G0.5P0.4': ratios sum to 0.9"),
        (["--checkpoint", "/no/such.safetensors"], "error: checkpoint not found: /no/such.safetensors"),
        (["--backends", "ort-cpu,tpu"], "error: unknown backend(s) tpu"),
        (["--arch", "cnn4", "--checkpoint", "{ckpt}"], "is a 'lenet' model, but --arch cnn4 was given"),
        (["--checkpoint", "{bad}"], "is corrupt or not a safetensors file"),
    ],
)
def test_bad_input_one_line_no_traceback_nothing_written(run_dir, tmp_path, args, message, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    args = [a.format(ckpt=run_dir / "model.safetensors", bad=bad) for a in args]
    out = tmp_path / "out"
    code, stdout, err = run_main(capsys, ["--out", str(out), *FAST, *args])
    assert code == 2, err
    assert message in err
    assert "Traceback" not in err and "Traceback" not in stdout
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] and len(
        [ln for ln in err.splitlines() if "error" in ln]
    ) == 1
    assert not out.exists()


def test_out_that_cannot_be_created(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_main(capsys, ["--out", str(blocker / "run"), *FAST])
    assert code == 2 and "error: --out" in err and "Traceback" not in err
    code, _, err = run_main(capsys, ["--out", str(blocker), *FAST])
    assert code == 2 and "exists and is not a folder" in err
    assert blocker.read_text() == "not a folder"


def test_not_an_earlier_run_is_never_replaced(tmp_path, capsys):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("precious")
    (user / "report.json").write_text("{}")  # looking like a run is not enough: only a manifest proves it
    code, _, err = run_main(capsys, ["--out", str(user), "--force", *FAST])
    assert code == 2, err
    assert "holds no readable manifest.json, so it is not an earlier acl-deploy run" in err
    assert (user / "notes.txt").read_text() == "precious"


def test_help_without_onnxruntime_or_tensorrt():
    code = "import sys; sys.modules['onnxruntime'] = None; sys.modules['tensorrt'] = None; sys.argv = ['x', '--help']\nimport runpy; runpy.run_module('pipeline.export', run_name='__main__')"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--checkpoint" in res.stdout and "--backends" in res.stdout


def test_mnist_from_local_files(tmp_path):
    from tests.pipeline.test_data_models import make_mnist

    folder = make_mnist(tmp_path / "mnist", n_train=300, n_test=60)
    out = tmp_path / "run"
    # one epoch: what is checked is the data's path through the job, and that the checkpoint reproduces it
    args = ["--out", str(out), "--data", f"mnist:{folder}", "--epochs", "1", "--no-progress", *QUICK_CPU]
    assert main(args) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["data"]["name"].startswith("MNIST") and r["data"]["train"] == 300 and r["data"]["test"] == 60
    assert r["verdict"]["passed"]
    # the checkpoint remembers the standardisation; loading it with the same data reproduces the accuracy
    again = tmp_path / "again"
    assert (
        main(
            [
                "--out",
                str(again),
                "--data",
                f"mnist:{folder}",
                "--checkpoint",
                str(out / "model.safetensors"),
                *QUICK_CPU,
            ]
        )
        == 0
    )
    assert json.loads((again / "report.json").read_text())["accuracy"] == r["accuracy"]


def test_bad_mnist_folder_is_one_line(tmp_path, capsys):
    code, _, err = run_main(capsys, ["--out", str(tmp_path / "o"), *FAST, "--data", f"mnist:{tmp_path / 'none'}"])
    assert code == 2 and "error: MNIST folder" in err and "Traceback" not in err


@pytest.mark.slow
@pytest.mark.xdist_group("two-process-ddp")  # one at a time: each starts two gloo ranks on a 2-core machine
def test_training_under_torchrun_ddp_with_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "pipeline.export",
            "--out",
            str(out),
            "--epochs",
            "3",
            *SHORT_JOB,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((out / "report.json").read_text())
    assert r["model"]["world_size"] == 2
    assert r["accuracy"] > 0.7, r["accuracy"]
    assert r["verdict"]["passed"]


def test_default_job_report_has_the_recos_view(run_dir):
    r = json.loads((run_dir / "report.json").read_text())
    assert list(r["recos"]["layers"]) == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert r["stages"]["recos"]["status"] == "ok" and r["stages"]["recos"]["seconds"] > 0
    assert r["files"]["recos"] == "recos.png" and (run_dir / "recos.png").read_bytes()[:4] == b"\x89PNG"
    assert r["recos"]["pair"]["max_abs"] < 1e-5
    text = (run_dir / "report.md").read_text()
    assert "## RECOS view" in text and f"Cost: {r['stages']['recos']['seconds']:.2f} s." in text
    assert text.index("## RECOS view") > text.index("## Kernel mosaics")


@pytest.mark.parametrize("sig, code", [("INT", 130), ("TERM", 143)])
def test_a_signal_while_torch_is_imported_is_one_line(tmp_path, sig, code):
    """Before the job's handlers were installed: a 50-line KeyboardInterrupt traceback (SIGINT), nothing (SIGTERM)."""
    out = tmp_path / "out"
    res = run_signalled_on_torch_import("pipeline.export", ["--out", str(out)], sig)
    assert res.returncode == code, res.stderr[-2000:]
    assert res.stderr.splitlines() == [
        f"interrupted by SIG{sig}: {out} is as it was before this run, or holds this run's complete outputs"
    ]
    assert list(tmp_path.iterdir()) == []
