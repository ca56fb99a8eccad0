"""Fixtures for the Triton tests: a small Conv-BN-residual ACL net exported once, its repository.

The serving tests (marker ``serve``) need nvidia-pytriton, which pins numpy<2:
they run in the serve environment (``make test-serve``) and skip elsewhere with
that reason. Config checks need Triton's ``model_config.proto`` from
``tritonclient``; without it they skip with the reason too.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

import export
from tests.deploy.triton.nets import small_resnet

IMAGE = (3, 16, 16)


def needs_tritonclient() -> None:
    from deploy.triton.config import model_config_pb2

    try:
        model_config_pb2()
    except ImportError as e:
        pytest.skip(f"Triton's model_config.proto is not importable here ({e}); `make test-serve` runs this")


def has_pytriton() -> bool:
    return importlib.util.find_spec("pytriton") is not None


@pytest.fixture(scope="session")
def small_model():
    return small_resnet(seed=0, image=IMAGE)


@pytest.fixture(scope="session")
def small_files(small_model, tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("small-onnx")
    return export.export_files(
        small_model,
        {"static": d / "m.static.onnx", "live": d / "m.live.onnx", "live-akp": d / "m.live-akp.onnx"},
        (1, *IMAGE),
    )


@pytest.fixture()
def images() -> np.ndarray:
    """Not the export example (zeros of batch 2)."""
    return np.random.default_rng(7).standard_normal((6, *IMAGE)).astype(np.float32)


def torch_out(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()
