"""``reproduce --cluster``: a real local Dask cluster of two worker processes runs the grid as locally, bit for bit.

A worker killed mid-run loses no finished run: its run continues on a worker after its last epoch.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from pipeline.experiments import cluster as cluster_module
from pipeline.experiments.cluster import cluster_executor
from pipeline.experiments.grid import build_grid
from pipeline.experiments.runner import run_grid
from pipeline.reproduce import main, reproduce

TINY = ["--quick", "--epochs", "1", "--limit", "40"]
QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def cluster():
    """A scheduler in this process and two worker processes (one thread each), closed even when a test fails."""
    distributed = pytest.importorskip(
        "distributed", reason="Dask distributed (the cluster extra) is not installed: pip install -e '.[cluster]'"
    )
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    ) as lc, distributed.Client(lc, set_as_default=False) as client:
        yield lc, client


def _records(runs: Path) -> dict[str, dict]:
    """Every run record in ``runs`` without its timing, by file name."""
    out = {}
    for p in sorted(runs.glob("*.json")):
        rec = json.loads(p.read_text())
        rec.pop("seconds")
        out[p.name] = rec
    return out


@pytest.mark.slow
def test_cluster_grid_equals_local_bit_for_bit(cluster, tmp_path, capsys):
    lc, client = cluster
    before = sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())
    local = tmp_path / "local"
    assert reproduce(build_grid("digits", quick=True, epochs=1, limit=40), local, jobs=2, **QUIET) is not None

    out = tmp_path / "cluster"
    assert main([*TINY, "--out", str(out), "--cluster", lc.scheduler_address]) == 0
    assert "2 worker(s), 2 thread(s)" in capsys.readouterr().err
    executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert sum(executed.values()) - before == 36 and all(n > 0 for n in executed.values())  # both workers ran runs
    assert (out / "results.json").read_bytes() == (local / "results.json").read_bytes()
    assert _records(out / "runs") == _records(local / "runs")
    assert not list((out / "runs").glob(".*"))  # no resume state, no run lock left behind


def _kill_mid_run(client, runs: Path, worker_thread: threading.Thread) -> tuple[str, dict[str, tuple], int]:
    """Once a run is recorded and another has saved an epoch, SIGKILL the worker training that other run.

    Returns the killed run's id, the records then (name -> (bytes, mtime)) and the killed worker's pid.
    """
    deadline = time.monotonic() + 300
    while worker_thread.is_alive() and time.monotonic() < deadline:
        recorded = {p.stem for p in runs.glob("*.json")}
        saved = {p.parent.name[1 : -len(".resume")] for p in runs.glob(".*.resume/state.safetensors")}
        mid = sorted(saved - recorded)
        if recorded and mid:
            holders = [w for w, keys in client.processing().items() if any(f"-{mid[0]}-" in k for k in keys)]
            if holders:
                snapshot = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in runs.glob("*.json")}
                pid = client.run(os.getpid, workers=holders[:1])[holders[0]]
                os.kill(pid, signal.SIGKILL)
                return mid[0], snapshot, pid
        time.sleep(0.02)
    raise AssertionError("no run was mid-way while another was recorded")


@pytest.mark.slow
def test_killed_worker_loses_no_finished_run(cluster, tmp_path):
    lc, client = cluster
    full = build_grid("digits", quick=True, epochs=5, limit=400)
    # Plain LeNet runs finish first (grid order); AnaNN-LeNet's five epochs leave time to kill one mid-way.
    grid = dataclasses.replace(full, cells=tuple(c for c in full.cells if c.id in ("lenet-plain", "lenet-exp3")))
    local = tmp_path / "local"
    run_grid(grid, local, jobs=1, **QUIET)

    out = tmp_path / "cluster"
    result: dict = {}

    def run() -> None:
        with cluster_executor(lc.scheduler_address, out, log=lambda m: None) as executor:
            result["records"] = run_grid(grid, out, executor=executor, **QUIET)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        killed_run, snapshot, pid = _kill_mid_run(client, out / "runs", thread)
    finally:
        thread.join(timeout=600)
    assert not thread.is_alive() and len(result["records"]) == 6
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    # Every run recorded before the kill is still there, untouched (not trained again).
    assert snapshot and all(
        (out / "runs" / name).read_bytes() == data and (out / "runs" / name).stat().st_mtime_ns == mtime
        for name, (data, mtime) in snapshot.items()
    )
    # The killed run continued after its last saved epoch, and every record equals the local run's.
    assert result["records"][(killed_run.rsplit("-seed", 1)[0], int(killed_run.rsplit("seed", 1)[1]))][
        "resumed_from_epoch"
    ] >= 1
    cluster_records, local_records = _records(out / "runs"), _records(local / "runs")
    for rec in (*cluster_records.values(), *local_records.values()):
        rec.pop("resumed_from_epoch")
    assert cluster_records == local_records
    client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed worker: the next test has two again


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize(
    "address, match",
    [
        ("tcp://127.0.0.1:1", "no Dask scheduler answered"),  # nothing listens on port 1
        ("no-port", "is not a scheduler address"),
    ],
)
def test_unreachable_cluster_is_one_line_and_writes_nothing(address, match, tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed", reason="Dask distributed (the cluster extra) is not installed")
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "1s")
    out = tmp_path / "new" / "out"
    assert main([*TINY, "--out", str(out), "--cluster", address]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: --cluster {address}") and match in line and ", expected " in line
    assert not (tmp_path / "new").exists()


def test_cluster_without_dask_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed: its import fails
    out = tmp_path / "out"
    assert main([*TINY, "--out", str(out), "--cluster", "tcp://127.0.0.1:8786"]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("error: --cluster needs Dask distributed") and "expected" in line
    assert not out.exists()


def test_jobs_and_cluster_together_are_refused(tmp_path, capsys):
    assert main([*TINY, "--jobs", "2", "--cluster", "tcp://127.0.0.1:8786", "--out", str(tmp_path / "o")]) == 2
    assert "--jobs and --cluster" in _one_error_line(capsys)
    assert not (tmp_path / "o").exists()


class _Workers:
    """A client whose workers answer ``_check_workers``'s probe with ``facts`` (one tuple per worker)."""

    def __init__(self, *facts):
        self.facts = facts

    def run(self, fn, *args):
        real = fn(*args)  # the probe itself runs here, so it is exercised too
        assert isinstance(real, tuple) and real[0] and real[1]
        return {f"tcp://w{i}:1": f for i, f in enumerate(self.facts)}


@pytest.mark.parametrize(
    "facts, match",
    [
        ((False, True, "same"), "cannot write"),
        ((True, False, "same"), "no acl-deploy"),
        ((True, True, "0.0.1"), "torch 0.0.1, expected acl-deploy and torch"),
    ],
)
def test_workers_that_cannot_share_the_folder_or_differ_are_refused(facts, match, tmp_path):
    import torch

    from pipeline.errors import UserError

    good = (True, True, torch.__version__)
    bad = tuple(torch.__version__ if f == "same" else f for f in facts)
    cluster_module._check_workers(_Workers(good, good), tmp_path / "out")  # all fine: no error
    with pytest.raises(UserError, match=match) as e:
        cluster_module._check_workers(_Workers(good, bad), tmp_path / "out")
    assert "tcp://w1:1" in str(e.value) and ", expected " in str(e.value)


@pytest.mark.slow
def test_a_run_the_cluster_gives_up_on_is_one_line_keeping_finished_runs(tmp_path):
    """With ``allowed-failures`` 0 the first lost worker ends its run's task: a one-line error, records kept."""
    distributed = pytest.importorskip("distributed", reason="Dask distributed (the cluster extra) is not installed")
    import dask

    from pipeline.errors import UserError

    full = build_grid("digits", quick=True, epochs=5, limit=400)
    grid = dataclasses.replace(full, cells=tuple(c for c in full.cells if c.id in ("lenet-plain", "lenet-exp3")))
    out = tmp_path / "out"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with cluster_executor(lc.scheduler_address, out, log=lambda m: None) as executor:
                run_grid(grid, out, executor=executor, **QUIET)
        except BaseException as e:  # handed to the test
            errors.append(e)

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.CRITICAL
    ) as lc, distributed.Client(lc, set_as_default=False) as client:
        thread = threading.Thread(target=run)
        thread.start()
        try:
            killed_run, snapshot, _ = _kill_mid_run(client, out / "runs", thread)
        finally:
            thread.join(timeout=600)
    assert len(errors) == 1 and isinstance(errors[0], UserError), errors
    assert "gave up on a run" in str(errors[0]) and "\n" not in str(errors[0])
    assert snapshot and all((out / "runs" / name).read_bytes() == data for name, (data, _) in snapshot.items())
    assert not (out / "runs" / f"{killed_run}.json").exists()


def test_cluster_with_a_paper_that_is_not_a_grid_is_refused(tmp_path, capsys):
    from pipeline.reproduce import main

    code = main(["--paper", "recos", "--quick", "--cluster", "tcp://127.0.0.1:1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --cluster runs grids") and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
