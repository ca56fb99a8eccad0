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
TF_SLOPE = 1 / TF_RAMP
TF_EDGE = TF_DELTA / TF_RAMP
QUARTER_TURN = ((0.0, -1.0), (1.0, 0.0))  # [c; s] -> [-s; c]


@script(_STEPS, default_opset=op)
def Scale(s):
    """Effective scale ``clip(|s|, SCALE_MIN, SCALE_MAX)``."""
    return op.Clip(op.Abs(s), SCALE_MIN, SCALE_MAX)


@script(_STEPS, default_opset=op)
def Columns(akps):
    """``akps[n, p]`` as ``p`` rows ``[1, n]``: per-kernel values stay contiguous, so their maths is cheap."""
    return op.Transpose(akps, perm=[1, 0])


@script(_STEPS, default_opset=op)
def Samples(grid):
    """``x``, ``y``, ``x^2 + y^2`` and ones as rows ``[1, hw]`` (constants: folded at session load)."""
    x = op.Reshape(grid[0], [1, -1])
    y = op.Reshape(grid[1], [1, -1])
    return x, y, x * x + y * y, x * 0.0 + 1.0


@script(_STEPS, default_opset=op)
def Outer(coefficients, features):
    """``features[k, hw]^T @ coefficients[k, n]``: every per-kernel broadcast as one product, ``[hw, n]``.

    Kernels are computed sample-major (``[hw, n]``) and turned kernel-major once at the
    end (``BankOf``): ONNX Runtime's broadcasting of ``[n, 1]`` against ``[1, hw]``
    loops over spans of ``hw`` (9) values and was measured 15-40x slower than a flat
    op or this product, which is fastest with the long axis last.
    """
    return op.MatMul(op.Transpose(features, perm=[1, 0]), coefficients)


@script(_STEPS, default_opset=op)
def CosSin(theta):
    """``[cos theta; sin theta]``, ``[2, n]`` (``Sin`` itself: ``cos(theta - pi/2)`` moved TGD1st's ramp by 1e-5)."""
    return op.Concat(op.Cos(theta), op.Sin(theta), axis=0)


@script(_STEPS, default_opset=op)
def ZeroSumMatrix(grid):
    """``Z`` with ``Z W = W - sum(W) I(x = y = 0)`` per column of ``W[hw, n]`` (eqs. 19, 23).

    The correction is spread over the samples nearest the centre (see ``acl.families``).
    """
    _x, _y, r2, ones = Samples(grid)
    near = op.CastLike(r2 <= op.ReduceMin(r2, keepdims=0) + 1e-6, r2)
    centre = near / op.ReduceSum(near, keepdims=0)
    square = op.MatMul(op.Transpose(ones, perm=[1, 0]), ones)
    return op.EyeLike(square) - op.MatMul(op.Transpose(centre, perm=[1, 0]), ones)


@script(_STEPS, default_opset=op)
def HalfSamples(grid):
    """``x``, ``y`` of the first ``hw // 2`` samples (rows ``[1, hw // 2]``) and ``mirror[hw, hw // 2]``.

    The grid is symmetric about its centre: its last ``hw // 2`` samples (row-major)
    are the first ones negated. ``mirror @ v`` spreads values ``v[hw // 2, n]`` of the
    first half to the whole grid as an odd function: ``v(-r) = -v(r)``, 0 at a centre
    sample. Built by comparing coordinates (a constant, folded at session load).
    """
    x, y, _r2, _ones = Samples(grid)
    half = op.Reshape(op.Size(x) / 2, [1])
    xh = op.Slice(x, [0], half, [1])
    yh = op.Slice(y, [0], half, [1])
    xc = op.Transpose(x, perm=[1, 0])
    yc = op.Transpose(y, perm=[1, 0])
    same = op.CastLike(op.And(xc == xh, yc == yh), x)
    opposite = op.CastLike(op.And(xc == op.Neg(xh), yc == op.Neg(yh)), x)
    return xh, yh, same - opposite


@script(_STEPS, default_opset=op)
def QuarterSamples(grid):
    """``x^2 + y^2`` and ones of the quarter grid's samples (rows ``[1, q]``) and ``spread[hw, q]``.

    The grid is symmetric in ``x`` and in ``y``: a radial kernel (LoG, LoT) is known from
    its samples with ``x <= 0`` and ``y <= 0`` (``q``: 4 of 9 at 3x3, 16 of 49 at 7x7).
    ``spread @ v`` copies values ``v[q, n]`` to every sample with the same ``|x|`` and
    ``|y|``. Built by comparing coordinates (a constant, folded at session load).
    """
    x, y, _r2, _ones = Samples(grid)
    ends = op.Div(op.Shape(grid, start=1) + 1, op.Constant(value_ints=[2]))
    quarter = op.Slice(grid, op.Constant(value_ints=[0, 0]), ends, op.Constant(value_ints=[1, 2]))
    xq = op.Reshape(op.Abs(quarter[0]), [1, -1])
    yq = op.Reshape(op.Abs(quarter[1]), [1, -1])
    xc = op.Abs(op.Transpose(x, perm=[1, 0]))
    yc = op.Abs(op.Transpose(y, perm=[1, 0]))
    spread = op.CastLike(op.And(xc == xq, yc == yq), x)
    return xq * xq + yq * yq, xq * 0.0 + 1.0, spread


@script(_STEPS, default_opset=op)
def BankOf(matrix, flat, akps, grid):
    """``matrix[hw, k] @ flat[k, n]`` as ``kernels[n, h, w]``: the product written kernel-major.

    As ``flat^T @ matrix^T``: ONNX Runtime fuses the transpose into the product (one
    ``FusedMatMul``). A ``Transpose`` node of the bank instead was rewritten by its basic
    optimizations, with the ``Reshape`` and the layer's ``Concat`` after it, into 3-d and
    4-d transposes, 1-2 ms each on ResNet-18's layer4 banks against 0.1 ms for a 2-d one
    (docs/export.md, "Sixth round").
    """
    shape = op.Concat(op.Shape(akps, end=1), op.Shape(grid, start=1), axis=0)
    return op.Reshape(op.MatMul(op.Transpose(flat, perm=[1, 0]), op.Transpose(matrix, perm=[1, 0])), shape)


@script(_STEPS, default_opset=op)
def Bank(flat, akps, grid):
    """``flat[hw, n]`` as ``kernels[n, h, w]``: ``BankOf`` the identity (folded at session load)."""
    _x, _y, _r2, ones = Samples(grid)
    eye = op.EyeLike(op.MatMul(op.Transpose(ones, perm=[1, 0]), ones))
    return BankOf(eye, flat, akps, grid)


@script(_ACL, default_opset=op)
def Gabor(akps, grid):
    lam, theta, psi, sigma = op.Split(Columns(akps), num_outputs=4, axis=0)
    x, y, r2, ones = Samples(grid)
    s = Scale(sigma)
    envelope = op.Exp(Outer(op.Reciprocal(s * s) * -0.5, r2))
    # 2 pi x' / lambda + psi = x (2 pi cos / lambda) + y (2 pi sin / lambda) + psi
    phase = Outer(
        op.Concat(CosSin(theta) * (op.Reciprocal(Scale(lam)) * TWO_PI), psi, axis=0), op.Concat(x, y, ones, axis=0)
    )
    kernels = Bank(envelope * op.Cos(phase), akps, grid)
    return kernels


@script(_ACL, default_opset=op)
def LoG(akps, grid):
    # radial: computed on the quarter grid's samples and spread to the rest by the bank's product
    r2, ones, spread = QuarterSamples(grid)
    s = Scale(Columns(akps))
    a = op.Reciprocal(s * s) * 0.5
    peak = op.Reciprocal(s * s * s * s * PI)
    # (q - 1) exp(-q) peak with q = a r2: the linear factor as one GEMM over [r2; 1]
    linear = Outer(op.Concat(peak * a, -peak, axis=0), op.Concat(r2, ones, axis=0))
    kernels = BankOf(spread, linear * op.Exp(Outer(-a, r2)), akps, grid)
    return kernels


@script(_ACL, default_opset=op)
def LoT(akps, grid):
    r2, _ones, spread = QuarterSamples(grid)  # radial, as LoG; the zero-sum step folded into the spread
    s = Scale(Columns(akps))
    quarter = op.Exp(Outer(op.Neg(op.Reciprocal(s * s)), r2))
    kernels = BankOf(op.MatMul(ZeroSumMatrix(grid), spread), quarter, akps, grid)
    return kernels


@script(_ACL, default_opset=op)
def TGD1st(akps, grid):
    theta, gamma1, gamma2 = op.Split(Columns(akps), num_outputs=3, axis=0)
    # An odd function of the sample (k(-r) = -k(r), 0 at the centre): computed on the first
    # half of the samples and mirrored by one product, so every full-size op runs on 4 of 9.
    xh, yh, mirror = HalfSamples(grid)
    zero = xh * 0.0
    cs = CosSin(theta)
    across = cs * op.Reciprocal(Scale(gamma1))
    along = op.MatMul(op.CastLike(QUARTER_TURN, cs), cs) * op.Reciprocal(Scale(gamma2))
    # [x' / gamma1; y' / gamma2] in one GEMM over the block features [[x, y, 0, 0]; [0, 0, x, y]]
    blocks = op.Concat(
        op.Concat(xh, zero, axis=1),
        op.Concat(yh, zero, axis=1),
        op.Concat(zero, xh, axis=1),
        op.Concat(zero, yh, axis=1),
        axis=0,
    )
    ab = Outer(op.Concat(across, along, axis=0), blocks)
    # -(a^2 + b^2): the squares' two halves summed by one GEMM with [-I, -I] (each sum as Neg(a a) - b b rounds)
    eye = op.EyeLike(op.MatMul(op.Transpose(xh, perm=[1, 0]), xh))
    exponent = op.MatMul(op.Concat(op.Neg(eye), op.Neg(eye), axis=1), ab * ab)
    # sign(x') clip((|x'| - TF_DELTA) / TF_RAMP, 0, 1) of acl.families.tgd1st, as u - clip(u, -e, e) clipped to 1
    # (not Shrink, which is the same in one op: ONNX Runtime's was measured 8x slower than these two)
    u = Outer(cs * TF_SLOPE, op.Concat(xh, yh, axis=0))
    side = op.Clip(u - op.Clip(u, -TF_EDGE, TF_EDGE), -1.0, 1.0)
    kernels = BankOf(mirror, op.Exp(exponent) * side, akps, grid)
    return kernels


@script(_ACL, default_opset=op)
def TGD2nd(akps, grid):
    theta, gamma = op.Split(Columns(akps), num_outputs=2, axis=0)
    x, y, r2, _ones = Samples(grid)
    g = Scale(gamma)
    at_centre = r2 == 0.0
    inv_r2 = op.Where(at_centre, 0.0, op.Reciprocal(op.Where(at_centre, 1.0, r2)))
    # |x'| / r2 = |x c + y s| / r2: one GEMM over [x / r2; y / r2]
    ratio = op.Abs(Outer(CosSin(theta), op.Concat(x * inv_r2, y * inv_r2, axis=0)))
    w = op.Exp(Outer(op.Neg(op.Reciprocal(g * g)), r2)) * ratio
    kernels = BankOf(ZeroSumMatrix(grid), w, akps, grid)
    return kernels


@script(_ACL, default_opset=op)
def MeanKernel(count, grid):
    ones = op.ConstantOfShape(op.Concat(count, op.Shape(grid, start=1), axis=0), value=[1.0])
    kernels = ones / op.Sqrt(op.CastLike(op.Size(grid[0]), ones))
    return kernels


_FUNCTIONS = {f.name: f for f in (Gabor, LoG, LoT, TGD1st, TGD2nd, MeanKernel)}
_SHARED = (Scale, Columns, Samples, Outer, CosSin, ZeroSumMatrix, HalfSamples, QuarterSamples, BankOf, Bank)


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
