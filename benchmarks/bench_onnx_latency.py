"""ONNX Runtime latency of ACL models, side by side in one run.

Four ratios, each measured here and now on the same inputs:

1. ``static/plain``: does an ACL cost anything at inference? The static ACL file
   vs the same architecture with plain ``nn.Conv2d`` (target: within 1.05).
2. ``live/static``: does the live file (kernels from AKP initializers) run as
   fast as the static one? ONNX Runtime inlines the ``ai.acl`` functions, folds
   them and any BatchNorm after them at session load (target: within 1.05).
3. ``ort/torch``: the static file in ONNX Runtime vs the source model in eager
   PyTorch (eval, inference mode), same thread count.
4. ``akp/w-in``: the live file fed AKPs at every call vs the static graph fed its
   *kernels* at every call (``export.export_graph(weights_as_inputs=True)``).
   Both make every Conv weight a run-time tensor, which ONNX Runtime cannot
   pre-pack, so this ratio isolates the cost of generating the kernels; the
   ``w-in/static`` column shows the cost of run-time weights alone. Since
   ``export.conv_split`` the live-akp file convolves each ACL's plain kernels in
   a Conv of their own, which ONNX Runtime does pre-pack: the ratio is then the
   generation cost minus that gain (see docs/export.md, "Generation cost").

Rounds alternate the order of the sessions; each row is the median over rounds
of per-round p50 latencies, and ratios are medians of per-round ratios.

    python benchmarks/bench_onnx_latency.py                      # AnaNN-LeNet, 32x32, batches 1,8,64
    python benchmarks/bench_onnx_latency.py --arch resnet18      # AnaNN-ResNet-18, 3x224x224, batches 1,32
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

import acl
import export
from deploy.runners import OrtRunner, TorchRunner, quiet_polygraphy
from deploy.timing import measure_latency
from export import passes
from pipeline.archs import DEFAULT_SPEC, build
from pipeline.archs.calibrate import trained_looking_bn

# arch -> (input shape without batch, default batch sizes, classes)
PRESETS = {
    "lenet": ((1, 32, 32), "1,8,64", 10),
    "cnn4": ((1, 32, 32), "1,8,64", 10),
    "resnet18": ((3, 224, 224), "1,32", 1000),
    "resnet18_cifar": ((3, 32, 32), "1,32", 10),
    "mobilenet_v2": ((3, 224, 224), "1,32", 1000),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="lenet", choices=sorted(PRESETS))
    ap.add_argument("--layers", default="all", help="'all' (AnaNN-X), 'first' (ACL-X) or module names")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated (default: the arch's preset)")
    ap.add_argument("--rounds", type=int, default=None, help="default 7, or 3 for 224px inputs")
    ap.add_argument("--seconds", type=float, default=0.3, help="timed seconds per session, batch and round")
    ap.add_argument("--threads", type=int, default=None, help="threads for ONNX Runtime and PyTorch (default: all)")
    args = ap.parse_args()
    quiet_polygraphy()
    image, default_batches, classes = PRESETS[args.arch]
    batches = [int(b) for b in (args.batch_sizes or default_batches).split(",")]
    big = image[1] >= 128
    rounds = args.rounds or (3 if big else 7)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    plain = build(args.arch, None, in_channels=image[0], num_classes=classes).eval()
    trained_looking_bn(plain, image)
    anann = acl.convert(
        plain, DEFAULT_SPEC, layers=args.layers if args.layers in ("all", "first") else args.layers.split(",")
    )
    # Measured after conversion: analytic kernels change every activation's scale.
    trained_looking_bn(anann, image)
    shape = (1, *image)
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        files = {
            "plain": export.to_onnx(plain, d / "plain.onnx", shape),
            "static": export.to_onnx(anann, d / "static.onnx", shape),
            "live": export.to_onnx(anann, d / "live.onnx", shape, mode="live"),
            "live-akp": export.to_onnx(anann, d / "live-akp.onnx", shape, mode="live", akp_inputs=True),
            "w-in": passes.save(export.export_graph(anann, shape, weights_as_inputs=True), d / "w-in.onnx"),
        }
        with torch.no_grad():
            extra = {
                "live-akp": {
                    f"{n}.{k}": v.detach().numpy() for n, ly in acl.acl_layers(anann) for k, v in ly.akps().items()
                },
                "w-in": {f"{n}.weight": ly.weight.detach().numpy() for n, ly in acl.acl_layers(anann)},
            }
        runners = {k: OrtRunner(p, name=k, threads=args.threads) for k, p in files.items()}
        runners["torch"] = TorchRunner(anann, {"input": (np.float32, [None, *image])}, ["logits"], name="torch")
        for r in runners.values():
            r.activate()
        rng = np.random.default_rng(0)
        p50: dict[tuple[str, int], list[float]] = {}
        for rnd in range(rounds):
            order = list(runners) if rnd % 2 == 0 else list(runners)[::-1]
            for b in batches:
                x = rng.standard_normal((b, *image)).astype(np.float32)
                for name in order:
                    feed = {"input": x, **extra.get(name, {})}
                    iters = 5 if big and b > 1 else (20 if big else 50)
                    s = measure_latency(runners[name], feed, warmup=2, min_iters=iters, min_seconds=args.seconds)
                    p50.setdefault((name, b), []).append(s.p50_ms)
        for r in runners.values():
            r.deactivate()

    def ratio(a: str, b: str, batch: int) -> float:
        return statistics.median(x / y for x, y in zip(p50[a, batch], p50[b, batch]))

    n_acl = len(acl.acl_layers(anann))
    print(
        f"arch {args.arch} ({n_acl} ACLs, layers={args.layers}), input {'x'.join(map(str, image))}, spec {DEFAULT_SPEC}, "
        f"onnxruntime CPU, torch threads {torch.get_num_threads()}, {rounds} rounds; p50 per call in ms"
    )
    cols = ["plain", "static", "live", "live-akp", "w-in", "torch"]
    head = "".join(f"{c:>10s}" for c in cols)
    print(
        f"{'batch':>5s}{head}  {'static/plain':>12s} {'live/static':>11s} {'ort/torch':>9s} {'akp/w-in':>8s} {'w-in/static':>11s}"
    )
    for b in batches:
        med = {k: statistics.median(p50[k, b]) for k in cols}
        vals = "".join(f"{med[c]:10.3f}" for c in cols)
        print(
            f"{b:5d}{vals}  {ratio('static', 'plain', b):12.3f} {ratio('live', 'static', b):11.3f} "
            f"{ratio('static', 'torch', b):9.3f} {ratio('live-akp', 'w-in', b):8.3f} {ratio('w-in', 'static', b):11.3f}"
        )
    print("targets: static/plain <= 1.05, live/static <= 1.05; akp/w-in = cost of generating kernels per call")


if __name__ == "__main__":
    main()
