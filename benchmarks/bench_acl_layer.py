"""AnalyticConv2d vs nn.Conv2d: one training step (forward, backward, SGD update), same shapes.

The SGD update matters for fairness, not for its own cost: oneDNN caches the
reordered weight of a convolution whose weight tensor did not change, so a loop of
forward+backward on a frozen nn.Conv2d is about 1 ms faster per step here than any
real training step, where the weight changes every step.

Both layers run side by side in one process, step after step, alternating which
goes first. Every step is timed on its own. Shared machines add bursts of
interference that can double a step's time, so three estimates are printed:

* ``min``: fastest step of each layer (the undisturbed cost, as ``timeit`` advises);
* ``pair``: median over adjacent (Conv2d, ACL) pairs of the per-pair ratio, which
  cancels slow drift;
* ``median``: ratio of the two medians.

Target (issue #2): ACL / Conv2d <= 1.10. Kernel generation (the whole mosaic of the
layer) is timed on its own, forward and forward+backward, hot. The last row is the
3x3 layer with an all-Plain spec: no analytic family at all, so its ratio is the
fixed cost of generating a weight through the layer's autograd function (the floor
under any spec at that size).

    python benchmarks/bench_acl_layer.py [--steps 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from acl import AnalyticConv2d

EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
CASES = [
    # (name, Ci, Co, k, input shape, spec)
    ("3->64 7x7, 16x3x64x64", 3, 64, 7, (16, 3, 64, 64), EXP3),
    ("64->64 3x3, 16x64x32x32", 64, 64, 3, (16, 64, 32, 32), EXP3),
    ("  same, all Plain (floor)", 64, 64, 3, (16, 64, 32, 32), "P1.0"),
]


def _step(layer: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> float:
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    layer(x).square().mean().backward()
    opt.step()
    return time.perf_counter() - t0


def _mean_time(fn, iters: int = 200) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="timed steps per layer and case")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, spec {EXP3} (floor row: P1.0), {args.steps} steps per layer"
    )
    head = f"{'case':26s} {'Conv2d ms':>9s} {'ACL ms':>8s}  {'min':>6s} {'pair':>6s} {'median':>6s}"
    print(head + f" {'gen fwd ms':>10s} {'gen f+b ms':>10s}")
    for name, ci, co, k, shape, spec in CASES:
        conv = nn.Conv2d(ci, co, k, padding=k // 2)
        acl = AnalyticConv2d.from_conv(conv, spec)
        x = torch.randn(shape)
        oc = torch.optim.SGD(conv.parameters(), lr=1e-4)
        oa = torch.optim.SGD(acl.parameters(), lr=1e-4)
        for _ in range(5):
            _step(conv, oc, x), _step(acl, oa, x)
        tc, ta = [], []
        for i in range(args.steps):
            if i % 2:
                tc.append(_step(conv, oc, x))
                ta.append(_step(acl, oa, x))
            else:
                ta.append(_step(acl, oa, x))
                tc.append(_step(conv, oc, x))
        pair = statistics.median(a / c for a, c in zip(ta, tc))
        with torch.no_grad():
            gen = _mean_time(acl.kernels)
        genb = _mean_time(lambda acl=acl: acl.kernels().sum().backward())
        print(
            f"{name:26s} {min(tc) * 1e3:9.2f} {min(ta) * 1e3:8.2f}  {min(ta) / min(tc):6.3f} {pair:6.3f} "
            f"{statistics.median(ta) / statistics.median(tc):6.3f} {gen * 1e3:10.3f} {genb * 1e3:10.3f}"
        )
    print("Conv2d ms / ACL ms: fastest step. min, pair, median: ACL / Conv2d ratios (see docstring).")


if __name__ == "__main__":
    main()
