"""The default job, run once per test run and read by the CLI, serving and bad-input tests.

One run of ``python -m pipeline.export`` (LeNet on the digits, every backend asked
for, so the unavailable ones are reported; 4 epochs; a Triton repository beside
it) used to be three module fixtures, each training its own LeNet. Its tests read
it; a test that needs to change it copies it first (``shutil.copytree``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.built_once import built_once

SHORT_JOB = [
    "--batch-sizes",
    "1",
    "--latency-seconds",
    "0.01",
    "--no-progress",
    "--backends",
    "ort-cpu",
    "--threads",
    "1",
]
"""A job that only has to get through: one batch size, ONNX Runtime only, short latency runs, one thread."""

JOB_FAST = ["--epochs", "4", "--batch-sizes", "1,4", "--latency-seconds", "0.02", "--no-progress", "--threads", "1"]
"""The default job, shortened: 4 epochs (the default 15 reach ~97 %), two batch sizes, short latency runs."""


@pytest.fixture(scope="session")
def lenet_run(tmp_path_factory) -> dict[str, Path]:
    """``{"out": the run's folder, "repo": its Triton repository}``; nothing else beside ``out`` in its parent."""
    from pipeline.export import main

    def build(d: Path) -> None:
        code = main(["--out", str(d / "run" / "run"), "--triton-repo", str(d / "triton"), *JOB_FAST])
        assert code == 0, f"the default job exited with {code}"

    d = built_once(tmp_path_factory, "lenet-run", build)
    return {"out": d / "run" / "run", "repo": d / "triton"}
