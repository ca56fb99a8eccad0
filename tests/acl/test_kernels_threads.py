"""A small bank is generated on the calling thread (issue 24), except Gabor's phase.

PyTorch runs ``exp``, ``cos``, ``sin`` and its other VML unary ops on every
intra-op thread from 2048 values on, and a BLAS product may use them at any size.
On a loaded machine each such call waited milliseconds for a descheduled thread
(``benchmarks/bench_acl_layer.py``'s 64->64 3x3 case: generation 23 ms instead of
0.5 ms). Element-wise ops stay on the calling thread below 32768 values.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from acl import AnalyticConv2d

# ATen's unary ops with a grain of 2048 values (UnaryOpsKernel.cpp, IMPLEMENT_FLOAT_KERNEL)
VML_PARALLEL = set("acos asin atan cos erf exp expm1 log log1p log2 sin sqrt tan tanh".split())
PRODUCTS = {"mm", "addmm", "bmm", "baddbmm", "matmul"}


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        self.seen.append((func.overloadpacket.__name__, 0 if first is None else first.numel()))
        return func(*args, **(kwargs or {}))


def test_small_mosaic_runs_no_threaded_op_but_gabors_phase():
    torch.manual_seed(0)
    layer = AnalyticConv2d(64, 64, 3, padding=1, spec="G0.15625Lg0.078125Lt0.078125Tf0.1875Ts0.1P0.4")
    with _Ops() as ops:
        layer.kernels().square().sum().backward()
    names = {name for name, _ in ops.seen}
    assert not names & PRODUCTS, names & PRODUCTS
    assert "exp" not in names  # exp2: one thread, half the time
    threaded = sorted((name, n) for name, n in ops.seen if name in VML_PARALLEL and n >= 2048)
    gabor = 9 * dict(layer.spec.segments)["G"]
    # left: cos(phase) and its backward's sin over the Gabor bank (640 kernels here)
    assert threaded == [("cos", gabor), ("sin", gabor)]
    assert all(a.grad is not None and a.grad.abs().sum() > 0 for a in layer.akps().values())
