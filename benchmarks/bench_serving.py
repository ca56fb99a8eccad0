"""Serving figures: Triton server start and load test, AKP hot-swap against a fresh load, OpenVINO vs ONNX Runtime.

    python benchmarks/bench_serving.py [--arch resnet18_cifar] [--json out.json]

Run it in the serve environment (``make serve-env``; ``.venv-serve/bin/python
benchmarks/bench_serving.py``) for the Triton and OpenVINO parts; elsewhere they
are skipped with the reason and the hot-swap part still runs.

1. ONNX Runtime p50 of the static file per batch size, and the batching plan
   ``deploy.triton.batching_plan`` derives from it.
2. Hot-swap (``deploy.hotswap.HotSwapSession``): median time of a verified swap
   (kernels, new session with the kernels as external initializers, probe check)
   against the median time of a fresh session on the static file; then the
   swapped session's p50 against a fresh static session's, interleaved (ratio ~1:
   static speed). ``benchmarks/bench_hotswap.py`` compares the ways to swap.
3. Triton (python-backend model, ONNX Runtime inside): server start to ready, and
   ``deploy.triton.load_test`` over gRPC at 1, 4 and 16 clients (throughput, p50,
   p99, the server's mean batch).
4. OpenVINO on the inlined live file (``export.inline``) against ONNX Runtime on
   the static file, p50 per batch size.

Everything runs on the same cores (2 on CI-class machines), clients included.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _p50(fn, *, warmup: int = 5, iters: int = 60, seconds: float = 3.0) -> float:
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < iters and time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _session(path_or_bytes, threads: int | None = None):
    from export.sessions import open_session

    return open_session(path_or_bytes, threads=threads)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18_cifar")
    parser.add_argument("--image", default="3,32,32", help="C,H,W")
    parser.add_argument("--swaps", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300, help="per load level")
    parser.add_argument("--seconds", type=float, default=10.0, help="per load level, at most")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    import export
    from deploy.hotswap import HotSwapSession
    from deploy.triton import batching_plan
    from export.verify import perturbed_akps
    from pipeline.archs import build

    image = tuple(int(v) for v in args.image.split(","))
    torch.manual_seed(0)
    model = build(args.arch, layers="all", in_channels=image[0]).eval()
    out: dict = {"arch": args.arch, "image": list(image)}
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    t0 = time.perf_counter()
    files = export.export_files(model, {"static": work / "m.static.onnx", "live": work / "m.live.onnx"}, (1, *image))
    print(f"{args.arch}: exported static + live in {time.perf_counter() - t0:.1f} s ({work})")

    # 1. latency curve and batching plan
    sess = _session(files["static"])
    curve = {}
    for b in (1, 4, 8, 16):
        x = np.random.default_rng(b).standard_normal((b, *image)).astype(np.float32)
        curve[b] = _p50(lambda x=x: sess.run(None, {"input": x}))
    plan = batching_plan(curve)
    out["curve_p50_ms"], out["batching"] = curve, plan.to_dict()
    print("\nONNX Runtime static, p50 per batch:", ", ".join(f"{b}: {ms:.2f} ms" for b, ms in curve.items()))
    print(f"batching plan: max_batch_size {plan.max_batch_size}, preferred {plan.preferred}")

    # 2. hot-swap
    fresh = []
    for _ in range(args.swaps):
        t = time.perf_counter()
        _session(files["static"])
        fresh.append(time.perf_counter() - t)
    hs = HotSwapSession(files["static"], files["live"])
    _, akps = perturbed_akps(model, seed=1)
    originals = hs.akps
    swaps = [hs.swap_akps(akps if k % 2 == 0 else originals) for k in range(args.swaps)]
    if hs.version % 2 == 1:  # end on the moved AKPs
        swaps.append(hs.swap_akps(akps))
    med = {
        k: statistics.median(getattr(s, k) for s in swaps) for k in ("kernels_s", "session_s", "verify_s", "total_s")
    }
    fresh_s = statistics.median(fresh)
    static_new = _session(export.passes.save(hs.static_model(), work / "swapped.static.onnx"))
    lat = {}
    for b in (1, 8):
        x = np.random.default_rng(100 + b).standard_normal((b, *image)).astype(np.float32)
        pairs = [
            (
                _p50(lambda x=x: hs.run(None, {"input": x}), iters=30, seconds=1.0),
                _p50(lambda x=x: static_new.run(None, {"input": x}), iters=30, seconds=1.0),
            )
            for _ in range(3)
        ]
        lat[b] = {
            "swapped_ms": statistics.median(p[0] for p in pairs),
            "static_ms": statistics.median(p[1] for p in pairs),
        }
        lat[b]["ratio"] = lat[b]["swapped_ms"] / lat[b]["static_ms"]
    out["hotswap"] = {
        "swap_median_s": med,
        "fresh_load_median_s": fresh_s,
        "swap_over_fresh": med["total_s"] / fresh_s,
        "latency": lat,
    }
    print(
        f"\nhot-swap ({args.swaps}+ swaps, medians): swap {med['total_s'] * 1e3:.0f} ms "
        f"(kernels {med['kernels_s'] * 1e3:.1f}, session {med['session_s'] * 1e3:.0f}, "
        f"check {med['verify_s'] * 1e3:.0f}) vs fresh session load {fresh_s * 1e3:.0f} ms: ratio {med['total_s'] / fresh_s:.2f}"
    )
    for b, v in lat.items():
        print(
            f"  batch {b}: swapped session p50 {v['swapped_ms']:.2f} ms, fresh static session {v['static_ms']:.2f} ms, ratio {v['ratio']:.2f}"
        )

    # 3. Triton
    try:
        from deploy.triton import write_repository
        from deploy.triton.load import load_test
        from deploy.triton.server import ServerUnavailable, find_triton, start_server

        find_triton()
    except (ImportError, ServerUnavailable) as e:  # type: ignore[misc]
        out["triton"] = {"available": False, "reason": str(e)}
        print(f"\nTriton: skipped: {e}")
    else:
        info = write_repository(work / "repo", files, latency=curve, validate=None)
        starts = []
        server = None
        for _ in range(2):
            server = start_server(info.path, load_models=["acl_python"], timeout=180)
            starts.append(server.start_seconds)
            if len(starts) < 2:
                server.stop()
        pool = np.random.default_rng(7).standard_normal((64, *image)).astype(np.float32)
        try:
            result = load_test(
                server.grpc_url,
                "acl_python",
                pool,
                protocol="grpc",
                requests_per_level=args.requests,
                seconds_per_level=args.seconds,
            )
        finally:
            server.stop()
        out["triton"] = {"available": True, "start_s": starts, "validation": info.validation, **result}
        print(
            f"\nTriton {server.dist.version} (nvidia-pytriton), python backend + ONNX Runtime: ready in "
            + ", ".join(f"{s:.2f} s" for s in starts)
        )
        print("| clients | requests | throughput (img/s) | p50 ms | p99 ms | server mean batch | server batches |")
        print("|---|---|---|---|---|---|---|")
        for c, lv in result["levels"].items():
            print(
                f"| {c} | {lv['requests']} | {lv['throughput']:.0f} | {lv['p50_ms']:.2f} | {lv['p99_ms']:.2f} | {lv['server_mean_batch']:.2f} | {lv['server_batches']} |"
            )

    # 4. OpenVINO
    try:
        import openvino as ov
    except ImportError as e:
        out["openvino"] = {"available": False, "reason": f"openvino is not installed ({e})"}
        print(f"\nOpenVINO: skipped: {out['openvino']['reason']}")
    else:
        from export.inline import inline

        compiled = ov.Core().compile_model(str(inline(files["live"], work / "m.live.inlined.onnx")), "CPU")
        rows = {}
        for b in (1, 8):
            x = np.random.default_rng(200 + b).standard_normal((b, *image)).astype(np.float32)
            pairs = [
                (
                    _p50(lambda x=x: compiled({"input": x}), iters=30, seconds=1.0),
                    _p50(lambda x=x: sess.run(None, {"input": x}), iters=30, seconds=1.0),
                )
                for _ in range(3)
            ]
            rows[b] = {
                "openvino_ms": statistics.median(p[0] for p in pairs),
                "ort_static_ms": statistics.median(p[1] for p in pairs),
            }
            rows[b]["ort_speedup"] = rows[b]["openvino_ms"] / rows[b]["ort_static_ms"]
        out["openvino"] = {"available": True, "version": ov.__version__, "latency": rows}
        print(f"\nOpenVINO {ov.__version__} (inlined live file) vs ONNX Runtime (static file), p50:")
        for b, v in rows.items():
            print(
                f"  batch {b}: OpenVINO {v['openvino_ms']:.2f} ms, ONNX Runtime {v['ort_static_ms']:.2f} ms, ORT faster by x{v['ort_speedup']:.2f}"
            )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
