"""Fused CPU kernels of the families (``mosaic.c``), compiled on first use and cached.

``acl.kernels`` runs a CPU float32/float64 mosaic here when this library loads,
and through NumPy otherwise; both compute the same closed forms and the tests
hold them to each other and to the torch formulas. One C call per segment writes
the kernels and their Jacobian, so a training step pays a handful of calls
instead of dozens of small array operations.

The library is built with the system C compiler (``$CC``, default ``cc``) into
``$ACL_CACHE_DIR`` (default ``$XDG_CACHE_HOME/acl-deploy`` or
``~/.cache/acl-deploy``), under a name hashed from the source, the flags and the
compiler's version, written to a temporary file and renamed into place so that
concurrent processes (DDP ranks) never load a half-written file. A cache directory
that another user could write to is refused (the library is loaded into this
process). Without a compiler, or with ``ACL_NATIVE=0``, ``load()`` returns
``None`` and ``status()`` says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NonFiniteAKPs", "load", "status"]

SOURCE = Path(__file__).with_name("mosaic.c")
# -ffast-math lets the sample loops call glibc's vectorized exp/cos (libmvec). It is
# given to the compile step only: linking a shared library with it (GCC < 13) would
# set flush-to-zero for the whole process on load.
COMPILE_FLAGS = ("-O3", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c11", "-D_GNU_SOURCE")
LINK_FLAGS = ("-shared",)
_FUNCTIONS = {"G": "gabor", "Lg": "log", "Lt": "lot", "Tf": "tgd1st", "Ts": "tgd2nd"}

_state: dict[str, Any] = {"lib": None, "reason": "not loaded yet", "tried": False}


def _cache_dir() -> Path:
    root = os.environ.get("ACL_CACHE_DIR")
    if root:
        return Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "acl-deploy"


def _run(cmd: Sequence[str]) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def _check_private(cache: Path) -> None:
    """Refuse a cache directory others could write to: its library is loaded into this process."""
    if not hasattr(os, "getuid"):
        return
    st = cache.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise RuntimeError(
            f"cache directory {cache} is not private (owner uid {st.st_uid}, mode {oct(st.st_mode & 0o777)}); "
            "set ACL_CACHE_DIR to a directory only you can write"
        )


def _build() -> Path:
    cc = shlex.split(os.environ.get("CC", "cc"))
    version = _run([*cc, "--version"]).splitlines()[0]
    recipe = repr((COMPILE_FLAGS, LINK_FLAGS, version, platform.machine())).encode()
    key = hashlib.sha256(SOURCE.read_bytes() + recipe).hexdigest()[:16]
    cache = _cache_dir()
    cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_private(cache)
    target = cache / f"mosaic-{key}.so"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp:
        obj, lib = Path(tmp) / "mosaic.o", Path(tmp) / "mosaic.so"
        _run([*cc, *COMPILE_FLAGS, "-c", str(SOURCE), "-o", str(obj)])
        _run([*cc, *LINK_FLAGS, str(obj), "-o", str(lib), "-lm"])
        os.replace(lib, target)
    return target


def _declare(lib: ctypes.CDLL) -> None:
    ptr, size = ctypes.c_void_p, ctypes.c_ssize_t
    for suffix in ("f32", "f64"):
        for name in _FUNCTIONS.values():
            f = getattr(lib, f"acl_{name}_{suffix}")
            f.argtypes = [ptr, size, ptr, ptr, ptr, ptr, ptr, size, ptr, ptr]
            f.restype = ctypes.c_int
        f = getattr(lib, f"acl_contract_{suffix}")
        f.argtypes = [ptr, ptr, size, size, size, ptr]
        f.restype = ctypes.c_int


def load() -> ctypes.CDLL | None:
    """The compiled kernels, building them on first use; ``None`` if unavailable (see ``status()``)."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("ACL_NATIVE", "1") == "0":
            _state["reason"] = "disabled by ACL_NATIVE=0"
        else:
            try:
                lib = ctypes.CDLL(str(_build()))
                _declare(lib)
                _state["lib"], _state["reason"] = lib, "loaded"
            except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                _state["reason"] = f"not built: {e}"
    return _state["lib"]


def status() -> str:
    """``"loaded"`` or why the NumPy formulas run instead."""
    load()
    return _state["reason"]


class Grid:
    """Sample coordinates of one kernel size as contiguous ``[hw]`` arrays of one dtype."""

    def __init__(self, x: np.ndarray, y: np.ndarray, inv_r2: np.ndarray, centre: np.ndarray) -> None:
        self.hw = x.shape[0]
        self.arrays = [np.ascontiguousarray(v) for v in (x, y, x * x + y * y, inv_r2, centre)]
        self.pointers = [v.ctypes.data for v in self.arrays]


@functools.lru_cache(maxsize=64)
def _function(lib: ctypes.CDLL, symbol: str, dtype: np.dtype) -> Any:
    suffix = "f32" if dtype == np.float32 else "f64"
    return getattr(lib, f"acl_{_FUNCTIONS[symbol]}_{suffix}" if symbol != "contract" else f"acl_contract_{suffix}")


class NonFiniteAKPs(ValueError):
    """A bank holds a NaN or infinite AKP: the compiled kernels assume finite values."""


def _check(status: int) -> None:
    if status == 1:
        raise NonFiniteAKPs("an AKP is NaN or infinite")
    if status != 0:
        raise MemoryError("acl.native: could not allocate scratch memory for the kernels")


def forward(
    lib: ctypes.CDLL, symbol: str, akps: np.ndarray, grid: Grid, out: np.ndarray, jac: bool
) -> np.ndarray | None:
    """Kernels of one analytic segment into ``out`` ``[n, hw]`` (C-contiguous); its Jacobian ``[p, hw, n]`` if ``jac``."""
    a = np.ascontiguousarray(akps)
    n, p = a.shape
    J = np.empty((p, grid.hw, n), dtype=a.dtype) if jac else None
    _check(
        _function(lib, symbol, a.dtype)(
            a.ctypes.data, n, *grid.pointers, grid.hw, out.ctypes.data, None if J is None else J.ctypes.data
        )
    )
    return J


def contract(lib: ctypes.CDLL, J: np.ndarray, gw: np.ndarray, grad: np.ndarray) -> None:
    """``grad[k, j] = sum_i J[j, i, k] gw[k, i]`` into the C-contiguous ``grad`` ``[n, p]``."""
    gw = np.ascontiguousarray(gw)
    p, hw, n = J.shape
    _check(_function(lib, "contract", J.dtype)(J.ctypes.data, gw.ctypes.data, n, p, hw, grad.ctypes.data))
