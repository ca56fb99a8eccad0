"""Shared fixtures: a small AnaNN with every kernel family, exported once per test run.

Also the grouping of tests for pytest-xdist (``tests.xdist_groups``): ``make test``
runs two workers with ``--dist loadgroup``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import acl
from export.sessions import THREADS_ENV, default_threads
from pipeline.archs.calibrate import trained_looking_bn  # noqa: F401  (re-exported for tests)
from tests.built_once import built_once
from tests.xdist_groups import group_of

ALL_FAMILIES = "G0.2Lg0.1Lt0.1Tf0.15Ts0.1M0.05P0.3"


def small_anann(seed: int = 0) -> nn.Module:
    """Two ACLs (odd and even/rectangular kernels), every family, groups and padding."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.Conv2d(8, 8, (4, 3), padding=1, groups=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    return acl.convert(net, ALL_FAMILIES, layers="all").eval()


def pytest_configure(config) -> None:
    # Two xdist workers on two cores: a second intra-op thread per worker only spins
    # against the other worker (CPU time, no speed). Jobs in the tests pass --threads 1 too;
    # ONNX Runtime sessions and runners opened without a thread count read ACL_ORT_THREADS.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
        os.environ.setdefault(THREADS_ENV, "1")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        group = group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def anann() -> nn.Module:
    return small_anann()


@pytest.fixture(scope="session")
def exported(anann, tmp_path_factory) -> dict:
    import export

    def build(d: Path) -> None:
        shape = (1, 1, 12, 12)
        export.to_onnx(anann, d / "m.static.onnx", shape, mode="static")
        export.to_onnx(anann, d / "m.live.onnx", shape, mode="live")
        export.to_onnx(anann, d / "m.live-akp.onnx", shape, mode="live", akp_inputs=True)

    # small_anann() is deterministic, so another worker's files are this worker's model
    d = built_once(tmp_path_factory, "onnx", build)
    return {kind: d / f"m.{kind}.onnx" for kind in ("static", "live", "live-akp")} | {"dir": d}


@pytest.fixture()
def fresh_input() -> np.ndarray:
    """Inputs never used for export (which traces zeros of batch 2)."""
    return np.random.default_rng(123).standard_normal((5, 1, 12, 12)).astype(np.float32)


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def ort_out(path, x: np.ndarray, extra: dict | None = None) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = default_threads() or 0
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x, **(extra or {})})[0]


def digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path (runs have subfolders)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
