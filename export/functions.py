"""The ``ai.acl`` ONNX domain: kernel generation ops defined as model-local functions.

Each op generates a bank of kernels of one family from its AKPs, with the
formulas and conventions of ``acl.families``, and is defined by an ONNX function
whose body uses only standard ONNX ops (opset ``OPSET``). A file that uses them
therefore runs in any runtime that inlines model-local functions (ONNX Runtime,
``onnx.reference.ReferenceEvaluator``, TensorRT >= 9's ONNX parser) with no extra
library. The functions are written once, below, in onnxscript: readable Python
that compiles to the ``FunctionProto`` and also runs eagerly on NumPy arrays.
Op names come from the family registry; neither this module nor the registry
imports PyTorch.

Ops (domain ``ai.acl``, version 1). Every op takes the sampling grid of the
kernel size as its last input: ``grid`` is ``float32[2, h, w]``, ``grid[0] = x``
(row offset ``i - (h+1)/2``) and ``grid[1] = y`` (column offset), eq. 3.

=========  ========================  ============================================
op         inputs                    output
=========  ========================  ============================================
Gabor      akps[n, 4], grid          kernels[n, h, w]; AKPs lambda, theta, psi, sigma
LoG        akps[n, 1], grid          kernels[n, h, w]; AKP sigma
LoT        akps[n, 1], grid          kernels[n, h, w]; AKP sigma
TGD1st     akps[n, 3], grid          kernels[n, h, w]; AKPs theta, gamma1, gamma2
TGD2nd     akps[n, 2], grid          kernels[n, h, w]; AKPs theta, gamma
MeanKernel count: int64[1], grid     kernels[count, h, w] = 1 / sqrt(h w)
=========  ========================  ============================================

>>> import numpy as np
>>> from export.passes import grid_array
>>> k = LoG(np.array([[1.0]], np.float32), grid_array(3, 3))  # eager, on NumPy
>>> k.shape, round(float(k[0, 1, 1]), 4)
((1, 3, 3), -0.3183)
"""

from __future__ import annotations

import functools
import math

import onnx
import onnx.inliner
from onnx import helper
from onnxscript import opset18 as op
from onnxscript import script
from onnxscript.values import Opset

from acl.families import FAMILIES, SCALE_MAX, SCALE_MIN, TF_DELTA, TF_RAMP

__all__ = [
    "DOMAIN",
    "DOMAIN_VERSION",
    "LEGACY_OPS",
    "OPSET",
    "OP_OF_SYMBOL",
    "all_function_protos",
    "function_proto",
]

DOMAIN = "ai.acl"
DOMAIN_VERSION = 1
OPSET = 18

OP_OF_SYMBOL = {f.symbol: f.op for f in FAMILIES.values() if f.op is not None}
"""Spec symbol -> op name in the ``ai.acl`` domain."""

LEGACY_OPS = {"Mean": "MeanKernel"}
"""Op names of files written before issue 21 -> today's. ``Mean`` was renamed because
it is also an ONNX built-in op: TensorRT's ONNX parser picks importers by op type
alone, built-ins first, and would import ``ai.acl.Mean`` as the element-wise mean of
its inputs. Old files still run in ONNX Runtime (their functions are in the file);
``export.legacy.renamed`` upgrades them."""

_ACL = Opset(DOMAIN, DOMAIN_VERSION)
_STEPS = Opset("ai.acl.steps", 1)  # shared steps, inlined into every op's body by ``function_proto``
TWO_PI = 2 * math.pi
PI = math.pi


@script(_STEPS, default_opset=op)
def Scale(s):
    """Effective scale ``clip(|s|, SCALE_MIN, SCALE_MAX)``."""
    return op.Clip(op.Abs(s), SCALE_MIN, SCALE_MAX)


@script(_STEPS, default_opset=op)
def Rotate(theta, grid):
    """``x'``, ``y'`` of eqs. 13-14 for per-kernel angles ``theta[n, 1, 1]``."""
    x = grid[0]
    y = grid[1]
    c = op.Cos(theta)
    s = op.Sin(theta)
    return x * c + y * s, y * c - x * s


@script(_STEPS, default_opset=op)
def Radius2(grid):
    """``x^2 + y^2`` of every sample."""
    return op.ReduceSum(grid * grid, [0], keepdims=0)


@script(_STEPS, default_opset=op)
def ZeroSum(w, grid):
    """``W - sum(W) I(x = y = 0)`` (eqs. 19, 23), spread over the samples nearest the centre."""
    r2 = Radius2(grid)
    near = op.CastLike(r2 <= op.ReduceMin(r2, keepdims=0) + 1e-6, r2)
    return w - op.ReduceSum(w, [1, 2], keepdims=1) * (near / op.ReduceSum(near, keepdims=0))


@script(_ACL, default_opset=op)
def Gabor(akps, grid):
    lam, theta, psi, sigma = op.Split(op.Unsqueeze(akps, [2]), num_outputs=4, axis=1)
    xr, _yr = Rotate(theta, grid)
    s = Scale(sigma)
    kernels = op.Exp(Radius2(grid) / (-2.0 * s * s)) * op.Cos(xr * TWO_PI / Scale(lam) + psi)
    return kernels


@script(_ACL, default_opset=op)
def LoG(akps, grid):
    s = Scale(op.Unsqueeze(akps, [2]))
    q = Radius2(grid) / (2.0 * s * s)
    kernels = (q - 1.0) * op.Exp(-q) / (PI * s * s * s * s)
    return kernels


@script(_ACL, default_opset=op)
def LoT(akps, grid):
    s = Scale(op.Unsqueeze(akps, [2]))
    kernels = ZeroSum(op.Exp(-Radius2(grid) / (s * s)), grid)
    return kernels


@script(_ACL, default_opset=op)
def TGD1st(akps, grid):
    theta, gamma1, gamma2 = op.Split(op.Unsqueeze(akps, [2]), num_outputs=3, axis=1)
    xr, yr = Rotate(theta, grid)
    side = op.Sign(xr) * op.Clip((op.Abs(xr) - TF_DELTA) / TF_RAMP, 0.0, 1.0)  # acl.families.tgd1st
    a = xr / Scale(gamma1)
    b = yr / Scale(gamma2)
    kernels = op.Exp(-(a * a) - b * b) * side
    return kernels


@script(_ACL, default_opset=op)
def TGD2nd(akps, grid):
    theta, gamma = op.Split(op.Unsqueeze(akps, [2]), num_outputs=2, axis=1)
    xr, _yr = Rotate(theta, grid)
    g = Scale(gamma)
    r2 = Radius2(grid)
    at_centre = r2 == 0.0
    inv_r2 = op.Where(at_centre, 0.0, op.Reciprocal(op.Where(at_centre, 1.0, r2)))
    kernels = ZeroSum(op.Exp(-r2 / (g * g)) * op.Abs(xr) * inv_r2, grid)
    return kernels


@script(_ACL, default_opset=op)
def MeanKernel(count, grid):
    ones = op.ConstantOfShape(op.Concat(count, op.Shape(grid, start=1), axis=0), value=[1.0])
    kernels = ones / op.Sqrt(op.CastLike(op.Size(grid[0]), ones))
    return kernels


_FUNCTIONS = {f.name: f for f in (Gabor, LoG, LoT, TGD1st, TGD2nd, MeanKernel)}
_SHARED = (Scale, Rotate, Radius2, ZeroSum)


@functools.lru_cache(maxsize=None)
def function_proto(op_name: str) -> onnx.FunctionProto:
    """The ``FunctionProto`` defining op ``op_name`` of the ``ai.acl`` domain (shared steps inlined).

    Examples:
        >>> f = function_proto("LoG")
        >>> (f.domain, f.name, list(f.input), list(f.output), [(o.domain, o.version) for o in f.opset_import])
        ('ai.acl', 'LoG', ['akps', 'grid'], ['kernels'], [('', 18)])
    """
    if op_name not in _FUNCTIONS:
        raise ValueError(f"unknown {DOMAIN} op {op_name!r}; expected one of {', '.join(OP_OF_SYMBOL.values())}")
    shared = [f.to_function_proto() for f in _SHARED]
    holder = helper.make_model(
        helper.make_graph([], "holder", [], []),
        functions=[_FUNCTIONS[op_name].to_function_proto(), *shared],
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    f = onnx.inliner.inline_selected_functions(holder, [(s.domain, s.name) for s in shared]).functions[0]
    del f.opset_import[:]
    f.opset_import.append(helper.make_opsetid("", OPSET))
    return f


def all_function_protos() -> list[onnx.FunctionProto]:
    """Every op of the domain, in ``OP_OF_SYMBOL`` order."""
    return [function_proto(name) for name in OP_OF_SYMBOL.values()]
