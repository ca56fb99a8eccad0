"""NumPy implementations of the ``ai.acl`` ops for ``onnx.reference.ReferenceEvaluator``.

Written from the paper's formulas in float64 NumPy, independently of both the
PyTorch generators and the ONNX function bodies, so each can be checked against
it::

    from onnx.reference import ReferenceEvaluator
    from export.reference import OPS
    ReferenceEvaluator(model, new_ops=OPS).run(None, feeds)
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from export.functions import DOMAIN, SCALE_MAX, SCALE_MIN, TF_DELTA

__all__ = ["OPS", "gabor", "log", "lot", "mean", "tgd1st", "tgd2nd"]


def _xy(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(grid, dtype=np.float64)
    return g[0], g[1]


def _col(akps: np.ndarray, i: int) -> np.ndarray:
    return np.asarray(akps, dtype=np.float64)[:, i, None, None]


def _scale(v: np.ndarray) -> np.ndarray:
    return np.clip(np.abs(v), SCALE_MIN, SCALE_MAX)


def _rotate(x, y, theta):
    return x * np.cos(theta) + y * np.sin(theta), -x * np.sin(theta) + y * np.cos(theta)


def _zero_sum(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    r2 = x * x + y * y
    near = (r2 <= r2.min() + 1e-6).astype(np.float64)
    return w - w.sum(axis=(1, 2), keepdims=True) * (near / near.sum())


def gabor(akps, grid):
    x, y = _xy(grid)
    lam, theta, psi, sigma = (_col(akps, i) for i in range(4))
    xr, yr = _rotate(x, y, theta)
    return np.exp(-(xr**2 + yr**2) / (2 * _scale(sigma) ** 2)) * np.cos(2 * np.pi * xr / _scale(lam) + psi)


def log(akps, grid):
    x, y = _xy(grid)
    s = _scale(_col(akps, 0))
    q = (x * x + y * y) / (2 * s * s)
    return -(1 - q) * np.exp(-q) / (np.pi * s**4)


def lot(akps, grid):
    x, y = _xy(grid)
    s = _scale(_col(akps, 0))
    return _zero_sum(np.exp(-(x * x + y * y) / (s * s)), x, y)


def tgd1st(akps, grid):
    x, y = _xy(grid)
    theta, g1, g2 = (_col(akps, i) for i in range(3))
    xr, yr = _rotate(x, y, theta)
    side = np.where(np.abs(xr) > TF_DELTA, np.sign(xr), 0.0)
    return np.exp(-(xr**2) / _scale(g1) ** 2 - yr**2 / _scale(g2) ** 2) * side


def tgd2nd(akps, grid):
    x, y = _xy(grid)
    theta, gamma = _col(akps, 0), _col(akps, 1)
    xr, _ = _rotate(x, y, theta)
    r2 = np.broadcast_to(x * x + y * y, xr.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(r2 == 0, 0.0, np.exp(-r2 / _scale(gamma) ** 2) * np.abs(xr) / r2)
    return _zero_sum(w, x, y)


def mean(count, grid):
    h, w = np.shape(grid)[1:]
    return np.full((int(np.asarray(count).reshape(-1)[0]), h, w), 1 / np.sqrt(h * w))


def _op(name: str, fn):
    def _run(self, *inputs):
        return (fn(*inputs).astype(np.float32),)

    return type(name, (OpRun,), {"op_domain": DOMAIN, "_run": _run, "__doc__": f"{DOMAIN}.{name} in NumPy."})


OPS = [
    _op("Gabor", gabor),
    _op("LoG", log),
    _op("LoT", lot),
    _op("TGD1st", tgd1st),
    _op("TGD2nd", tgd2nd),
    _op("Mean", mean),
]
"""``OpRun`` classes for ``ReferenceEvaluator(..., new_ops=OPS)``."""
