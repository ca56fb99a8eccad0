"""The ``ai.acl`` ONNX domain: kernel generation ops defined as model-local functions.

Each op generates a bank of kernels of one family from its AKPs, exactly as
``acl.kernels`` does, and is defined by an ONNX function whose body uses only
standard ONNX ops (opset ``OPSET``). A file that uses them therefore runs in any
runtime that inlines model-local functions (ONNX Runtime, the ONNX reference
evaluator, TensorRT >= 9's ONNX parser) with no extra library.

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
Mean       count: int64[1], grid     kernels[count, h, w] = 1 / sqrt(h w)
=========  ========================  ============================================

Conventions (identical to ``acl.kernels``): scales enter as
``clip(|s|, 1e-3, 1e4)``; TGD1st is ``sign(x')`` and zero for ``|x'| <= 1e-4``;
LoT and TGD2nd subtract ``sum(W)`` spread over the samples nearest the centre.
"""

from __future__ import annotations

import functools

import onnx
import onnx.parser

# The same numbers as acl.kernels (a test holds them equal); repeated here so that
# reading, checking and baking ONNX files never imports PyTorch.
SCALE_MIN = 1e-3
SCALE_MAX = 1e4
TF_DELTA = 1e-4

DOMAIN = "ai.acl"
DOMAIN_VERSION = 1
OPSET = 18

# Spec symbol -> op name in the ai.acl domain.
OP_OF_SYMBOL = {"G": "Gabor", "Lg": "LoG", "Lt": "LoT", "Tf": "TGD1st", "Ts": "TGD2nd", "M": "Mean"}

_HEADER = f'<domain: "{DOMAIN}", opset_import: ["" : {OPSET}]>'

# Shared body fragments. Each op line is one ONNX node (the text format has no
# nested calls).
_GRID = """
    i0 = Constant <value = int64 {0}> ()
    i1 = Constant <value = int64 {1}> ()
    x = Gather <axis = 0> (grid, i0)
    y = Gather <axis = 0> (grid, i1)
    xx = Mul (x, x)
    yy = Mul (y, y)
    r2 = Add (xx, yy)
    lo = Constant <value = float {%r}> ()
    hi = Constant <value = float {%r}> ()
    ax2 = Constant <value = int64[1] {2}> ()
    a3 = Unsqueeze (akps, ax2)
""" % (SCALE_MIN, SCALE_MAX)

_ROTATE = """
    cos_t = Cos (theta)
    sin_t = Sin (theta)
    x_cos = Mul (x, cos_t)
    y_sin = Mul (y, sin_t)
    xr = Add (x_cos, y_sin)
    y_cos = Mul (y, cos_t)
    x_sin = Mul (x, sin_t)
    yr = Sub (y_cos, x_sin)
"""

# Zero-sum centre correction: out = w - sum(w) * centre, centre = equal weights on
# the samples nearest the kernel centre.
_CENTRE = """
    rmin = ReduceMin <keepdims = 0> (r2)
    eps6 = Constant <value = float {1e-6}> ()
    rthr = Add (rmin, eps6)
    near_b = LessOrEqual (r2, rthr)
    near = Cast <to = 1> (near_b)
    n_near = ReduceSum <keepdims = 0> (near)
    centre = Div (near, n_near)
    ax12 = Constant <value = int64[2] {1, 2}> ()
    total = ReduceSum <keepdims = 1> (w, ax12)
    corr = Mul (total, centre)
    kernels = Sub (w, corr)
"""


def _scale(name: str) -> str:
    return f"""
    {name}_abs = Abs ({name})
    {name}_e = Clip ({name}_abs, lo, hi)
"""


_BODIES = {
    "Gabor": _GRID
    + """
    lam, theta, psi, sigma = Split <axis = 1, num_outputs = 4> (a3)
"""
    + _scale("lam")
    + _scale("sigma")
    + _ROTATE
    + """
    two = Constant <value = float {2.0}> ()
    s2 = Mul (sigma_e, sigma_e)
    two_s2 = Mul (two, s2)
    q = Div (r2, two_s2)
    nq = Neg (q)
    env = Exp (nq)
    two_pi = Constant <value = float {6.283185307179586}> ()
    xr_l = Div (xr, lam_e)
    ph0 = Mul (two_pi, xr_l)
    phase = Add (ph0, psi)
    cos_p = Cos (phase)
    kernels = Mul (env, cos_p)
""",
    "LoG": _GRID
    + """
    sigma = Identity (a3)
"""
    + _scale("sigma")
    + """
    two = Constant <value = float {2.0}> ()
    one = Constant <value = float {1.0}> ()
    pi = Constant <value = float {3.141592653589793}> ()
    s2 = Mul (sigma_e, sigma_e)
    two_s2 = Mul (two, s2)
    q = Div (r2, two_s2)
    nq = Neg (q)
    e = Exp (nq)
    one_m_q = Sub (one, q)
    num = Mul (one_m_q, e)
    s4 = Mul (s2, s2)
    den = Mul (pi, s4)
    pos = Div (num, den)
    kernels = Neg (pos)
""",
    "LoT": _GRID
    + """
    sigma = Identity (a3)
"""
    + _scale("sigma")
    + """
    s2 = Mul (sigma_e, sigma_e)
    t = Div (r2, s2)
    nt = Neg (t)
    w = Exp (nt)
"""
    + _CENTRE,
    "TGD1st": _GRID
    + """
    theta, g1, g2 = Split <axis = 1, num_outputs = 3> (a3)
"""
    + _scale("g1")
    + _scale("g2")
    + _ROTATE
    + f"""
    xr2 = Mul (xr, xr)
    yr2 = Mul (yr, yr)
    g1s = Mul (g1_e, g1_e)
    g2s = Mul (g2_e, g2_e)
    ta = Div (xr2, g1s)
    tb = Div (yr2, g2s)
    tab = Add (ta, tb)
    ntab = Neg (tab)
    env = Exp (ntab)
    sgn = Sign (xr)
    axr = Abs (xr)
    delta = Constant <value = float {{{TF_DELTA!r}}}> ()
    off_b = Greater (axr, delta)
    off = Cast <to = 1> (off_b)
    side = Mul (sgn, off)
    kernels = Mul (env, side)
""",
    "TGD2nd": _GRID
    + """
    theta, gamma = Split <axis = 1, num_outputs = 2> (a3)
"""
    + _scale("gamma")
    + _ROTATE
    + """
    g2 = Mul (gamma_e, gamma_e)
    t = Div (r2, g2)
    nt = Neg (t)
    e = Exp (nt)
    zero_f = Constant <value = float {0.0}> ()
    one_f = Constant <value = float {1.0}> ()
    at0 = Equal (r2, zero_f)
    safe = Where (at0, one_f, r2)
    inv = Div (one_f, safe)
    inv_r2 = Where (at0, zero_f, inv)
    axr = Abs (xr)
    e_ax = Mul (e, axr)
    w = Mul (e_ax, inv_r2)
"""
    + _CENTRE,
}

_SIGNATURES = {op: "(akps, grid) => (kernels)" for op in _BODIES}

_MEAN = f"""{_HEADER}
Mean (count, grid) => (kernels) {{
    i0 = Constant <value = int64 {{0}}> ()
    x = Gather <axis = 0> (grid, i0)
    hw_shape = Shape <start = 1> (grid)
    full = Concat <axis = 0> (count, hw_shape)
    ones = ConstantOfShape <value = float[1] {{1.0}}> (full)
    hw = Size (x)
    hw_f = Cast <to = 1> (hw)
    root = Sqrt (hw_f)
    kernels = Div (ones, root)
}}
"""


@functools.lru_cache(maxsize=None)
def function_proto(op: str) -> onnx.FunctionProto:
    """The ``FunctionProto`` defining op ``op`` of the ``ai.acl`` domain.

    Examples:
        >>> f = function_proto("LoG")
        >>> (f.domain, f.name, list(f.input), list(f.output))
        ('ai.acl', 'LoG', ['akps', 'grid'], ['kernels'])
    """
    if op == "Mean":
        return onnx.parser.parse_function(_MEAN)
    if op not in _BODIES:
        raise ValueError(f"unknown {DOMAIN} op {op!r}; expected one of {', '.join(OP_OF_SYMBOL.values())}")
    return onnx.parser.parse_function(f"{_HEADER}\n{op} {_SIGNATURES[op]} {{{_BODIES[op]}}}\n")


def all_function_protos() -> list[onnx.FunctionProto]:
    """Every op of the domain, in ``OP_OF_SYMBOL`` order."""
    return [function_proto(op) for op in OP_OF_SYMBOL.values()]
