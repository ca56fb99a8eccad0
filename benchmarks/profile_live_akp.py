"""Where a live-akp call's time goes: ONNX Runtime's profile, by op type, against weights-as-inputs.

The live-akp file generates every ACL kernel from fed AKPs at every call; the
weights-as-inputs graph is the same network fed ready kernels. Both sessions run
profiled; per op type the script prints nodes and milliseconds per call in each,
and for the generation's op types its cost per MB written (a least-squares fit of
node time on output size: the per-node fixed cost and the cost per MB). The
last lines set the generation's profiled time against what the target ratio
leaves (``--target``, 1.3), and what the trigonometry alone costs.

Profiling adds a few microseconds to every node: absolute times are above the
unprofiled ones (``bench_onnx_latency.py`` measures those); the split is what
this is for.

    python benchmarks/profile_live_akp.py --arch resnet18        # AnaNN-ResNet-18, 3x224x224, batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from bench_onnx_latency import PRESETS  # benchmarks/ is on sys.path when a benchmark runs as a script

import acl
import export
from export import passes
from export.sessions import open_session
from pipeline.archs import DEFAULT_SPEC, build
from pipeline.archs.calibrate import trained_looking_bn

TRIG = ("Cos", "Sin")


def models(arch: str, folder: Path) -> tuple[dict[str, Path], dict[str, dict[str, np.ndarray]], tuple]:
    """The live-akp and weights-as-inputs files of AnaNN-``arch`` and what each is fed besides the image."""
    image, _batches, classes = PRESETS[arch]
    torch.manual_seed(0)
    plain = build(arch, None, in_channels=image[0], num_classes=classes).eval()
    trained_looking_bn(plain, image)
    anann = acl.convert(plain, DEFAULT_SPEC, layers="all")
    trained_looking_bn(anann, image)
    shape = (1, *image)
    files = {
        "live-akp": export.to_onnx(anann, folder / "live-akp.onnx", shape, mode="live", akp_inputs=True),
        "w-in": passes.save(export.export_graph(anann, shape, weights_as_inputs=True), folder / "w-in.onnx"),
    }
    with torch.no_grad():
        layers = acl.acl_layers(anann)
        feeds = {
            "live-akp": {f"{n}.{k}": v.detach().numpy() for n, ly in layers for k, v in ly.akps().items()},
            "w-in": {f"{n}.weight": ly.weight.detach().numpy() for n, ly in layers},
        }
    return files, feeds, image


def profile(path: Path, feed: dict, runs: int, threads: int | None, folder: Path) -> tuple[list[dict], float]:
    """Node events of ``runs`` profiled calls, and the unprofiled median ms of a call."""
    plain = open_session(path, threads=threads)
    for _ in range(3):
        plain.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        plain.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    session = open_session(path, threads=threads, enable_profiling=True, profile_file_prefix=str(folder / path.stem))
    for _ in range(runs + 3):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    return nodes[-len(nodes) * runs // (runs + 3) :], statistics.median(times)


def by_op(nodes: list[dict], runs: int) -> dict[str, dict[str, float]]:
    """Per op type: nodes and ms per call, MB written per call, fixed us per node and us per MB."""
    groups = defaultdict(list)
    for e in nodes:
        groups[e["args"]["op_name"]].append((int(e["args"].get("output_size", 0)) / 1e6, e["dur"]))
    table = {}
    for op_type, rows in groups.items():
        mb, us = np.array(rows).T
        fit = np.linalg.lstsq(np.c_[np.ones_like(mb), mb], us, rcond=None)[0] if np.ptp(mb) > 0 else (us.mean(), 0.0)
        table[op_type] = {"nodes": len(rows) / runs, "ms": us.sum() / runs / 1e3, "mb": mb.sum() / runs}
        table[op_type].update(fixed_us=float(fit[0]), us_per_mb=float(fit[1]))
    return table


def report(live: dict, win: dict, ms: dict[str, float], target: float) -> None:
    print(
        f"{'op':<20s}{'live-akp nodes':>15s}{'ms':>8s}{'w-in nodes':>11s}{'ms':>8s}{'extra ms':>9s}{'MB':>7s}"
        f"{'fixed us':>9s}{'us/MB':>7s}"
    )
    extra = {k: live.get(k, {}).get("ms", 0.0) - win.get(k, {}).get("ms", 0.0) for k in set(live) | set(win)}
    for op_type in sorted(extra, key=lambda k: -abs(extra[k])):
        a, b = live.get(op_type, {}), win.get(op_type, {})
        print(
            f"{op_type:<20s}{a.get('nodes', 0):15.0f}{a.get('ms', 0):8.2f}{b.get('nodes', 0):11.0f}{b.get('ms', 0):8.2f}"
            f"{extra[op_type]:9.2f}{a.get('mb', 0):7.1f}{a.get('fixed_us', 0):9.1f}{a.get('us_per_mb', 0):7.0f}"
        )
    generation = sum(extra.values())
    trig = sum(live.get(k, {}).get("ms", 0.0) for k in TRIG)
    print(
        f"\nunprofiled per call: live-akp {ms['live-akp']:.2f} ms, w-in {ms['w-in']:.2f} ms, ratio "
        f"{ms['live-akp'] / ms['w-in']:.3f}"
    )
    print(f"generation (profiled, live-akp minus w-in): {generation:.2f} ms; {', '.join(TRIG)} alone {trig:.2f} ms")
    print(f"a ratio of {target} leaves {(target - 1) * ms['w-in']:.2f} ms for generation (unprofiled)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18", choices=sorted(PRESETS))
    ap.add_argument("--runs", type=int, default=10, help="profiled (and timed) calls per session")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    ap.add_argument("--target", type=float, default=1.3, help="live-akp / w-in ratio to set the generation against")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        files, feeds, image = models(args.arch, folder)
        x = np.random.default_rng(1).standard_normal((1, *image)).astype(np.float32)
        tables, ms = {}, {}
        for name, path in files.items():
            nodes, ms[name] = profile(path, {"input": x, **feeds[name]}, args.runs, args.threads, folder)
            tables[name] = by_op(nodes, args.runs)
    print(
        f"arch {args.arch}, every conv an ACL ({DEFAULT_SPEC}), input 1x{'x'.join(map(str, image))}, "
        f"onnxruntime CPU, {args.runs} profiled calls each; per call"
    )
    report(tables["live-akp"], tables["w-in"], ms, args.target)


if __name__ == "__main__":
    main()
