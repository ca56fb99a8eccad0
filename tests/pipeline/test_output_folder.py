"""``OutputFolder``: the manifest rule of --force, the lock, recovery after killed runs, and the swap under signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.output_folder as of
from pipeline.errors import UserError
from pipeline.output_folder import MANIFEST, OutputFolder, first_unproven, read_manifest, write_manifest


def fake_run(folder: Path, tag: str) -> Path:
    """A folder as a run leaves it: files, a subfolder, and the manifest written last."""
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"tag": tag}))
    (folder / "model.onnx").write_bytes(tag.encode() * 100)
    (folder / "trt").mkdir()
    (folder / "trt" / "engine.plan").write_bytes(b"plan-" + tag.encode())
    write_manifest(folder)
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def commit_new_run(out: Path, force: bool, tag: str = "new", logs: list | None = None) -> Path:
    folder = OutputFolder(out, force, log=(logs if logs is not None else []).append)
    with folder.locked():
        folder.check()
        staging = folder.open()
        staging.rmdir()
        fake_run(staging, tag)
        (staging / MANIFEST).unlink()  # commit() writes it
        return folder.commit()


def test_manifest_lists_every_file_with_size_and_hash(tmp_path):
    run = fake_run(tmp_path / "run", "a")
    doc = json.loads((run / MANIFEST).read_text())
    assert doc["format"] == "acl-deploy/manifest/1" and doc["dirs"] == ["trt"]
    assert [e["path"] for e in doc["files"]] == ["model.onnx", "report.json", "trt/engine.plan"]
    assert doc["files"][0]["size"] == 100 and len(doc["files"][0]["sha256"]) == 64
    assert first_unproven(run) is None


def test_a_good_earlier_run_is_replaced_and_nothing_is_left_beside_it(tmp_path):
    out = fake_run(tmp_path / "run", "old")
    commit_new_run(out, force=True)
    assert json.loads((out / "report.json").read_text()) == {"tag": "new"}
    assert first_unproven(out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("earlier", [None, "old"])
def test_out_dot_is_the_current_folder_until_the_end(tmp_path, monkeypatch, earlier):
    """``--out .`` in an empty folder printed ``done: ./report.md``, exit 0, and the folder was gone: after the
    current folder moved aside, ``.`` named the moved folder, so the new run replaced it and was deleted as the
    earlier run; the lock file stayed beside it. With an earlier run and ``--force`` the swap failed."""
    out = fake_run(tmp_path / "run", earlier) if earlier else tmp_path / "run"
    out.mkdir(exist_ok=True)
    monkeypatch.chdir(out)
    commit_new_run(Path("."), force=earlier is not None)
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == {"tag": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda out: (out / "notes.txt").write_text("mine"), "holds notes.txt, which its manifest.json does not list"),
        (lambda out: (out / "trt" / "mine.txt").write_text("mine"), "holds trt/mine.txt, which"),
        (lambda out: (out / "data").mkdir(), "holds data/, which its manifest.json does not list"),
        (lambda out: (out / "model.onnx").write_bytes(b"x" * 300), "holds model.onnx, which was modified"),
        # Same size, other bytes: only the hash tells.
        (
            lambda out: (out / "report.json").write_text(json.dumps({"tag": "OLD"})),
            "holds report.json, which was modified",
        ),
        (
            lambda out: (out / MANIFEST).unlink(),
            "holds no readable manifest.json, so it is not an earlier acl-deploy run",
        ),
        (lambda out: (out / MANIFEST).write_text("{"), "holds no readable manifest.json"),
        (lambda out: os.symlink("/etc/hostname", out / "link"), "holds link, which its manifest.json does not list"),
    ],
)
def test_force_refuses_a_folder_with_anything_unproven_and_leaves_it_untouched(tmp_path, damage, named):
    out = fake_run(tmp_path / "run", "old")
    damage(out)
    before = contents(out)
    with pytest.raises(UserError) as e:
        commit_new_run(out, force=True)
    msg = str(e.value)
    assert named in msg and "refusing to replace it even with --force, expected only the files" in msg, msg
    assert "\n" not in msg
    assert contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "staging and lock removed"


def test_manifest_naming_a_path_outside_its_folder_is_not_ours(tmp_path):
    out = fake_run(tmp_path / "run", "old")
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"].append({"path": "../victim", "size": 1, "sha256": "0" * 64})
    (out / MANIFEST).write_text(json.dumps(doc))
    assert read_manifest(out) is None
    assert "holds no readable manifest.json" in first_unproven(out)


def test_a_file_added_during_the_run_is_found_at_commit(tmp_path):
    out = fake_run(tmp_path / "run", "old")
    folder = OutputFolder(out, True, log=lambda m: None)
    with folder.locked():
        folder.check()
        staging = folder.open()
        (staging / "x").write_text("new")
        (out / "late.txt").write_text("written by the user meanwhile")
        with pytest.raises(UserError, match="holds late.txt"):
            folder.commit()
        folder.discard()
    assert (out / "late.txt").exists() and first_unproven(out) is not None


def test_non_empty_without_force_and_a_symlinked_out_are_refused(tmp_path):
    out = fake_run(tmp_path / "run", "old")
    with pytest.raises(UserError, match=r"is not empty, expected a new or empty folder; pass --force"):
        OutputFolder(out, False).check()
    link = tmp_path / "link"
    link.symlink_to(out)
    with pytest.raises(UserError, match="is a symbolic link, expected a folder"):
        OutputFolder(link, True).check()


def test_an_out_that_cannot_be_a_folder_says_what_is_expected(tmp_path, monkeypatch):
    """Bad input is ``error: <what>, expected <what>``; these three said only the what."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="exists and is not a folder, expected a folder or a path that does not exist"):
        OutputFolder(blocker, True).check()
    with pytest.raises(UserError, match="is not a folder, expected a path whose parent folders are folders"):
        OutputFolder(blocker / "run", True).check()
    monkeypatch.setattr(of.os, "access", lambda path, mode: False)  # a read-only folder (root may write anywhere)
    with pytest.raises(UserError, match="cannot write in .*, expected a folder this user can write in"):
        OutputFolder(tmp_path / "run", True).check()


def test_an_out_through_a_missing_folder_and_dotdot_is_checked_as_the_folder_it_names(tmp_path):
    """``user/missing/..`` is ``user`` once ``missing`` exists; unresolved, it "did not exist" and was replaced."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="is not empty, expected a new or empty folder"):
        commit_new_run(user / "missing" / "..", force=False)
    assert contents(user) == {"notes.txt": b"mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"], "nothing written beside it"


def test_second_lock_fails_at_once_naming_the_holder_and_the_lock_file_goes_with_the_run(tmp_path):
    out = tmp_path / "sub" / "run"
    a, b = OutputFolder(out, False), OutputFolder(out, True)
    with a.locked():
        lock = tmp_path / "sub" / ".run.lock"
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(UserError) as e:
            b.lock()
        assert str(e.value) == (
            f"--out {out} is in use by another run (process {os.getpid()}, lock {lock}), "
            "expected one run at a time per output folder"
        )
    assert not lock.exists()
    with b.locked():  # free again
        assert lock.exists()
    assert not lock.exists()


def test_a_lock_held_by_another_process_is_refused(tmp_path):
    out = tmp_path / "run"
    code = (
        "import sys, time; from pipeline.output_folder import OutputFolder\n"
        f"f = OutputFolder({str(out)!r}, False); f.lock(); print('locked', flush=True); sys.stdin.read()"
    )
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=rf"in use by another run \(process {holder.pid}, "):
            OutputFolder(out, True).lock()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # The holder exited without unlocking (as a SIGKILL would): its lock file stays, free, and is taken over.
    lock = tmp_path / ".run.lock"
    assert lock.exists()
    with OutputFolder(out, True).locked():
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_recover_removes_a_killed_runs_staging_and_finishes_a_half_deleted_earlier_run(tmp_path):
    out = fake_run(tmp_path / "run", "new")
    pid = dead_pid()
    staging = tmp_path / f".run.staging-{pid}-abc"
    staging.mkdir()
    (staging / "model.onnx").write_bytes(b"half written")
    previous = fake_run(tmp_path / f".run.previous-{pid}-def", "old")
    (previous / "model.onnx").unlink()  # killed while deleting it
    logs = []
    with OutputFolder(out, True, log=logs.append).locked():
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert json.loads((out / "report.json").read_text()) == {"tag": "new"}
    assert any(f"removed {staging}: the unfinished outputs of a run that was killed" in m for m in logs), logs
    assert any(f"removed {previous}: an earlier run's outputs" in m for m in logs), logs


def test_recover_restores_the_earlier_run_when_killed_mid_swap(tmp_path):
    out = tmp_path / "run"
    pid = dead_pid()
    previous = fake_run(tmp_path / f".run.previous-{pid}-x", "old")
    staging = fake_run(tmp_path / f".run.staging-{pid}-y", "new")
    expected = contents(previous)
    logs = []
    with OutputFolder(out, False, log=logs.append).locked():
        pass
    assert contents(out) == expected and sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert any(f"restored {out} from {previous}" in m for m in logs), logs
    assert any(f"removed {staging}" in m for m in logs), logs


def test_recover_reports_and_keeps_what_it_cannot_prove(tmp_path):
    out = fake_run(tmp_path / "run", "new")
    pid = dead_pid()
    previous = fake_run(tmp_path / f".run.previous-{pid}-x", "old")
    (previous / "notes.txt").write_text("the user's, somehow")
    (previous / "trt" / "engine.plan").write_bytes(b"changed")
    alive = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        busy = tmp_path / f".run.staging-{alive.pid}-z"
        busy.mkdir()
        logs = []
        with OutputFolder(out, True, log=logs.append).locked():
            pass
    finally:
        alive.stdin.close()
        alive.wait(timeout=60)
    kept = contents(previous)
    assert set(kept) == {"notes.txt", "trt/engine.plan", MANIFEST}, "proven files deleted, the rest kept"
    assert kept["notes.txt"] == b"the user's, somehow" and kept["trt/engine.plan"] == b"changed"
    assert any(f"warning: kept {previous}, left by a killed run: trt/engine.plan differs" in m for m in logs), logs
    assert busy.is_dir() and any(f"left {busy} in place: process {alive.pid}" in m for m in logs), logs


def test_swap_finishes_before_a_signal_is_acted_on(tmp_path, monkeypatch):
    out = fake_run(tmp_path / "run", "old")
    real_replace = os.replace
    sent = []

    def replace(src, dst):
        real_replace(src, dst)
        if not sent:  # the earlier run has just been moved aside: the worst moment for a signal
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    class Stop(BaseException):
        pass

    def handler(n, f):
        raise Stop

    monkeypatch.setattr(of.os, "replace", replace)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(Stop):
            commit_new_run(out, force=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sent and json.loads((out / "report.json").read_text()) == {"tag": "new"}
    assert first_unproven(out) is None and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_recover_leaves_other_outs_alone_and_reports_an_older_versions_folders(tmp_path):
    out = tmp_path / "run"
    pid = dead_pid()
    # The staging folder of another --out, named "run.staging-5": same prefix, not ours.
    other = tmp_path / f".run.staging-5.staging-{pid}-abc"
    other.mkdir()
    older = tmp_path / ".run.staging-ab12_xyz"  # mkdtemp's name before PIDs were part of it
    older.mkdir()
    logs = []
    with OutputFolder(out, False, log=logs.append).locked():
        pass
    assert other.is_dir() and older.is_dir()
    assert logs == [
        f"      left {older} in place: an older acl-deploy's, which cannot tell whether a run still uses it; "
        "remove it yourself once none does"
    ]


def test_commit_refuses_after_a_signal_that_a_library_swallowed(tmp_path):
    """The handler's exception was caught on the way (as torch.onnx's exporter did): the run must still not commit."""
    from pipeline.interrupts import Terminated, signals_raise

    out = fake_run(tmp_path / "run", "old")
    before = contents(out)
    folder = OutputFolder(out, True, log=[].append)
    with pytest.raises(Terminated) as e, signals_raise(), folder.locked():
        staging = folder.open()
        (staging / "report.json").write_text("{}")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException:
            pass  # swallowed
        try:
            folder.commit()
        finally:
            folder.discard()
    assert e.value.signum == signal.SIGTERM
    assert contents(out) == before, "the earlier run is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "no staging folder, no lock"
