"""The grid's runs as tasks on an existing Dask distributed cluster (``reproduce --cluster ADDRESS``).

Dask rather than Ray: ``distributed`` is a pure-Python wheel of a few MB that installs
beside the pinned torch and numpy without touching them, its scheduler and workers are
started with one command each (``dask scheduler``, ``dask worker ADDRESS``, or a batch
system through dask-jobqueue, which is how HPC users of Python already share machines),
and its ``LocalCluster`` gives the tests a real two-process cluster in a second.

The unit of work stays the run (``runner.run_one``): each (cell, seed) is one task keyed
by its run key, writing its record and its per-epoch resume state into ``--out/runs``,
which must therefore be a folder every worker and this machine share. When a worker is
lost, the scheduler gives its task to another worker (up to its ``allowed-failures``,
3 by default), which continues the run after its last complete epoch; a killed grid is
resumed by running the same command again, exactly as a local grid. A per-run file lock
on the shared folder makes sure one run is never trained twice at the same time (a task
of a killed grid still running on its worker while the grid is resubmitted): the second
waits, then reads the first's record.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.experiments.grid import Cell, Grid
from pipeline.experiments.runner import read_run, run_id, run_key, run_one

__all__ = ["ClusterExecutor", "connect", "run_task"]

CONNECT_TIMEOUT = "10s"
# torch's global RNG and thread count are per process: one run at a time in a worker process.
_ONE_RUN = threading.Lock()


def run_task(grid_doc: dict, cell_id: str, seed: int, runs_dir: str) -> dict:
    """``run_one`` on a worker: one run per process at a time, one process per run (file lock), record reused."""
    grid = Grid.from_json(grid_doc)
    cell = grid.cell(cell_id)
    if cell is None:
        raise KeyError(f"cell {cell_id!r} is not in the grid")
    rid = run_id(cell, seed)
    with _ONE_RUN, _run_lock(Path(runs_dir) / f".{rid}.lock"):
        done = read_run(Path(runs_dir) / f"{rid}.json", run_key(grid, cell, seed))
        return done if done is not None else run_one(grid_doc, cell_id, seed, runs_dir)


@contextlib.contextmanager
def _run_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # not POSIX: the scheduler's one task per key has to do
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
            # Done (the record is written): a waiter on this file, or one arriving later on a new
            # file, reads the record instead of training, so the folder keeps no lock files.
            with contextlib.suppress(OSError):
                path.unlink()
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def connect(address: str):
    """A ``distributed.Client`` of the scheduler at ``address``.

    Raises:
        UserError: Dask distributed is not installed, or no scheduler answers at ``address``.
    """
    from pipeline.errors import UserError

    try:
        from distributed import Client
    except ImportError:
        raise UserError(
            "--cluster needs Dask distributed, which is not installed, expected it installed: "
            "pip install 'acl-deploy[cluster]' (or 'dask[distributed]')"
        ) from None
    from distributed.comm import get_address_host_port

    try:
        get_address_host_port(address)  # a malformed address leaves a Client that cannot even close
    except ValueError as e:
        raise UserError(f"--cluster {address} is not a scheduler address ({e}), expected tcp://HOST:PORT") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except Exception as e:  # OSError, TimeoutError, ValueError (bad address): all mean "no scheduler there"
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"--cluster {address}: no Dask scheduler answered ({why}), "
            "expected the address of a running scheduler, e.g. tcp://HOST:8786"
        ) from None


def _check_workers(client, out: Path) -> None:
    """Every worker writes ``out``'s nearest existing folder and runs the same code on the same torch.

    Raises:
        UserError: a worker does not see the folder or may not write there (its records would be lost
            to this machine), lacks acl-deploy, or has another torch (results would differ).
    """
    import torch

    from pipeline.errors import UserError

    def worker_facts(folder: str) -> tuple[bool, bool, str | None]:
        # Nested, so pickled by value: it runs on a worker that lacks this package too.
        import importlib.util
        import os

        writable = os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)
        try:
            import torch

            version = torch.__version__
        except ImportError:
            version = None
        return writable, importlib.util.find_spec("pipeline.experiments") is not None, version

    here = out
    while not here.exists() and here != here.parent:
        here = here.parent
    facts = client.run(worker_facts, str(here))
    for worker, (writable, has_package, torch_version) in sorted(facts.items()):
        if not writable:
            raise UserError(
                f"--out {out}: worker {worker} cannot write {here}, "
                "expected --out on a folder every worker and this machine share"
            )
        if not has_package or torch_version != torch.__version__:
            raise UserError(
                f"--cluster: worker {worker} has {'acl-deploy' if has_package else 'no acl-deploy'} "
                f"and torch {torch_version}, expected acl-deploy and torch {torch.__version__} as here"
            )


class ClusterExecutor:
    """Runs ``todo`` as tasks on the cluster; ``runner.run_grid``'s ``executor``."""

    def __init__(self, client, log: Callable[[str], None]):
        self.client = client
        self.log = log

    def __call__(self, doc: dict, todo: list[tuple[Cell, int]], runs_dir: Path, finished: Callable[[dict], None]):
        from distributed import KilledWorker, as_completed
        from distributed.client import FutureCancelledError
        from distributed.comm.core import CommClosedError

        from pipeline.errors import UserError

        grid = Grid.from_json(doc)
        runs = Path(runs_dir).resolve()  # workers have their own working directory
        futures = [
            # Keyed by the run: a resubmitted grid finds a task still known to the scheduler.
            self.client.submit(run_task, doc, c.id, s, str(runs), key=f"acl-run-{run_id(c, s)}-{run_key(grid, c, s)}")
            for c, s in todo
        ]
        try:
            for future in as_completed(futures, loop=self.client.loop):
                try:
                    rec = future.result()
                except KilledWorker as e:
                    raise UserError(
                        f"the cluster gave up on a run ({e}), expected workers that stay up: the finished runs "
                        "are kept, the same command continues the grid"
                    ) from None
                if read_run(runs / f"{run_id(grid.cell(rec['cell']), rec['seed'])}.json", rec["key"]) is None:
                    raise UserError(
                        f"a worker wrote run {rec['cell']} seed {rec['seed']} where this machine cannot read it, "
                        f"expected --out ({runs.parent}) on a folder every worker and this machine share"
                    )
                finished(rec)
        except (FutureCancelledError, CommClosedError) as e:  # the scheduler went away: its futures are gone
            raise UserError(
                f"the connection to the cluster's scheduler was lost ({type(e).__name__}: {e}), expected a scheduler "
                "that stays up: the finished runs are kept, the same command continues the grid"
            ) from None
        except BaseException:
            self.client.cancel(futures)  # queued runs only: a running task ends on its own (its lock guards it)
            raise


@contextlib.contextmanager
def cluster_executor(address: str, out: Path, log: Callable[[str], None]):
    """Connect to ``address``, check ``out`` is shared, yield the executor; closes the connection on the way out."""
    client = connect(address)
    try:
        _check_workers(client, Path(out).resolve())
        workers = client.scheduler_info().get("workers", {})
        threads = sum(w.get("nthreads", 1) for w in workers.values())
        log(f"cluster: {address}, {len(workers)} worker(s), {threads} thread(s)")
        yield ClusterExecutor(client, log)
    finally:
        client.close()
