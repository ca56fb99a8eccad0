"""A folder built once per test run and shared by the pytest-xdist workers: ``built_once``.

A session fixture is per process, so under ``pytest -n 2`` each worker would train,
export or run the job again. ``built_once`` builds the folder in the first worker
that asks, under a file lock in the run's own temporary folder (the one the
workers' ``popen-gw*`` folders live in), and the other workers wait for it and
reuse it: pytest-xdist's "Making session-scoped fixtures execute only once".
Without xdist it is a folder of the session's own temporary folder.

A build that raised leaves no marker, so the next worker starts it again from an
empty folder (and fails the same way, with its own traceback). Users of a shared
folder must not change it: copy it first, as the job tests do.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

__all__ = ["built_once"]


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """``tmp/<name>/``, filled by ``build(folder)`` in one process of this run; the others wait and reuse it."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # this run's folder, shared by its workers only (never an earlier run's)
    folder, marker = root / name, root / f"{name}.built"  # the marker beside it: tests list the folder
    with FileLock(str(root / f"{name}.lock")):
        if not marker.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            marker.touch()
    return folder
