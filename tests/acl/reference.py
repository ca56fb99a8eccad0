"""Scalar, loop-per-sample reference of the paper's kernel formulas (eqs. 2-4, 11-24).

Written straight from the equations with the ``math`` module, independent of the
vectorized implementation; shared conventions (effective scale, Tf's sign reading,
centre rule for even sizes) are the documented ones of ``acl.families``.
"""

from __future__ import annotations

import math

SCALE_MIN, SCALE_MAX, DELTA, RAMP = 1e-3, 1e4, 1e-4, 1e-2


def _s(v: float) -> float:
    return min(max(abs(v), SCALE_MIN), SCALE_MAX)


def _grid(h: int, w: int):
    for i in range(1, h + 1):
        for j in range(1, w + 1):
            yield i - 1, j - 1, i - (h + 1) / 2, j - (w + 1) / 2  # eq. 3


def _rot(x: float, y: float, theta: float) -> tuple[float, float]:
    return x * math.cos(theta) + y * math.sin(theta), -x * math.sin(theta) + y * math.cos(theta)


def _centre_correct(k: list[list[float]], h: int, w: int) -> list[list[float]]:
    total = sum(map(sum, k))
    r2 = {(i, j): x * x + y * y for i, j, x, y in _grid(h, w)}
    rmin = min(r2.values())
    nearest = [ij for ij, v in r2.items() if v == rmin]
    for i, j in nearest:
        k[i][j] -= total / len(nearest)
    return k


def gabor(lam, theta, psi, sigma, h, w):
    k = [[0.0] * w for _ in range(h)]
    for i, j, x, y in _grid(h, w):
        xr, yr = _rot(x, y, theta)
        k[i][j] = math.exp(-(xr**2 + yr**2) / (2 * _s(sigma) ** 2)) * math.cos(2 * math.pi * xr / _s(lam) + psi)
    return k


def log(sigma, h, w):
    s = _s(sigma)
    k = [[0.0] * w for _ in range(h)]
    for i, j, x, y in _grid(h, w):
        q = (x * x + y * y) / (2 * s * s)
        k[i][j] = -1 / (math.pi * s**4) * (1 - q) * math.exp(-q)
    return k


def lot(sigma, h, w):
    k = [[0.0] * w for _ in range(h)]
    for i, j, x, y in _grid(h, w):
        k[i][j] = math.exp(-(x * x + y * y) / _s(sigma) ** 2)
    return _centre_correct(k, h, w)


def tgd1st(theta, g1, g2, h, w):
    k = [[0.0] * w for _ in range(h)]
    for i, j, x, y in _grid(h, w):
        xr, yr = _rot(x, y, theta)
        side = math.copysign(max(0.0, min(1.0, (abs(xr) - DELTA) / RAMP)), xr)  # eq. 16's step, continuous
        k[i][j] = math.exp(-(xr**2) / _s(g1) ** 2 - yr**2 / _s(g2) ** 2) * side
    return k


def tgd2nd(theta, gamma, h, w):
    k = [[0.0] * w for _ in range(h)]
    for i, j, x, y in _grid(h, w):
        xr, yr = _rot(x, y, theta)
        r2 = xr**2 + yr**2
        k[i][j] = 0.0 if r2 == 0 else math.exp(-r2 / _s(gamma) ** 2) * abs(xr / r2)
    return _centre_correct(k, h, w)


def mean(h, w):
    return [[1 / math.sqrt(h * w)] * w for _ in range(h)]


REFERENCE = {"G": gabor, "Lg": log, "Lt": lot, "Tf": tgd1st, "Ts": tgd2nd}
