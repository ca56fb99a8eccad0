"""Peak resident memory of each runtime serving an AnaNN model (issue 24 item 4).

Each runtime runs in a fresh process: it loads its model, then runs ``--calls``
inferences at each batch size. Printed per runtime: the peak resident memory
before loading (the interpreter and the runner's modules; ONNX Runtime and
OpenVINO load their libraries with the session), the peak after the calls
(``VmHWM``) and their difference, what loading and serving the model costs. Runtimes: ONNX Runtime on the plain, static, live and live-akp (fed AKPs
every call) files, OpenVINO on the static file (where installed, else "not
available: <reason>"), and the ACL model in eager PyTorch (eval, inference mode).
Memory does not depend on the machine's load, unlike latency
(``bench_onnx_latency.py``).

    python benchmarks/bench_runtime_memory.py [--arch resnet18] [--batch-sizes 1,32] [--calls 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from peak_memory import peak_rss_mb  # benchmarks/ is on sys.path when a benchmark runs as a script

PRESETS = {  # arch -> (input shape without batch, classes)
    "lenet": ((1, 32, 32), 10),
    "resnet18_cifar": ((3, 32, 32), 10),
    "resnet18": ((3, 224, 224), 1000),
}
RUNTIMES = ["ort plain", "ort static", "ort live", "ort live-akp", "openvino static", "torch eager"]


def _write_models(arch: str, folder: Path) -> None:
    """The ONNX files, the AKPs a live-akp call is fed, and the PyTorch model, into ``folder``."""
    import numpy as np
    import torch

    import acl
    import export
    from pipeline.archs import DEFAULT_SPEC, build
    from pipeline.archs.calibrate import trained_looking_bn

    image, classes = PRESETS[arch]
    torch.manual_seed(0)
    plain = build(arch, None, in_channels=image[0], num_classes=classes).eval()
    trained_looking_bn(plain, image)  # as bench_onnx_latency.py: untrained BatchNorm overflows float32 at 224
    shape = (1, *image)
    export.to_onnx(plain, folder / "plain.onnx", shape)
    anann = acl.convert(plain, DEFAULT_SPEC, layers="all")
    trained_looking_bn(anann, image)
    export.to_onnx(anann, folder / "static.onnx", shape)
    export.to_onnx(anann, folder / "live.onnx", shape, mode="live")
    export.to_onnx(anann, folder / "live-akp.onnx", shape, mode="live", akp_inputs=True)
    with torch.no_grad():
        akps = {f"{n}.{k}": v.numpy() for n, ly in acl.acl_layers(anann) for k, v in ly.akps().items()}
    np.savez(folder / "akps.npz", **akps)
    torch.save(anann, folder / "model.pt")


def _runner(runtime: str, folder: Path, image: tuple, threads: int):
    """The runtime's runner, imports done; ``None`` with the reason where it cannot run here."""
    kind, what = runtime.split(" ")
    if kind == "ort":
        from deploy.runners import OrtRunner

        return OrtRunner(folder / f"{what}.onnx", threads=threads), None
    if kind == "openvino":
        from deploy.openvino import OpenVinoRunner, openvino_available

        ok, reason = openvino_available()
        return (OpenVinoRunner(folder / f"{what}.onnx", threads=threads), None) if ok else (None, reason)
    import numpy as np
    import torch

    from deploy.runners import TorchRunner

    torch.set_num_threads(threads)
    model = torch.load(folder / "model.pt", weights_only=False)
    return TorchRunner(model, {"input": (np.float32, [None, *image])}, ["logits"]), None


def _measure(runtime: str, folder: Path, image: tuple, batches: list[int], calls: int, threads: int) -> dict:
    import numpy as np

    from deploy.runners import quiet_polygraphy

    quiet_polygraphy()
    runner, reason = _runner(runtime, folder, image, threads)
    if runner is None:
        return {"unavailable": reason}
    base = peak_rss_mb()
    extra = dict(np.load(folder / "akps.npz")) if runtime.endswith("live-akp") else {}
    runner.activate()
    rng = np.random.default_rng(0)
    for b in batches:
        x = rng.standard_normal((b, *image)).astype(np.float32)
        for _ in range(calls):
            runner.infer({"input": x, **extra}, check_inputs=False)
    runner.deactivate()
    return {"base_mb": base, "peak_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18", choices=sorted(PRESETS))
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--calls", type=int, default=5, help="inferences per batch size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    batches = [int(b) for b in a.batch_sizes.split(",")]
    image = PRESETS[a.arch][0]
    if a.child:
        runtime, folder = a.child.split("|")
        print(json.dumps(_measure(runtime, Path(folder), image, batches, a.calls, a.threads)))
        return
    with tempfile.TemporaryDirectory() as d:
        _write_models(a.arch, Path(d))
        print(f"AnaNN-{a.arch} ({'x'.join(map(str, image))}), batches {a.batch_sizes}, {a.calls} calls each")
        print(f"{'runtime':16s} {'before load':>13s} {'peak':>9s} {'load + calls':>13s}   (resident MB)")
        for runtime in RUNTIMES:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", f"{runtime}|{d}"]
            r = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            if "unavailable" in r:
                print(f"{runtime:16s} not available: {r['unavailable']}")
                continue
            print(f"{runtime:16s} {r['base_mb']:13.0f} {r['peak_mb']:9.0f} {r['peak_mb'] - r['base_mb']:13.0f}")


if __name__ == "__main__":
    main()
