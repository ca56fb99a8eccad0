"""``start_server`` without a real Triton: what is left behind when the start is interrupted.

The server runs in a session of its own (so ``stop()`` can kill it and its python
backend stubs together), which also means a Ctrl-C or SIGTERM sent to the caller
never reaches it. Here a stand-in process takes the binary's place, so these
tests run in the main environment too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.triton import server as triton_server


@pytest.fixture()
def fake_dist(tmp_path, monkeypatch):
    """``find_triton`` and the backend folder replaced; the "server" is a Python process that sleeps."""
    dist = triton_server.TritonDist(tmp_path / "bin", tmp_path / "python", tmp_path / "stub", tmp_path, "fake")
    monkeypatch.setattr(triton_server, "find_triton", lambda: dist)
    workdirs: list[Path] = []

    def workdir(_dist):
        d = tmp_path / f"work{len(workdirs)}"
        (d / "backends").mkdir(parents=True)
        workdirs.append(d)
        return d

    monkeypatch.setattr(triton_server, "_workdir_with_backends", workdir)
    monkeypatch.setattr(
        triton_server, "_command", lambda *a: [sys.executable, "-c", "import time; time.sleep(120)"]
    )
    launched: list[subprocess.Popen] = []
    real_launch = triton_server._launch

    def launch(*args):
        launched.append(real_launch(*args))
        return launched[-1]

    monkeypatch.setattr(triton_server, "_launch", launch)
    yield launched, workdirs
    for proc in launched:  # never leave the stand-in running, whatever the test found
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.parametrize("signal_error", [KeyboardInterrupt, SystemExit])
def test_an_interrupt_while_waiting_for_readiness_stops_the_server(fake_dist, monkeypatch, signal_error):
    launched, workdirs = fake_dist

    def interrupted(_port):
        raise signal_error()

    monkeypatch.setattr(triton_server, "_ready", interrupted)
    with pytest.raises(signal_error):
        triton_server.start_server(Path("."), timeout=30)
    assert len(launched) == 1
    assert launched[0].poll() is not None, "the server outlived an interrupted start (its own session: no signal)"
    assert not workdirs[0].exists(), "the server's backend folder was left behind"


def _gone(pid: int, wait: float = 5.0) -> bool:
    """No such process, or only its zombie (an orphan here may never be reaped), within ``wait`` s (a kill is async)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (FileNotFoundError, ProcessLookupError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# A "server" that starts a child in its own process group which ignores SIGINT (as a python-backend stub
# does while Triton shuts down), writes the child's pid, and exits on SIGINT.
SERVER_WITH_STUB = """
import subprocess, sys, time
stub = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(flush=True); time.sleep(120)"],
    stdout=subprocess.PIPE)
stub.stdout.readline()  # its SIGINT handler is set
open(sys.argv[1], "w").write(str(stub.pid))
time.sleep(120)
"""


def test_stop_leaves_no_process_of_the_server_behind(fake_dist, monkeypatch, tmp_path):
    pid_file = tmp_path / "stub.pid"
    monkeypatch.setattr(triton_server, "_command", lambda *a: [sys.executable, "-c", SERVER_WITH_STUB, str(pid_file)])
    monkeypatch.setattr(triton_server, "_ready", lambda _port: pid_file.is_file() and pid_file.read_text() != "")
    server = triton_server.start_server(Path("."), timeout=30)
    stub = int(pid_file.read_text())
    try:
        server.stop()
        assert _gone(stub), "a process of the server's group outlived stop() (an orphaned python-backend stub)"
    finally:
        if not _gone(stub, wait=0):
            os.kill(stub, signal.SIGKILL)


def test_a_server_that_exits_before_ready_is_reported_as_exited_not_as_a_timeout(fake_dist, monkeypatch):
    monkeypatch.setattr(triton_server, "_command", lambda *a: [sys.executable, "-c", "raise SystemExit(7)"])
    monkeypatch.setattr(triton_server, "_ready", lambda _port: False)
    start = time.monotonic()
    with pytest.raises(triton_server.ServerUnavailable, match="exited with code 7 before it was ready") as e:
        triton_server.start_server(Path("."), timeout=60)
    assert "within 60 s" not in str(e.value)
    assert time.monotonic() - start < 30, "it waited for the timeout, not for the process"


def test_a_server_still_starting_at_the_timeout_is_reported_as_a_timeout(fake_dist, monkeypatch):
    monkeypatch.setattr(triton_server, "_ready", lambda _port: False)
    with pytest.raises(triton_server.ServerUnavailable, match="did not become ready within 0.5 s"):
        triton_server.start_server(Path("."), timeout=0.5)
