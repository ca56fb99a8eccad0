"""ONNX Runtime latency of ACL models, side by side in one run.

Three questions, each answered as a ratio measured here and now:

1. Does an ACL cost anything at inference? ``static`` ACL file vs the same
   architecture with plain ``nn.Conv2d`` (target: ratio within 1.05).
2. Does the live file (kernels from AKP initializers) run as fast as the static
   one? ONNX Runtime inlines the ``ai.acl`` functions and folds them at session
   load (target: ratio within 1.05).
3. What does live recomputation cost? The live file with AKPs as graph inputs,
   fed every call, recomputes all kernels per call: its extra time per batch size.

Rounds alternate the order of the sessions; each row is the median over rounds of
per-round p50 latencies, and ratios are medians of per-round ratios.

    python benchmarks/bench_onnx_latency.py [--arch lenet] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import export
from deploy.runners import OrtRunner, quiet_polygraphy
from deploy.timing import measure_latency
from pipeline.models import DEFAULT_SPEC, build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="lenet", choices=("lenet", "cnn4"))
    ap.add_argument("--batch-sizes", default="1,8,64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per session, batch and round")
    args = ap.parse_args()
    quiet_polygraphy()
    batches = [int(b) for b in args.batch_sizes.split(",")]
    torch.manual_seed(0)
    plain = build(args.arch, None).eval()
    anann = build(args.arch, DEFAULT_SPEC).eval()
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        shape = (1, 1, 32, 32)
        files = {
            "plain": export.to_onnx(plain, d / "plain.onnx", shape),
            "static": export.to_onnx(anann, d / "static.onnx", shape),
            "live": export.to_onnx(anann, d / "live.onnx", shape, mode="live"),
            "live-akp": export.to_onnx(anann, d / "live-akp.onnx", shape, mode="live", akp_inputs=True),
        }
        akps = {
            f"{n}.{k}": v.detach().numpy()
            for n, layer in __import__("acl").acl_layers(anann)
            for k, v in layer.akps().items()
        }
        runners = {k: OrtRunner(p, name=k) for k, p in files.items()}
        for r in runners.values():
            r.activate()
        rng = np.random.default_rng(0)
        p50: dict[tuple[str, int], list[float]] = {}
        for rnd in range(args.rounds):
            order = list(runners) if rnd % 2 == 0 else list(runners)[::-1]
            for b in batches:
                x = rng.standard_normal((b, 1, 32, 32)).astype(np.float32)
                for name in order:
                    feed = {"input": x, **(akps if name == "live-akp" else {})}
                    s = measure_latency(runners[name], feed, warmup=5, min_iters=50, min_seconds=args.seconds)
                    p50.setdefault((name, b), []).append(s.p50_ms)
        for r in runners.values():
            r.deactivate()

    def ratio(a: str, b: str, batch: int) -> float:
        return statistics.median(x / y for x, y in zip(p50[a, batch], p50[b, batch]))

    print(f"arch {args.arch}, spec {DEFAULT_SPEC}, onnxruntime CPU, {args.rounds} rounds, p50 per call in ms")
    print(
        f"{'batch':>5s} {'plain':>8s} {'static':>8s} {'live':>8s} {'live-akp':>9s}  {'static/plain':>12s} {'live/static':>11s} {'recompute ms':>12s}"
    )
    for b in batches:
        med = {k: statistics.median(p50[k, b]) for k in files}
        print(
            f"{b:5d} {med['plain']:8.4f} {med['static']:8.4f} {med['live']:8.4f} {med['live-akp']:9.4f}  "
            f"{ratio('static', 'plain', b):12.3f} {ratio('live', 'static', b):11.3f} {med['live-akp'] - med['static']:12.4f}"
        )
    print(
        "targets: static/plain <= 1.05, live/static <= 1.05; recompute = live-akp minus static (kernels rebuilt every call)"
    )


if __name__ == "__main__":
    main()
