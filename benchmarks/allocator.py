"""glibc's allocator for the training benchmarks: keep large blocks instead of mapping them afresh.

By default glibc serves every block above its (adaptive) mmap threshold with a new
mapping and unmaps it at ``free``, so each training step page-faults its large tensors
again. In this project's VM that cost the layer benchmark 1 min 45 s of kernel (``sys``)
time in a 3 min run (1.3 s with the setting), up to 3x on its large cases, and spread the
training benchmark's rounds 0.99-1.27 on an idle machine (docs/benchmarks.md, issue 24,
fourth round). Both sides of a comparison run with the same setting; ``--glibc-defaults``
turns it off.
"""

from __future__ import annotations

import os
import sys

KEEP_LARGE_BLOCKS = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


def describe(env: dict[str, str]) -> str:
    """One line for a benchmark's header: the setting in force."""
    shown = " ".join(f"{k}={env[k]}" for k in KEEP_LARGE_BLOCKS if k in env)
    return "allocator: " + (shown or "glibc defaults")


def restart_keeping_large_blocks() -> None:
    """Re-run this script with ``KEEP_LARGE_BLOCKS`` set (glibc reads them only at start); no-op once set."""
    if all(os.environ.get(k) == v for k, v in KEEP_LARGE_BLOCKS.items()):
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **KEEP_LARGE_BLOCKS})
