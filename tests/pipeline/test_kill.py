"""Signals and concurrent runs, end to end: a killed run leaves the earlier run or its own complete one, and nothing stale.

Each case runs ``tests/pipeline/kill_job.py`` (the CLI with a signal sent to itself
at a chosen point) as a subprocess over a copy of a complete earlier run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.output_folder import MANIFEST, first_unproven
from tests.pipeline.kill_job import NOT_REACHED

ROOT = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("kill_job.py")
pytestmark = pytest.mark.slow  # each case runs the whole job in a subprocess
QUICK = ["--batch-sizes", "1", "--latency-seconds", "0.01", "--backends", "ort-cpu", "--no-progress", "--threads", "1"]


def job(*args, point="none", sig="TERM", sync=None, timeout=600, popen=False):
    env = {**os.environ, "KILL_POINT": point, "KILL_SIGNAL": sig, "OMP_NUM_THREADS": "1"}
    if sync is not None:
        env["KILL_SYNC"] = str(sync)
    cmd = [sys.executable, str(DRIVER), *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def beside(out: Path) -> list[str]:
    """What the run keeps beside --out, other than --out itself."""
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """A complete earlier run (1 epoch) and a copy of its checkpoint outside it."""
    base = tmp_path_factory.mktemp("earlier")
    out = base / "run"
    res = job("--out", out, "--epochs", "1", *QUICK)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = base / "model.safetensors"
    shutil.copyfile(out / "model.safetensors", ckpt)
    return out, ckpt


def copy_of(earlier, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    out = tmp_path / "run"
    shutil.copytree(earlier[0], out)
    return out, tree_digest(out)


INSIDE_EXPORT = [
    # A signal while the exporter imports torch._dynamo was once a 120-line TorchExportError, exit 1 (issue 18).
    ("export-import-dynamo", "INT", 130),
    ("export-import-dynamo", "TERM", 143),
    ("export-capture", "TERM", 143),
    # ... and, when the exporter's next capture strategy succeeded, the signal was lost: done, exit 0.
    ("export-capture-lost", "TERM", 143),
    ("export-capture-lost", "INT", 130),
    ("export-trace", "INT", 130),
    ("export-translate", "TERM", 143),
    ("export-optimize", "INT", 130),
    ("export-verify", "TERM", 143),
    ("export-save", "INT", 130),
]


@pytest.mark.parametrize(
    "point, sig, code",
    [
        ("train", "TERM", 143),
        *INSIDE_EXPORT,
        ("export", "TERM", 143),
        ("export", "INT", 130),
        ("commit-backup", "TERM", 143),
        ("commit-swap", "TERM", 143),
    ],
)
def test_signal_leaves_old_or_new_run_complete_and_nothing_stale(earlier, tmp_path, point, sig, code):
    out, before = copy_of(earlier, tmp_path)
    source = ["--epochs", "2"] if point == "train" else ["--checkpoint", earlier[1]]
    res = job("--out", out, "--force", *source, *QUICK, point=point, sig=sig)
    assert res.returncode != NOT_REACHED, f"{point} was never reached: {res.stderr.splitlines()[-1]}"
    assert res.returncode == code, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert f"interrupted by SIG{sig}" in res.stderr.splitlines()[-1]
    if not point.startswith("commit"):
        assert "done:" not in res.stderr, "the run went on after the signal"
    after = tree_digest(out)
    assert first_unproven(out) is None, "--out holds one complete run, as its manifest says"
    if point.startswith("commit"):
        # The swap had begun: it finishes before the signal is acted on, so the new run is in place, whole.
        # (a --checkpoint run, which draws no initial mosaics: it cannot know the initial kernels)
        assert after != before and set(after) == {f for f in before if not f.endswith("-initial.png")}
        assert json.loads((out / "report.json").read_text())["model"]["trained"] is False
    else:
        assert after == before, "the earlier run is untouched"
    left = beside(out)
    if point == "train":  # the resume state is kept on purpose, and the message says where
        assert left == [".run.resume"] and ".run.resume: the same command resumes it" in res.stderr
    else:
        assert left == [], left


def test_sigkill_mid_swap_is_recovered_by_the_next_run(earlier, tmp_path):
    out, before = copy_of(earlier, tmp_path)
    res = job("--out", out, "--force", "--checkpoint", earlier[1], *QUICK, point="commit-backup", sig="KILL")
    assert res.returncode == -9, res.stderr[-3000:]
    left = beside(out)
    assert not out.exists() and len(left) == 3, left  # the earlier run moved aside, the new one staged, the lock file
    assert {n.split("-")[0] for n in left} == {".run.previous", ".run.staging", ".run.lock"}, left

    # The same command again, without --force: it restores the earlier run, says so, and refuses to replace it.
    res = job("--out", out, "--checkpoint", earlier[1], *QUICK)
    assert res.returncode == 2, res.stderr[-3000:]
    assert f"restored {out} from {out.parent}/.run.previous-" in res.stderr
    assert f"removed {out.parent}/.run.staging-" in res.stderr
    assert res.stderr.splitlines()[-1].startswith(f"error: --out {out} is not empty")
    assert tree_digest(out) == before and beside(out) == []


def test_second_run_into_the_same_out_fails_at_once(earlier, tmp_path):
    out = tmp_path / "o" / "run"
    sync = tmp_path / "sync"
    sync.mkdir()
    first = job("--out", out, "--checkpoint", earlier[1], *QUICK, point="wait", sync=sync, popen=True)
    try:
        deadline = time.monotonic() + 300
        while not (sync / "ready").exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first run never reached its export"
            time.sleep(0.1)
        for extra in ([], ["--force"]):
            second = job("--out", out, "--checkpoint", earlier[1], *QUICK, *extra)
            assert second.returncode == 2, second.stderr[-3000:]
            lines = second.stderr.strip().splitlines()
            assert lines == [
                f"error: --out {out} is in use by another run (process {first.pid}, lock {out.parent}/.run.lock), "
                "expected one run at a time per output folder"
            ], lines  # failed at once: not even the checkpoint was loaded
        (sync / "go").write_text("")
        _, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err[-3000:]
    assert first_unproven(out) is None and (out / MANIFEST).is_file()
    assert json.loads((out / "report.json").read_text())["model"]["checkpoint"] == str(earlier[1])
    assert beside(out) == []
