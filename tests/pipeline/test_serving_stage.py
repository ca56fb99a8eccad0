"""The job's Triton stage (``--triton-repo``, ``--serve-test``) and replay data (``test_data_set_0``), end to end.

The default job's run (``lenet_run``, tests/pipeline/conftest.py: LeNet on the
digits, every backend asked for, so that the unavailable ones are reported) wrote a
Triton repository beside ``--out``; the tests read what it wrote. Config parsing with Triton's protobuf needs
``tritonclient`` (skipped without it, with the reason); the real server test is
marker ``serve`` (the serve environment: ``make test-serve``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.export import main

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--backends", "ort-cpu", "--batch-sizes", "2", "--latency-seconds", "0.01", "--no-progress", "--threads", "1"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def has_pytriton() -> bool:
    import importlib.util

    return importlib.util.find_spec("pytriton") is not None


@pytest.fixture()
def run(lenet_run):
    """The default job's run, with ``--triton-repo`` and batch sizes 1 and 4 (tests/pipeline/conftest.py)."""
    out, repo = lenet_run["out"], lenet_run["repo"]
    report = json.loads((out / "report.json").read_text())
    return {"out": out, "repo": repo, "report": report, "md": (out / "report.md").read_text()}


def section(md: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", md, re.S | re.M)
    assert m, f"no section {title!r} in report.md"
    return m.group(1)


def test_triton_repository_serves_the_run_files_with_the_measured_batching(run):
    out, repo, r = run["out"], run["repo"], run["report"]
    t = r["triton"]
    assert t["path"] == str(repo) and t["kept"] is True
    assert set(t["models"]) == {"acl_onnxruntime", "acl_python"}  # no TensorRT engine without TensorRT
    static = sha256(out / "model.static.onnx")
    for model in t["models"]:
        assert sha256(repo / model / "1" / "model.onnx") == static, model
    assert (repo / "acl_python" / "1" / "model.py").is_file()
    # The batching plan comes from the ONNX Runtime CPU curve of this very run.
    curve = {int(b): row["p50_ms"] for b, row in r["latency"]["ort-cpu:static"].items()}
    assert {int(b): v for b, v in t["batching"]["curve"].items()} == pytest.approx(curve)
    assert t["batching"]["max_batch_size"] == 4
    for model in t["models"]:
        text = (repo / model / "config.pbtxt").read_text()
        assert f'name: "{model}"' in text and "max_batch_size: 4" in text
        assert re.search(r'name: "input"\s+data_type: TYPE_FP32\s+dims: \[ 1, 32, 32 \]', text), text
        assert re.search(r'name: "logits"\s+data_type: TYPE_FP32\s+dims: \[ 10 \]', text), text
    md = section(run["md"], "Triton repository")
    assert f"`{repo}`" in md and "`acl_onnxruntime` | onnxruntime" in md and "`acl_python` | python" in md
    assert "Unverified here: onnxruntime and tensorrt_plan models" in md
    assert "pass `--serve-test`" in section(run["md"], "Serving with Triton")


@pytest.mark.serve  # needs tritonclient: the serve environment
def test_triton_configs_parse_with_tritons_protobuf_and_match_the_onnx_file(run):
    from tests.deploy.triton.conftest import needs_tritonclient

    needs_tritonclient()
    from deploy.triton import check_repository, onnx_io, parse_config

    repo = run["repo"]
    assert run["report"]["triton"]["validated"] is True
    assert check_repository(repo) == {
        "acl_onnxruntime/config.pbtxt": [],
        "acl_onnxruntime/configs/cpu.pbtxt": [],
        "acl_python/config.pbtxt": [],
    }
    io = onnx_io(run["out"] / "model.static.onnx")
    config = parse_config((repo / "acl_python" / "config.pbtxt").read_text())
    assert [(i.name, list(i.dims)) for i in config.input] == [(s.name, list(s.dims)) for s in io.inputs]
    assert [(o.name, list(o.dims)) for o in config.output] == [(s.name, list(s.dims)) for s in io.outputs]


def test_each_unavailable_backend_is_listed_once_with_its_reason(run):
    r, md = run["report"], run["md"]
    missing = sorted({k.partition(":")[0] for k in r["verdict"]["not_available"]})
    if not missing:
        pytest.skip("every backend runs on this machine: nothing to list")
    listed = section(md, "Not available here")
    rows = [ln for ln in listed.splitlines() if ln.startswith("| ") and not ln.startswith("| backends")]
    named = [name for ln in rows for name in re.findall(r"(?:^\| |, )([a-z0-9-]+) \(", ln)]
    assert sorted(named) == missing  # every backend in exactly one row
    reasons = {v["reason"] for k, v in r["parity"].items() if "reason" in v}
    assert len(rows) == len(reasons)
    for reason in reasons:
        assert md.count(reason) == 1, reason
    for title in ("Parity against the source PyTorch model", "Latency"):
        body = section(md, title)
        assert "not available" not in body
        assert not [k for k in r["verdict"]["not_available"] if f"| {k} |" in body], title


def test_latency_rows_give_mean_and_standard_deviation(run):
    r, md = run["report"], run["md"]
    body = section(md, "Latency")
    assert "| backend:mode | batch | mean ms | std ms | p50 ms | p90 ms | p99 ms |" in body
    for key, table in r["latency"].items():
        if not table.get("available", True):
            continue
        for b, row in table.items():
            assert row["std_ms"] >= 0 and row["min_ms"] <= row["mean_ms"] <= row["max_ms"]
            assert 0 <= row["outliers"] <= row["iterations"] and isinstance(row["loaded"], bool)
            line = f"| {key} | {b} | {row['mean_ms']:.3f} | {row['std_ms']:.3f} | {row['p50_ms']:.3f} |"
            assert line in body
            assert ("loaded:" in body.split(line)[1].splitlines()[0]) == row["loaded"]


def test_test_data_beside_the_files_replays_with_polygraphy_and_the_check(run, tmp_path):
    import torch

    from export.test_data import read_test_data
    from pipeline import checkpoint as ckpt

    out, r = run["out"], run["report"]
    inputs, outputs = read_test_data(out)
    model, _ = ckpt.load(out / "model.safetensors")
    with torch.inference_mode():
        want = model(torch.from_numpy(inputs["input"].copy())).numpy()
    assert inputs["input"].shape == (8, 1, 32, 32)
    np.testing.assert_allclose(outputs["logits"], want, rtol=0, atol=1e-6)  # the source model's answer
    files = r["replay"]["files"]
    assert set(files) == {"model.static.onnx", "model.live.onnx", "model.live-akp.onnx", "model.static-fp16.onnx"}
    assert all(f["check"]["passed"] for f in files.values())
    assert files["model.static-fp16.onnx"]["precision"] == "fp16"
    assert "--atol 0.05" in files["model.static-fp16.onnx"]["commands"]["polygraphy"]
    for name in files:
        assert f"```bash\n{files[name]['commands']['polygraphy']}\n" in section(run["md"], "Replay with other tools")
    # Replayed here: the FP16 file at its own tolerance (tests/export/test_test_data.py replays
    # the static and live kinds with polygraphy, and catches a difference).
    cmd = files["model.static-fp16.onnx"]["commands"]["polygraphy"]
    res = subprocess.run(shlex.split(cmd), cwd=out, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "PASSED" in res.stdout + res.stderr
    check = shlex.split(files["model.live.onnx"]["commands"]["check"])
    res = subprocess.run([sys.executable, *check[1:]], cwd=out, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "logits: ok" in res.stdout, res.stdout + res.stderr
    # The replay is a real check: other logits make it fail.
    tampered = tmp_path / "tampered"  # not beside the shared run, which other tests list
    tampered.mkdir()
    (tampered / "model.live.onnx").write_bytes((out / "model.live.onnx").read_bytes())
    from export.test_data import write_test_data

    write_test_data(tampered / "model.live.onnx", inputs, {"logits": outputs["logits"] + 0.1})
    res = subprocess.run([sys.executable, *check[1:]], cwd=tampered, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "DIFFERS" in res.stdout


def test_repository_inside_out_appears_with_the_run(run, tmp_path):
    out = tmp_path / "inside"
    ckpt = run["out"] / "model.safetensors"
    assert main(["--out", str(out), "--checkpoint", str(ckpt), "--triton-repo", str(out / "triton"), *QUICK]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["files"]["triton_repo"] == "triton" and r["triton"]["path"] == str(out / "triton")
    assert sha256(out / "triton" / "acl_python" / "1" / "model.onnx") == sha256(out / "model.static.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["inside"], "no staging folder left"


def test_triton_repo_follows_the_rules_of_out(run, tmp_path, capsys):
    ckpt = str(run["out"] / "model.safetensors")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    cases = [
        (mine, [], "is not empty, expected a new or empty folder; pass --force"),
        (mine / "missing" / "..", [], "is not empty, expected a new or empty folder; pass --force"),  # mine, later
        (mine, ["--force"], "is not a repository written by acl-deploy; refusing to replace it even with --force"),
        (run["repo"], [], "pass --force to replace a repository written earlier"),
        (tmp_path / "o", [], "is --out itself, expected a folder of its own"),
        (tmp_path, [], "holds --out"),
        # Root may "write" to /proc by os.access, yet cannot create a folder there.
        (Path("/proc/acl-deploy-no-such"), [], "cannot create a folder in /proc, expected a writable folder"),
    ]
    before = sha256(run["repo"] / "acl_python" / "config.pbtxt")
    for repo, extra, message in cases:
        code = main(["--out", str(tmp_path / "o"), "--checkpoint", ckpt, "--triton-repo", str(repo), *extra, *QUICK])
        err = capsys.readouterr().err
        assert code == 2 and message in err, (repo, err)
        assert [ln for ln in err.splitlines() if ln.startswith("error: --triton-repo")], err
        assert not (tmp_path / "o").exists(), "refused before anything was written"
    assert (mine / "notes.txt").read_text() == "precious" and [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert sha256(run["repo"] / "acl_python" / "config.pbtxt") == before


def test_force_replaces_an_earlier_repository(run, tmp_path):
    import shutil

    repo = tmp_path / "repo"
    ckpt = str(run["out"] / "model.safetensors")
    shutil.copytree(run["repo"], repo)  # a repository an earlier run wrote (batch sizes 1 and 4)
    (repo / "acl_python" / "1" / "stale.txt").write_text("in a version folder: the earlier repository's")
    args = ["--out", str(tmp_path / "b"), "--checkpoint", ckpt, "--triton-repo", str(repo), "--force", *QUICK]
    args[args.index("--batch-sizes") + 1] = "1,8"
    assert main(args) == 0
    assert not (repo / "acl_python" / "1" / "stale.txt").exists()
    assert json.loads((tmp_path / "b" / "report.json").read_text())["triton"]["batching"]["max_batch_size"] == 8
    assert "max_batch_size: 8" in (repo / "acl_python" / "config.pbtxt").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "repo"], "no staging folders left"


@pytest.mark.parametrize("how", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_or_failed_run_leaves_an_external_repository_as_it_was(run, tmp_path, monkeypatch, how):
    """The repository was put in place by the Triton stage: a later Ctrl-C left --out as it was, not DIR."""
    import shutil

    from pipeline.stages import report as report_stage

    repo = tmp_path / "repo"
    shutil.copytree(run["repo"], repo)
    before = {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()}

    def cut_short(ctx):  # the last stage, after the Triton stage wrote the new repository
        raise how("cut short")

    monkeypatch.setattr(report_stage, "run", cut_short)
    args = ["--out", str(tmp_path / "b"), "--checkpoint", str(run["out"] / "model.safetensors")]
    with contextlib.suppress(RuntimeError):
        assert main([*args, "--triton-repo", str(repo), "--force", *QUICK]) != 0
    assert {str(p.relative_to(repo)): p.read_bytes() for p in repo.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"], "no pending repository, no --out"


def test_force_refuses_a_repository_holding_a_users_files(run, tmp_path, capsys):
    """--out's rule: --force replaces only what this tool wrote; a user's model or notes were deleted silently."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(run["repo"], repo)
    (repo / "my_model").mkdir()
    (repo / "my_model" / "config.pbtxt").write_text("name: 'mine'")
    (repo / "acl_python" / "NOTES.txt").write_text("mine")
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*"))
    args = ["--out", str(tmp_path / "b"), "--checkpoint", str(run["out"] / "model.safetensors")]
    assert main([*args, "--triton-repo", str(repo), "--force", *QUICK]) == 2
    err = capsys.readouterr().err
    assert "holds files acl-deploy did not write (acl_python/NOTES.txt, my_model/config.pbtxt)" in err, err
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*")) == before, "nothing removed or added"
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(has_pytriton(), reason="a Triton server is installed here: the serve test below runs instead")
def test_serve_test_without_a_server_says_not_available_once(run, tmp_path):
    out = tmp_path / "serve"
    ckpt = str(run["out"] / "model.safetensors")
    assert main(["--out", str(out), "--checkpoint", ckpt, "--serve-test", *QUICK]) == 0
    r = json.loads((out / "report.json").read_text())
    assert r["serving"]["available"] is False and "nvidia-pytriton is not installed" in r["serving"]["reason"]
    assert r["triton"]["path"] is None and r["triton"]["kept"] is False and "triton_repo" not in r["files"]
    md = (out / "report.md").read_text()
    assert md.count(r["serving"]["reason"]) == 1
    assert f"| Triton server (--serve-test) | not available: {r['serving']['reason']} |" in md
    assert "triton-python:static" not in r["parity"] and r["verdict"]["passed"]


@pytest.mark.serve
@pytest.mark.slow
def test_serve_test_with_a_real_triton_server(run, tmp_path):
    if not has_pytriton():
        pytest.skip("nvidia-pytriton (Triton server) is not installed here: it pins numpy<2 (`make test-serve`)")
    out = tmp_path / "serve"
    ckpt = str(run["out"] / "model.safetensors")
    args = ["--out", str(out), "--checkpoint", ckpt, "--serve-test", "--triton-repo", str(out / "triton"), *QUICK]
    args[args.index("--batch-sizes") + 1] = "1,4,16"
    assert main(args) == 0
    r = json.loads((out / "report.json").read_text())
    s = r["serving"]
    assert s["available"] is True and s["server"]["start_seconds"] > 0
    assert s["parity"]["passed"] and s["parity"]["max_abs_err"] < 1e-4, s["parity"]
    assert r["parity"]["triton-python:static"] == s["parity"] and r["verdict"]["passed"]
    levels = s["load"]["levels"]
    assert sorted(int(c) for c in levels) == [1, 4, 16]
    for clients, lv in levels.items():
        assert lv["errors"] == 0 and lv["requests"] > 0 and lv["throughput"] > 0, (clients, lv)
        assert 0 < lv["p50_ms"] <= lv["p99_ms"] and lv["server_mean_batch"] >= 1
    assert levels["1"]["server_mean_batch"] == 1  # one client, one request at a time: nothing to batch
    body = section((out / "report.md").read_text(), "Serving with Triton")
    assert "| clients | requests | errors | throughput images/s | p50 ms | p99 ms |" in body
    assert "1-minute load average" in body and f"ready in {s['server']['start_seconds']:.2f} s" in body
    for clients, lv in levels.items():
        assert f"| {clients} | {lv['requests']} | 0 | {lv['throughput']:.0f} | {lv['p50_ms']:.3f} |" in body
    print(
        f"\nserver ready in {s['server']['start_seconds']:.2f} s; "
        + "; ".join(
            f"{c} clients {lv['throughput']:.0f}/s p50 {lv['p50_ms']:.2f} ms p99 {lv['p99_ms']:.2f} ms "
            f"batch {lv['server_mean_batch']:.2f}"
            for c, lv in levels.items()
        )
    )


def test_a_killed_runs_pending_repository_is_removed_by_the_next_run(tmp_path):
    """SIGKILL leaves the repository a run wrote beside DIR; nothing removed it."""
    import os

    from pipeline.serving import PENDING, pending_folder

    dest = tmp_path / "repo"
    dead = tmp_path / (PENDING.format(name="repo") + "999999999")  # no such process
    alive = tmp_path / (PENDING.format(name="repo") + str(os.getppid()))
    for folder in (dead, alive):
        (folder / "acl_python").mkdir(parents=True)
    assert pending_folder(dest) == tmp_path / (PENDING.format(name="repo") + str(os.getpid()))
    assert not dead.exists() and alive.exists(), "only a killed run's is removed"
