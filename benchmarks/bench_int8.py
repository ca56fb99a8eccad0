"""INT8 against FP32, side by side in one run: ONNX Runtime CPU and OpenVINO latency, agreement, trained accuracy.

**Latency** (part ``latency``). For AnaNN-ResNet-18 at 3x224x224, AnaNN-ResNet-18
(CIFAR) at 3x32x32 and AnaNN-MobileNetV2 at 3x224x224 (untrained, BatchNorm
statistics measured as training would leave them), every file is timed in the
same rounds, in alternating order, at batch 1 and 32:

- ``ort fp32``: the static file in ONNX Runtime (``export.sessions.open_session``);
- ``ort int8``: ``model.static-int8.onnx`` as the pipeline writes it
  (``deploy.int8.quantize``: symmetric INT8 activations, which TensorRT needs);
- ``ort int8 cpu-form``: the same file in ONNX Runtime's CPU form
  (``deploy.int8.ort_cpu``: uint8 activations, exactly the same numbers; 7-bit
  weights on an x86 CPU without VNNI);
- ``ort u8s8``: requantized from the same calibration with asymmetric uint8
  activations (ONNX Runtime's advice for x86; TensorRT cannot read it);
- ``ov fp32`` / ``ov int8``: OpenVINO on the static file and on the same Q/DQ file.

Each row: median over rounds of the per-round p50; ``/fp32`` is the median of
per-round ratios to ``ort fp32`` (``ov int8`` also to ``ov fp32``). Top-1 agreement
and relative logit error with FP32 are measured on other random images. The
plain network of the same architecture gets its INT8 file's agreement too: do
ACLs quantize better or worse than plain kernels?

Then two studies: ONNX Runtime session options on the INT8 file (AnaNN-ResNet-18,
224, batch 1), and single-channel and stem convolutions in FP32 (AnaNN-LeNet's
1-channel ``conv1``; the 3-channel stems).

**Accuracy** (part ``accuracy``): pipeline jobs with ``--int8`` (``--int8-max-drop``
1 pp in force): the default job (AnaNN-LeNet on digits) and its plain LeNet
(``--spec none``), and in a full run ``resnet18_cifar`` on CIFAR-10 (``--cifar DIR``)
or else on scikit-learn's digits upscaled to 32x32 RGB, written in CIFAR-10's
binary layout (``_digits_cifar`` says why not an image folder). Reported: float
and INT8 test accuracy, the drops, layers kept in FP32, the ``ort-cpu:static-int8``
and ``openvino:static-int8`` rows' agreement, ONNX Runtime's INT8/FP32 latency.

    python benchmarks/bench_int8.py                    # everything
    python benchmarks/bench_int8.py --quick            # smoke run: CIFAR ResNet and LeNet, batch 1 and 2, 2 epochs
    python benchmarks/bench_int8.py --parts latency    # or accuracy
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STEM_ROWS = ("ort int8 stem-fp32", "ort cpu-form stem-fp32")
SINGLE_CHANNEL_ROWS = ("ort int8 1ch-int8", "ort cpu-form 1ch-int8")
# name -> (arch, input shape without batch, classes, extra rows); every model also gets ORT_ROWS
MODELS = {
    "ResNet-18 224": ("resnet18", (3, 224, 224), 1000, STEM_ROWS),
    "ResNet-18 CIFAR": ("resnet18_cifar", (3, 32, 32), 10, STEM_ROWS),
    "MobileNetV2 224": ("mobilenet_v2", (3, 224, 224), 1000, STEM_ROWS),
    "LeNet": ("lenet", (1, 32, 32), 10, SINGLE_CHANNEL_ROWS),
}
QUICK_MODELS = ("ResNet-18 CIFAR", "LeNet")
ORT_ROWS = ("ort fp32", "ort int8", "ort cpu-form", "ort u8s8")
ORDER = (*ORT_ROWS, *STEM_ROWS, *SINGLE_CHANNEL_ROWS, "ov fp32", "ov int8")


def _args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: one small model, batch 1 and 2, short jobs")
    ap.add_argument("--parts", default="latency,accuracy", help="comma-separated: latency, accuracy")
    ap.add_argument("--batch-sizes", default=None, help="default 1,32 (quick: 1,2)")
    ap.add_argument("--calibration", type=int, default=None, help="calibration images (default 32, quick 8)")
    ap.add_argument("--eval-images", type=int, default=None, help="agreement images (default 64, quick 8)")
    ap.add_argument("--rounds", type=int, default=None, help="timing rounds (default 3, quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime and OpenVINO threads (default: all)")
    ap.add_argument("--cifar", default=None, help="CIFAR-10 binary folder for the resnet18_cifar job")
    ap.add_argument("--epochs", type=int, default=2, help="resnet18_cifar job epochs (full run only)")
    ap.add_argument("--keep", default=None, help="keep the pipeline runs in this folder")
    a = ap.parse_args(argv)
    a.batches = [int(b) for b in (a.batch_sizes or ("1,2" if a.quick else "1,32")).split(",")]
    a.calibration = a.calibration or (8 if a.quick else 32)
    a.eval_images = a.eval_images or (8 if a.quick else 64)
    a.rounds = a.rounds or (1 if a.quick else 3)
    return a


def _model(arch: str, image: tuple, classes: int, spec):
    """The plain network (``spec=None``) or its AnaNN, BatchNorm statistics measured on random images."""
    import torch

    import acl
    from pipeline.archs import build
    from pipeline.archs.calibrate import trained_looking_bn

    torch.manual_seed(0)
    plain = trained_looking_bn(build(arch, None, in_channels=image[0], num_classes=classes).eval(), image)
    if spec is None:
        return plain
    # Measured after conversion: analytic kernels change every activation's scale.
    return trained_looking_bn(acl.convert(plain, spec, layers="all"), image)


def _u8s8(static: Path, out: Path, calibration: np.ndarray) -> Path:
    """The static file requantized with asymmetric uint8 activations (ONNX Runtime's x86 advice), same options else."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from deploy.int8.quantize import CalibrationReader, Quantizer

    with Quantizer(static, calibration) as q:
        quantize_static(
            str(q.prepared),
            str(out),
            CalibrationReader(calibration, q.input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            nodes_to_exclude=list(q.single_channel),
            extra_options={"WeightSymmetric": True, "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]},
        )
    return out


def _files(model, image: tuple, folder: Path, calibration: np.ndarray, rows) -> dict[str, Path]:
    """The files of ``rows`` (names as in ``ORDER``) for ``model``: static, INT8 variants, their CPU forms."""
    import export
    from deploy.int8.quantize import Quantizer, layer_names

    static = export.to_onnx(model, folder / "static.onnx", (1, *image))
    files = {"ort fp32": static}
    with Quantizer(static, calibration) as q:
        files["ort int8"] = q.write(folder / "int8.onnx")
        if "ort int8 stem-fp32" in rows:
            stem = layer_names(q.model, ("Conv",))[0]
            files["ort int8 stem-fp32"] = q.write(folder / "int8-stem.onnx", [stem])
    if "ort int8 1ch-int8" in rows:
        with Quantizer(static, calibration, single_channel_fp32=False) as q:
            files["ort int8 1ch-int8"] = q.write(folder / "int8-1ch.onnx")
    for name in [n for n in files if n.startswith("ort int8")]:
        cpu = name.replace("ort int8", "ort cpu-form")
        if cpu in rows:
            files[cpu] = _cpu_form(files[name], folder / f"{cpu.replace(' ', '-')}.onnx")
    if "ort u8s8" in rows:
        files["ort u8s8"] = _u8s8(static, folder / "u8s8.onnx", calibration)
    return {n: files[n] for n in ORDER if n in files and n in rows}


def _cpu_form(path: Path, out: Path, seven_bit: bool | None = None) -> Path:
    import onnx

    from deploy.int8.ort_cpu import ort_cpu_form
    from export.passes import save

    return save(ort_cpu_form(onnx.load(str(path)), seven_bit), out)


class _Session:
    """An ONNX Runtime session with ``infer`` as ``deploy.timing.measure_latency`` calls it."""

    def __init__(self, path, threads=None, **options) -> None:
        from export.sessions import open_session

        self.session = open_session(path, threads=threads, **options)
        self.input = self.session.get_inputs()[0].name

    def infer(self, feed, check_inputs=True):
        return {"logits": self.session.run(None, {self.input: next(iter(feed.values()))})[0]}


def _runners(files: dict[str, Path], threads, openvino: bool) -> dict[str, object]:
    runners = {name: _Session(path, threads) for name, path in files.items()}
    if openvino:
        from deploy.openvino import OpenVinoRunner

        runners["ov fp32"] = OpenVinoRunner(files["ort fp32"], threads=threads)
        runners["ov int8"] = OpenVinoRunner(files["ort int8"], threads=threads, precision="int8")
        for name in ("ov fp32", "ov int8"):
            runners[name].activate()
    return runners


def _openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def _time(runners: dict, image: tuple, batches: list[int], rounds: int) -> dict[tuple[str, int], list[float]]:
    """Per-round p50 (ms) of every runner at every batch, the order alternating between rounds."""
    from deploy.timing import measure_latency

    rng = np.random.default_rng(0)
    p50: dict[tuple[str, int], list[float]] = {}
    big = image[1] * image[2] >= 128 * 128
    for rnd in range(rounds):
        order = list(runners) if rnd % 2 == 0 else list(runners)[::-1]
        for b in batches:
            x = rng.standard_normal((b, *image)).astype(np.float32)
            for name in order:
                iters = 2 if big and b > 8 else 10
                s = measure_latency(runners[name], {"input": x}, warmup=1, min_iters=iters, min_seconds=0.3)
                p50.setdefault((name, b), []).append(s.p50_ms)
    return p50


def _logits(runner, x: np.ndarray) -> np.ndarray:
    return np.concatenate([next(iter(runner.infer({"input": x[i : i + 8]}).values())) for i in range(0, len(x), 8)])


def _agreement(runners: dict, x: np.ndarray, ref: str = "ort fp32") -> dict[str, tuple[float, float]]:
    """``{row: (top-1 agreement %, relative logit error)}`` against ``ref`` on ``x``."""
    want = _logits(runners[ref], x)
    out = {}
    for name, runner in runners.items():
        got = _logits(runner, x)
        rel = float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-12))
        out[name] = (100.0 * float(np.mean(got.argmax(1) == want.argmax(1))), rel)
    return out


def _ratio(p50, a: str, b: str, batch: int) -> float:
    return statistics.median(x / y for x, y in zip(p50[a, batch], p50[b, batch]))


def _print_model(title: str, p50, agree: dict, batches: list[int], plain: dict | None) -> None:
    names = [n for n in ORDER if (n, batches[0]) in p50]
    print(f"\n{title}: p50 ms, /fp32 (median of per-round ratios to the same runtime's FP32), agreement with ort fp32")
    print(f"{'row':24s}" + "".join(f"{'b' + str(b) + ' ms':>11s}{'/fp32':>7s}" for b in batches) + "  top-1 %  rel err")
    for n in names:
        ref = "ov fp32" if n.startswith("ov") else "ort fp32"
        cells = "".join(f"{statistics.median(p50[n, b]):11.2f}{_ratio(p50, n, ref, b):7.2f}" for b in batches)
        top1, rel = agree.get(n, (float("nan"), float("nan")))
        print(f"{n:24s}{cells}  {top1:7.1f}  {rel:7.4f}")
    if plain:
        top1, rel = plain["ort int8"]
        print(f"{'plain net: ort int8':24s}" + " " * 18 * len(batches) + f"  {top1:7.1f}  {rel:7.4f}")


def _one_model(a: argparse.Namespace, title: str, openvino: bool) -> None:
    from pipeline.archs import DEFAULT_SPEC

    arch, image, classes, extra = MODELS[title]
    rng = np.random.default_rng(1)
    cal = rng.standard_normal((a.calibration, *image)).astype(np.float32)
    x_eval = rng.standard_normal((a.eval_images, *image)).astype(np.float32)  # never the calibration images
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "acl").mkdir(), (d / "plain").mkdir()
        files = _files(_model(arch, image, classes, DEFAULT_SPEC), image, d / "acl", cal, (*ORT_ROWS, *extra))
        runners = _runners(files, a.threads, openvino)
        p50 = _time(runners, image, a.batches, a.rounds)
        agree = _agreement(runners, x_eval)
        plain_files = _files(_model(arch, image, classes, None), image, d / "plain", cal, ("ort fp32", "ort int8"))
        plain = _agreement(_runners(plain_files, a.threads, False), x_eval)
        for runner in runners.values():
            if hasattr(runner, "deactivate"):
                runner.deactivate()
        _print_model(f"AnaNN-{title} ({'x'.join(map(str, image))})", p50, agree, a.batches, plain)
        if arch == ("resnet18_cifar" if a.quick else "resnet18"):
            _options_study(files, image, x_eval[:8], a)
    sys.stdout.flush()


def _options_rows(files: dict[str, Path], folder: Path) -> list[tuple[str, Path, dict]]:
    """(label, file, open_session options) of the session-option study."""
    u8 = _cpu_form(files["ort int8"], folder / "u8-8bit.onnx", seven_bit=False)
    precise = {"config": {"session.x64quantprecision": "1"}}
    return [
        ("fp32", files["ort fp32"], {}),
        ("int8, level all (default)", files["ort int8"], {}),
        ("int8, level extended", files["ort int8"], {"optimization": "extended"}),
        ("int8, level basic", files["ort int8"], {"optimization": "basic"}),
        ("int8, level disable", files["ort int8"], {"optimization": "disable"}),
        ("int8, qdqisint8allowed=1", files["ort int8"], {"config": {"session.qdqisint8allowed": "1"}}),
        ("int8, x64quantprecision=1", files["ort int8"], precise),
        ("u8 acts, 8-bit weights", u8, {}),
        ("u8 acts, 8-bit w, x64quantprec", u8, precise),
        ("cpu-form (u8, 7-bit w)", files["ort cpu-form"], {}),
    ]


def _node_counts(path: Path, options: dict, folder: Path) -> tuple[int, int]:
    """(QLinearConv, float Conv) nodes in the graph ONNX Runtime runs with ``options``."""
    import onnx

    from export.sessions import open_session

    out = folder / "optimized.onnx"
    open_session(path, optimized_model_filepath=str(out), **options)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    return ops.count("QLinearConv"), sum(op in ("Conv", "FusedConv") for op in ops)


def _options_study(files: dict[str, Path], image: tuple, x: np.ndarray, a: argparse.Namespace) -> None:
    """ONNX Runtime session options on the INT8 file: speed at batch 1, kernels chosen, exactness."""
    from deploy.timing import measure_latency

    folder = files["ort int8"].parent
    rows = _options_rows(files, folder)
    runners = [_Session(path, a.threads, **opts) for _, path, opts in rows]
    exact = _logits(_Session(files["ort int8"], a.threads, optimization="disable"), x)
    p50: dict[int, list[float]] = {}
    feed = {"input": np.random.default_rng(0).standard_normal((1, *image)).astype(np.float32)}
    for rnd in range(a.rounds):
        for i in range(len(rows)) if rnd % 2 == 0 else reversed(range(len(rows))):
            p50.setdefault(i, []).append(
                measure_latency(runners[i], feed, warmup=1, min_iters=5, min_seconds=0.3).p50_ms
            )
    print("\nONNX Runtime session options, batch 1 (max |d|: logits against the INT8 file's exact Q/DQ arithmetic,")
    print("level disable, on 8 other images; the file's own error against FP32 is on the 'fp32' line)")
    print(f"{'session':34s}{'p50 ms':>9s}{'/fp32':>7s}{'QLinearConv':>12s}{'float Conv':>11s}{'max |d|':>9s}")
    for i, (label, path, opts) in enumerate(rows):
        ratio = statistics.median(t / f for t, f in zip(p50[i], p50[0]))
        qconv, fconv = _node_counts(path, opts, folder)
        d = float(np.abs(_logits(runners[i], x) - exact).max())
        print(f"{label:34s}{statistics.median(p50[i]):9.2f}{ratio:7.2f}{qconv:12d}{fconv:11d}{d:9.3f}")


def latency_part(a: argparse.Namespace) -> None:
    from deploy.int8.ort_cpu import has_vnni

    openvino = _openvino_available()
    print(
        f"CPU: VNNI {'yes' if has_vnni() else 'no' if has_vnni() is False else 'unknown'}; threads {a.threads or 'all'}"
    )
    if not openvino:
        print("OpenVINO rows: not available: openvino is not installed")
    for title in QUICK_MODELS if a.quick else MODELS:
        _one_model(a, title, openvino)


def _digits_cifar(root: Path, per_class: int) -> Path:
    """scikit-learn's digits upscaled to 32x32 RGB, in CIFAR-10's binary layout (``cifar10:DIR``).

    Not an image folder: the folder loader trains with ImageNet's random resized
    crops (8 to 100 % of the image), the CIFAR loader with CIFAR's pad-and-crop,
    the recipe ``resnet18_cifar`` is trained with. The last fifth of each class is
    the test split; the training records are spread over the five batch files.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    up = np.kron(d.images / 16.0 * 255, np.ones((4, 4))).astype(np.uint8)  # 8x8 -> 32x32, pixels repeated
    train, test = [], []
    for label in range(10):
        idx = np.flatnonzero(d.target == label)[:per_class]
        n_test = max(1, len(idx) // 5)
        records = [np.concatenate([[label], np.tile(up[i].ravel(), 3)]).astype(np.uint8) for i in idx]
        train += records[: len(idx) - n_test]
        test += records[len(idx) - n_test :]
    root.mkdir(parents=True, exist_ok=True)
    order = np.random.default_rng(0).permutation(len(train))
    for k, part in enumerate(np.array_split(np.stack(train)[order], 5), 1):
        (root / f"data_batch_{k}.bin").write_bytes(part.tobytes())
    (root / "test_batch.bin").write_bytes(np.stack(test).tobytes())
    return root


def _jobs(a: argparse.Namespace, root: Path) -> list[tuple[str, list[str]]]:
    """(title, pipeline arguments) of the accuracy part; the resnet18_cifar job only in a full run."""
    short = ["--epochs", "2"] if a.quick else []
    jobs = [("AnaNN-LeNet, digits (default job)", short), ("plain LeNet, digits", ["--spec", "none", *short])]
    if a.quick:
        return jobs
    folder, name = (a.cifar, "CIFAR-10") if a.cifar else (_digits_cifar(root / "digits32", 180), "digits 32x32")
    cifar = ["--arch", "resnet18_cifar", "--data", f"cifar10:{folder}", "--epochs", str(a.epochs)]
    return [*jobs, (f"AnaNN-ResNet-18 CIFAR, {name}", [*cifar, "--batch-sizes", "1"])]


def _run_job(args: list[str], out: Path) -> tuple[dict | None, float, str]:
    """A pipeline run with ``--int8`` (1 pp bound): its report (None if it wrote none), minutes, stderr's tail."""
    common = ["--int8", "--backends", "ort-cpu,openvino", "--latency-seconds", "0.2"]
    sizes = [] if "--batch-sizes" in args else ["--batch-sizes", "1,32"]
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "pipeline.export", "--out", str(out), "--no-progress", *common, *sizes, *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    report = out / "report.json"
    tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
    return (json.loads(report.read_text()) if report.exists() else None), (time.perf_counter() - start) / 60, tail


def _job_line(title: str, report: dict, minutes: float) -> str:
    s, parity, lat = report["int8"], report["parity"], report["latency"]
    t, v = s["test"], s["validation"]
    kept = f"{len(s['fp32_layers'])}/{len(s['layers'])}"

    def agree(row: str) -> str:
        return (
            f"{100 * parity[row]['top1_agreement']:.1f}" if row in parity and "top1_agreement" in parity[row] else "-"
        )

    def ratio(batch: str) -> str:
        a, b = lat.get("ort-cpu:static-int8", {}).get(batch), lat.get("ort-cpu:static", {}).get(batch)
        return f"{a['p50_ms'] / b['p50_ms']:.2f}" if a and b else "-"

    return (
        f"{title:40s}{t['float']:8.2f}{t['int8']:8.2f}{t['drop']:7.2f}{v['drop']:7.2f}{kept:>7s}"
        f"{'pass' if s['passed'] else 'FAIL':>6s}{agree('ort-cpu:static-int8'):>7s}{agree('openvino:static-int8'):>7s}"
        f"{ratio('1'):>7s}{ratio('32'):>7s}{minutes:6.1f}"
    )


def accuracy_part(a: argparse.Namespace) -> None:
    if a.keep:
        _accuracy_runs(a, Path(a.keep))
        print(f"runs kept in {a.keep}")
        return
    with tempfile.TemporaryDirectory(prefix="bench-int8.") as root:
        _accuracy_runs(a, Path(root))


def _accuracy_runs(a: argparse.Namespace, root: Path) -> None:
    print("\nAccuracy: pipeline jobs with --int8 (--int8-max-drop 1 pp); test accuracy %, drops in pp; agreement:")
    print("top-1 agreement % of the INT8 rows with the source model; ORT int8/fp32: p50 ratio at batch 1 and 32")
    head = f"{'job':40s}{'float':>8s}{'int8':>8s}{'drop':>7s}{'v drop':>7s}{'FP32':>7s}{'':>6s}"
    print(head + f"{'ort':>7s}{'ov':>7s}{'r b1':>7s}{'r b32':>7s}{'min':>6s}")
    for i, (title, args) in enumerate(_jobs(a, root)):
        report, minutes, tail = _run_job(args, root / f"run{i}")
        if report is None or not report.get("int8"):
            print(f"{title:40s} no INT8 section ({minutes:.1f} min): {tail}")
        else:
            print(_job_line(title, report, minutes))
        sys.stdout.flush()


def main(argv=None) -> None:
    from deploy.runners import quiet_polygraphy

    a = _args(argv)
    quiet_polygraphy()
    start = time.perf_counter()
    parts = set(a.parts.split(","))
    unknown = parts - {"latency", "accuracy"}
    if unknown:
        raise SystemExit(f"error: --parts {','.join(sorted(unknown))}, expected latency and/or accuracy")
    print(f"bench_int8 {time.strftime('%Y-%m-%d %H:%M')}, load average {_load()}, {'quick' if a.quick else 'full'} run")
    if "latency" in parts:
        latency_part(a)
    if "accuracy" in parts:
        accuracy_part(a)
    print(f"\ntotal {(time.perf_counter() - start) / 60:.1f} min, load average {_load()}")


def _load() -> str:
    import os

    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


if __name__ == "__main__":
    main()
