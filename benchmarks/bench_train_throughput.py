"""Training throughput (images/s) of ResNet-18-CIFAR through ``pipeline.train.train``: workers and bf16.

Runs the real training path (DataLoader, batch gather, CIFAR crop-and-flip
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

    python benchmarks/bench_train_throughput.py [--arch resnet18_cifar] [--spec none] [--steps 8] [--epochs 3]
    python benchmarks/bench_train_throughput.py --loader
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time

CASES = [("fp32, workers 0", 0, "off"), ("fp32, workers 2", 2, "off"), ("bf16, workers 0", 0, "bf16")]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18_cifar")
    p.add_argument("--spec", default="none", help="'none' (plain convolutions) or an ACL spec for every layer")
    p.add_argument("--steps", type=int, default=8, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cases", default="0,1,2", help="which cases, by index: " + ", ".join(c[0] for c in CASES))
    p.add_argument("--loader", action="store_true", help="time the input pipeline only (no model)")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)
    p.add_argument("--loader-case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.loader_case:
        kind, folder, workers = a.loader_case.split("|")
        print(json.dumps(_loader_only(kind, folder, int(workers), a.batch_size, a.threads)))
        return
    if a.loader:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            folder = _jpeg_folder(tmp)
            print(f"input pipeline only, batch {a.batch_size}, {a.threads} threads", flush=True)
            for kind in ("cifar", "folder"):
                for workers in (0, 2):
                    res = subprocess.run(
                        [sys.executable, __file__, *sys.argv[1:], "--loader-case", f"{kind}|{folder}|{workers}"],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    r = json.loads(res.stdout.strip().splitlines()[-1])
                    what = "CIFAR-10 in memory, crop+flip" if kind == "cifar" else "JPEG folder 500x375 -> 224"
                    print(f"{what:32s} workers {workers}: {r['images_per_s']:8.1f} images/s", flush=True)
        return
    if a.case is not None:
        _, workers, amp = CASES[a.case]
        print(json.dumps(_one(a.arch, a.spec, a.steps, a.epochs, a.batch_size, workers, amp, a.threads)))
        return
    print(f"{a.arch} (spec {a.spec}), batch {a.batch_size}, {a.steps} steps/epoch, {a.threads} threads", flush=True)
    print(f"{'case':18s} {'images/s':>9s} {'s / CIFAR epoch':>16s}  per steady epoch", flush=True)
    base = None
    for i in (int(c) for c in a.cases.split(",")):
        name = CASES[i][0]
        res = subprocess.run(
            [sys.executable, __file__, *sys.argv[1:], "--case", str(i)], capture_output=True, text=True, check=True
        )
        r = json.loads(res.stdout.strip().splitlines()[-1])
        base = base or r["images_per_s"]
        rel = r["images_per_s"] / base
        print(
            f"{name:18s} {r['images_per_s']:9.1f} {50000 / r['images_per_s']:16.0f}  "
            f"{', '.join(f'{v:.1f}' for v in r['all'])}  (x{rel:.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
