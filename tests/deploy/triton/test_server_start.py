"""``start_server`` without a real Triton: what is left behind when the start is interrupted.

The server runs in a session of its own (so ``stop()`` can kill it and its python
backend stubs together), which also means a Ctrl-C or SIGTERM sent to the caller
never reaches it. Here a stand-in process takes the binary's place, so these
tests run in the main environment too.
"""

from __future__ import annotations

import subprocess
import sys
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
