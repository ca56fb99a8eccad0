"""Training throughput (images/s) and peak memory: plain vs AnaNN-ResNet-18 side by side; workers and bf16.

Default (``--compare``): plain ResNet-18 against AnaNN-ResNet-18 (every spatial
convolution an ACL with ``--spec``, exp3's ratio by default) at 3x32x32 batch 64
(``resnet18_cifar``) and at 3x224x224 batch 16 (``resnet18``), in alternating rounds:
each round runs both models, each in a fresh process (so that its peak resident
memory is its own), in the order plain, ACL on even rounds and ACL, plain on odd
ones, so a drift of the machine's load cancels in the per-round ratio. A step is
forward, cross-entropy, backward and SGD with momentum on a fixed random batch (no
input pipeline: ``--loader`` times that). Printed per model and size: the median
images/s over rounds, the median of the per-round ratios ACL / plain (issue 24's
target: >= 0.95 at both sizes) with its spread (lowest and highest round: four
steps per run spread the rounds by 0.27, so ``--seconds`` times steps until that
budget is spent) and the peak resident memory of the training process
(``ru_maxrss``) with the part added by training (peak minus the resident memory
after building the model and before the first step).
Every child runs with glibc told to keep large blocks (``allocator.KEEP_LARGE_BLOCKS``;
``--glibc-defaults`` to run without): by default each step maps and page-faults its
large tensors afresh, and how much of that a run does varied so much that the rounds'
ratios spread 0.99-1.27 at 32x32 on an idle machine (0.89-0.93 with the setting).

``--pipeline`` runs the real training path (DataLoader, batch gather, CIFAR crop-and-flip
augmentation, standardisation, SGD with momentum and the cosine schedule) on a
synthetic CIFAR-format training split held in memory like the real one, and
reports the images per second of the steady epochs (the first, which pays for
allocator warm-up and oneDNN's kernel selection, is discarded). A CIFAR-10 epoch
is 50000 images: seconds per epoch = 50000 / (images/s).

Cases: ``--workers`` 0 vs 2 (float32), and ``--amp bf16`` autocast vs float32.
Each case runs in a fresh process, one after another; shared machines are noisy,
so run it twice before believing a difference under ~10 %.

``--loader`` times the input pipeline alone (DataLoader, augmentation,
standardisation; no model) with 0 and 2 workers, on the in-memory CIFAR split and
on an image folder of synthetic 500x375 JPEGs cropped to 224 (decoded lazily):
what the model's step has to hide.

    python benchmarks/bench_train_throughput.py [--rounds 3] [--steps 4] [--seconds 30] [--acl-spec G0.15625...] [--glibc-defaults]
    python benchmarks/bench_train_throughput.py --pipeline [--arch resnet18_cifar] [--spec none] [--steps 8] [--epochs 3]
    python benchmarks/bench_train_throughput.py --loader
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time

from allocator import KEEP_LARGE_BLOCKS, describe  # benchmarks/ is on sys.path when a benchmark runs as a script
from peak_memory import peak_rss_mb

CASES = [("fp32, workers 0", 0, "off"), ("fp32, workers 2", 2, "off"), ("bf16, workers 0", 0, "bf16")]
EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
SIZES = [("resnet18_cifar", 32, 64), ("resnet18", 224, 16)]  # (arch, image side, batch): issue 24's two cells


def _steps(arch: str, spec: str, side: int, batch: int, steps: int, threads: int, seconds: float, compiled: bool) -> dict:
    """Images/s of at least ``steps`` timed training steps (after 2 warm-up steps), more until ``seconds``
    have been timed, the warm-up's seconds (compiling, with ``compiled``) and the peak memory of the process."""
    import torch
    import torch.nn.functional as F

    import acl
    from pipeline import archs

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = archs.build(arch, None if spec == "none" else spec, in_channels=3, num_classes=10)
    if compiled:
        acl.compile_generators(model)
    x, y = torch.randn(batch, 3, side, side), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    before = peak_rss_mb()
    times: list[float] = []
    i, start = 0, time.perf_counter()
    while i < steps + 2 or sum(times) < seconds:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if i >= 2:  # the first steps pay for allocation, oneDNN's kernel selection and compiling
            times.append(time.perf_counter() - t0)
        elif i == 1:
            warmup = time.perf_counter() - start
        i += 1
    return {
        "images_per_s": batch / statistics.median(times),
        "steps": len(times),
        "warmup_s": warmup,
        "peak_mb": peak_rss_mb(),
        "built_mb": before,
    }


CHILD_ENV: dict[str, str] = {}  # allocator.KEEP_LARGE_BLOCKS unless --glibc-defaults


def _child(args: list[str]) -> dict:
    env = {**os.environ, **CHILD_ENV}
    res = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _cpu_jiffies() -> list[int] | None:
    """``/proc/stat``'s machine-wide CPU time (user nice system idle iowait irq softirq steal), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            return [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def _measured_child(args: list[str]) -> dict:
    """``_child``, with what the rest of the machine did meanwhile: the rounds spread with it."""
    import resource

    before, own0, t0 = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = _child(args)
    after, own1, wall = _cpu_jiffies(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - t0
    if before and after:
        d, tick = [b - a for a, b in zip(before, after)], os.sysconf("SC_CLK_TCK")
        own = (own1.ru_utime + own1.ru_stime) - (own0.ru_utime + own0.ru_stime)
        busy = (sum(d) - d[3] - d[4]) / tick
        out["others_cores"] = max(0.0, busy - own) / wall  # cores used by other processes during the run
        out["steal_pct"] = 100 * d[7] / max(1, sum(d))
    return out


def _compare(spec: str, rounds: int, steps: int, threads: int, sides: list[int], seconds: float, kinds: list[str]) -> None:
    """Plain and ACL models side by side per size, in rounds of alternating order; medians printed."""
    budget = f", at least {seconds:g} s of steps" if seconds else ""
    print(f"plain vs AnaNN-ResNet-18 (spec {spec}), {steps}+ steps per run{budget}, {rounds} rounds, {threads} threads")
    print(describe(CHILD_ENV) + ", both models")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    for arch, side, batch in (size for size in SIZES if size[1] in sides):
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for r in range(rounds):
            for kind in kinds if r % 2 == 0 else kinds[::-1]:
                one = f"{arch}|{'none' if kind == 'plain' else spec}|{side}|{batch}|{steps}|{threads}|{seconds}"
                run = _measured_child(["--steps-case", f"{one}|{int(kind == 'acl-compiled')}"])
                runs[kind].append(run)
                print(
                    f"  round {r + 1} {kind:12s} {run['images_per_s']:8.1f} images/s; other processes "
                    f"{run.get('others_cores', float('nan')):.2f} cores, steal {run.get('steal_pct', float('nan')):.1f} %",
                    flush=True,
                )
        _print_size(arch, side, batch, runs)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)


def _print_size(arch: str, side: int, batch: int, runs: dict[str, list[dict]]) -> None:
    steps = min(r["steps"] for rs in runs.values() for r in rs)
    print(f"{arch} 3x{side}x{side}, batch {batch} (steps per run {steps}+):")
    for kind in (k for k in runs if k != "plain"):
        ratios = [a["images_per_s"] / p["images_per_s"] for a, p in zip(runs[kind], runs["plain"])]
        print(
            f"  {kind} / plain = {statistics.median(ratios):.3f} median of {len(ratios)} rounds, spread "
            f"{min(ratios):.3f}-{max(ratios):.3f} (rounds: {', '.join(f'{v:.3f}' for v in ratios)})"
        )
    for kind, rs in runs.items():
        ips = statistics.median(r["images_per_s"] for r in rs)
        peak = max(r["peak_mb"] for r in rs)
        extra = max(r["peak_mb"] - r["built_mb"] for r in rs)
        warm = max(r["warmup_s"] for r in rs)
        print(
            f"  {kind:12s} {ips:8.1f} images/s   peak RSS {peak:7.0f} MB (training adds {extra:6.0f} MB), "
            f"first 2 steps {warm:5.1f} s",
            flush=True,
        )


def _one(arch: str, spec: str, steps: int, epochs: int, batch: int, workers: int, amp: str, threads: int) -> dict:
    import torch

    from pipeline import archs
    from pipeline.datasets.augment import crop_flip
    from pipeline.datasets.base import in_memory_dataset
    from pipeline.train import train

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    n = steps * batch
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    data = in_memory_dataset(
        "synthetic CIFAR", (x, y), (x[:256], y[:256]), None, classes=[str(i) for i in range(10)], augment=crop_flip
    )
    torch.manual_seed(0)
    model = archs.build(arch, None if spec == "none" else spec, in_channels=3, num_classes=10)
    ends = []
    train(
        model,
        data,
        epochs=epochs,
        batch_size=batch,
        optimizer="sgd",
        workers=workers,
        amp=amp,
        progress=False,
        on_epoch_end=lambda e: ends.append(time.perf_counter()),
    )
    steady = [n / (b - a) for a, b in itertools.pairwise(ends)]
    return {"images_per_s": max(steady), "all": steady}


def _loader_only(kind: str, folder: str, workers: int, batch: int, threads: int) -> dict:
    import torch

    from pipeline.datasets.augment import crop_flip
    from pipeline.datasets.base import in_memory_dataset
    from pipeline.datasets.folder import load_folder_dataset
    from pipeline.train import _train_loader, distributed_context

    torch.set_num_threads(threads)
    if kind == "cifar":
        x = torch.randint(0, 256, (50000, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        y = torch.randint(0, 10, (50000,))
        data = in_memory_dataset("cifar", (x, y), (x[:10], y[:10]), None, classes=list("0123456789"), augment=crop_flip)
    else:
        data = load_folder_dataset(folder)
    loader, keyed = _train_loader(data, batch, 0, distributed_context(), workers, pin=False)
    keyed.set_epoch(0)
    n, start = 0, None
    for xb, _ in loader:
        data.normalize(xb)
        if start is None:  # the first batch pays for starting the workers
            start = time.perf_counter()
            continue
        n += len(xb)
    return {"images_per_s": n / (time.perf_counter() - start)}


def _jpeg_folder(root: str, per_class: int = 96) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(4):
        d = f"{root}/c{c}"
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
            Image.fromarray(arr).save(f"{d}/{i}.jpg", quality=90)
    return root


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="compare: rounds of both models per size")
    p.add_argument("--acl-spec", default=EXP3, help="compare: the ACL spec of every spatial convolution")
    p.add_argument("--sizes", default="32,224", help="compare: image sides to run (32: batch 64, 224: batch 16)")
    p.add_argument(
        "--generator",
        choices=("eager", "compiled", "both"),
        default="both",
        help="compare: the ACL model's kernel generator (compiled: acl.compile_generators), or both side by side",
    )
    p.add_argument("--pipeline", action="store_true", help="the pipeline.train cases (workers, bf16) instead")
    p.add_argument("--arch", default="resnet18_cifar", help="--pipeline: the network")
    p.add_argument("--spec", default="none", help="--pipeline: 'none' (plain convolutions) or an ACL spec")
    p.add_argument("--steps", type=int, help="timed steps per run (compare: at least 4) or per epoch (--pipeline: 8)")
    p.add_argument("--seconds", type=float, default=0.0, help="compare: time steps until this many seconds per run")
    p.add_argument("--epochs", type=int, default=3, help="--pipeline: epochs (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=128, help="--pipeline and --loader")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--glibc-defaults", action="store_true", help="children without KEEP_LARGE_BLOCKS (glibc's own)")
    p.add_argument("--cases", default="0,1,2", help="--pipeline cases, by index: " + ", ".join(c[0] for c in CASES))
    p.add_argument("--loader", action="store_true", help="time the input pipeline only (no model)")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)
    p.add_argument("--loader-case", help=argparse.SUPPRESS)
    p.add_argument("--steps-case", help=argparse.SUPPRESS)
    return p.parse_args()


def _loader_table(a: argparse.Namespace) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        folder = _jpeg_folder(tmp)
        print(f"input pipeline only, batch {a.batch_size}, {a.threads} threads", flush=True)
        for kind in ("cifar", "folder"):
            for workers in (0, 2):
                r = _child([*sys.argv[1:], "--loader-case", f"{kind}|{folder}|{workers}"])
                what = "CIFAR-10 in memory, crop+flip" if kind == "cifar" else "JPEG folder 500x375 -> 224"
                print(f"{what:32s} workers {workers}: {r['images_per_s']:8.1f} images/s", flush=True)


def _pipeline_table(a: argparse.Namespace) -> None:
    print(f"{a.arch} (spec {a.spec}), batch {a.batch_size}, {a.steps} steps/epoch, {a.threads} threads", flush=True)
    print(f"{'case':18s} {'images/s':>9s} {'s / CIFAR epoch':>16s}  per steady epoch", flush=True)
    base = None
    for i in (int(c) for c in a.cases.split(",")):
        r = _child([*sys.argv[1:], "--case", str(i)])
        base = base or r["images_per_s"]
        print(
            f"{CASES[i][0]:18s} {r['images_per_s']:9.1f} {50000 / r['images_per_s']:16.0f}  "
            f"{', '.join(f'{v:.1f}' for v in r['all'])}  (x{r['images_per_s'] / base:.2f})",
            flush=True,
        )


def main() -> None:
    a = _parse()
    if not a.glibc_defaults:
        CHILD_ENV.update(KEEP_LARGE_BLOCKS)
    if a.steps_case:
        arch, spec, side, batch, steps, threads, seconds, compiled = a.steps_case.split("|")
        out = _steps(arch, spec, int(side), int(batch), int(steps), int(threads), float(seconds), compiled == "1")
        print(json.dumps(out))
    elif a.loader_case:
        kind, folder, workers = a.loader_case.split("|")
        print(json.dumps(_loader_only(kind, folder, int(workers), a.batch_size, a.threads)))
    elif a.case is not None:
        _, workers, amp = CASES[a.case]
        print(json.dumps(_one(a.arch, a.spec, a.steps or 8, a.epochs, a.batch_size, workers, amp, a.threads)))
    elif a.loader:
        _loader_table(a)
    elif a.pipeline:
        a.steps = a.steps or 8
        _pipeline_table(a)
    else:
        sides = [int(v) for v in a.sizes.split(",")]
        kinds = ["plain", *{"eager": ["acl"], "compiled": ["acl-compiled"], "both": ["acl", "acl-compiled"]}[a.generator]]
        _compare(a.acl_spec, a.rounds, a.steps or 4, a.threads, sides, a.seconds, kinds)


if __name__ == "__main__":
    main()
