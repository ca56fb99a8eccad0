"""What an AKP hot-swap costs against a fresh session load, by way of swapping, side by side in one run.

    python benchmarks/bench_hotswap.py                 # AnaNN-ResNet-18, 3x224x224, 7 rounds
    python benchmarks/bench_hotswap.py --arch resnet18_cifar --image 3,32,32 --rounds 5

The model is ``pipeline.archs``' network with every Conv an ACL of
``archs.DEFAULT_SPEC`` (``create`` + ``convert``), with trained-looking BatchNorm,
exported static + live. Each way below ends with a ready ONNX Runtime session
(``export.sessions.open_session``, same options) whose ACL kernels are new ones
(generated once from moved AKPs); its output is checked against the same graph
fed those kernels as inputs before anything is timed:

- ``fresh load``: a session on the static file (what a restart costs; the file
  already holds its kernels). Every ratio is against this.
- ``byte patch``: the way ``deploy.hotswap`` swapped before: the serialized
  static file copied, the kernels' ``raw_data`` bytes overwritten in place, a
  session from those bytes. (The offsets are found here by searching the stored
  kernel bytes, outside the timing, as the removed parser found them once.)
- ``external init.``: the way it swaps now: the graph serialized once with its
  kernels as external data, a session from it with the kernels as external
  initializers.
- ``re-serialise``: the kernels set in the ``ModelProto``, serialized, a session
  from the bytes.
- ``swap_akps``: ``HotSwapSession.swap_akps`` end to end (kernels from AKPs,
  external-initializer session, probe check), alternating two AKP sets.

Rounds run the ways in rotating order; medians per way, ratios of medians. The
load average is printed with the figures: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _model(arch: str, image: tuple[int, ...]):
    import torch

    from pipeline.archs import DEFAULT_SPEC, convert, create
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(0)
    net = create(arch, in_channels=image[0], num_classes=1000 if image[1] >= 128 else 10)
    return trained_looking_bn(convert(net, DEFAULT_SPEC, layers="all"), image)


def _byte_patcher(static_bytes: bytes, stored: dict[str, np.ndarray]):
    """The old rewrite: copy the serialized file, overwrite each kernel's raw bytes where they lie."""
    offsets = {}
    for name, value in stored.items():
        raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
        at = static_bytes.find(raw)
        if at < 0 or static_bytes.find(raw, at + 1) >= 0:
            raise RuntimeError(f"the raw bytes of {name} are not found exactly once in the file")
        offsets[name] = (at, len(raw))

    def patch(kernels: dict[str, np.ndarray]) -> bytes:
        out = bytearray(static_bytes)
        for name, (at, length) in offsets.items():
            out[at : at + length] = np.ascontiguousarray(kernels[name], dtype="<f4").tobytes()
        return bytes(out)

    return patch


def _ways(files: dict, kernels: dict[str, np.ndarray], threads: int | None) -> dict:
    """``{way: () -> session}``, each ending with a session on the new kernels (fresh load: the file's)."""
    import onnx

    from deploy.hotswap import _kernels_external, _set_initializers
    from export.sessions import open_session

    static = onnx.load(str(files["static"]))
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in static.graph.initializer if t.name in kernels}
    patch = _byte_patcher(static.SerializeToString(), stored)
    graph = _kernels_external(static, list(kernels))

    def reserialise():
        model = onnx.ModelProto()
        model.CopyFrom(static)
        _set_initializers(model, kernels)
        return open_session(model.SerializeToString(), threads=threads)

    return {
        "fresh load": lambda: open_session(files["static"], threads=threads),
        "byte patch": lambda: open_session(patch(kernels), threads=threads),
        "external init.": lambda: open_session(graph, external_initializers=kernels, threads=threads),
        "re-serialise": reserialise,
    }


def _check(ways: dict, files: dict, kernels: dict[str, np.ndarray], image: tuple[int, ...]) -> dict[str, float]:
    """Max abs difference of each way's session from the graph fed the new kernels (fresh load: expected large)."""
    import onnx

    from deploy.hotswap import _weights_as_inputs
    from export.sessions import open_session

    reference = open_session(_weights_as_inputs(onnx.load(str(files["static"])), list(kernels)))
    x = np.random.default_rng(5).standard_normal((2, *image)).astype(np.float32)
    want = reference.run(None, {"input": x, **kernels})[0]
    return {way: float(np.abs(make().run(None, {"input": x})[0] - want).max()) for way, make in ways.items()}


def _rounds(ways: dict, hs, akp_sets: list, rounds: int) -> tuple[dict[str, list[float]], list]:
    times: dict[str, list[float]] = {w: [] for w in [*ways, "swap_akps"]}
    swaps = []
    names = list(times)
    for r in range(rounds):
        for way in names[r % len(names) :] + names[: r % len(names)]:
            if way == "swap_akps":
                swaps.append(hs.swap_akps(akp_sets[r % 2]))
                times[way].append(swaps[-1].total_s)
                continue
            t0 = time.perf_counter()
            session = ways[way]()
            times[way].append(time.perf_counter() - t0)
            del session
    return times, swaps


def _report(times: dict[str, list[float]], diffs: dict[str, float], swaps: list) -> dict:
    fresh = statistics.median(times["fresh load"])
    rows = {}
    print("| way | median ms | min ms | / fresh load | max abs vs new kernels |")
    print("|---|---|---|---|---|")
    for way, ts in times.items():
        med = statistics.median(ts)
        rows[way] = {"median_s": med, "min_s": min(ts), "over_fresh": med / fresh, "max_abs_vs_new": diffs.get(way)}
        diff = "" if way not in diffs else f"{diffs[way]:.2g}" + (" (old kernels)" if way == "fresh load" else "")
        print(f"| {way} | {med * 1e3:.0f} | {min(ts) * 1e3:.0f} | {med / fresh:.2f} | {diff} |")
    parts = {k: statistics.median(getattr(s, k) for s in swaps) for k in ("kernels_s", "session_s", "verify_s")}
    rows["swap_akps"]["parts_median_s"] = parts
    print(
        "\nswap_akps, medians: kernels from AKPs {:.0f} ms, new session {:.0f} ms, probe check {:.0f} ms".format(
            *(v * 1e3 for v in parts.values())
        )
    )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image", default="3,224,224", help="C,H,W")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: its own)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import onnxruntime

    import export
    from deploy.hotswap import HotSwapSession
    from export.verify import perturbed_akps

    image = tuple(int(v) for v in args.image.split(","))
    load_before = os.getloadavg()
    model = _model(args.arch, image)
    with tempfile.TemporaryDirectory(prefix="bench-hotswap-") as work:
        names = {"static": Path(work) / "m.static.onnx", "live": Path(work) / "m.live.onnx"}
        t0 = time.perf_counter()
        files = export.export_files(model, names, (1, *image))
        size = files["static"].stat().st_size / 1e6
        print(f"AnaNN-{args.arch} {image}: static file {size:.1f} MB, exported in {time.perf_counter() - t0:.0f} s")
        hs = HotSwapSession(files["static"], files["live"], threads=args.threads)
        _, moved = perturbed_akps(model, seed=1)
        kernels = hs.generator(moved)
        ways = _ways(files, kernels, args.threads)
        diffs = _check(ways, files, kernels, image)
        times, swaps = _rounds(ways, hs, [moved, hs.akps], args.rounds)
    load_after = os.getloadavg()
    print(
        f"\nONNX Runtime {onnxruntime.__version__}, {os.cpu_count()} logical cores, threads {args.threads or 'default'}, "
        f"{args.rounds} rounds; load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min)\n"
    )
    rows = _report(times, diffs, swaps)
    out = {"arch": args.arch, "image": list(image), "static_mb": size, "rounds": args.rounds, "threads": args.threads}
    out.update(ways=rows, loadavg_before=load_before, loadavg_after=load_after, onnxruntime=onnxruntime.__version__)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
