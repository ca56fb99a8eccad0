"""ExplainFix on the embedded digits: fixed spatial initialisations, and the saliency sanity check (App. I).

Part ``init`` (Sec. 4.1): per seed, a plain LeNet is trained (``--epochs``, Adam
2e-3) with its spatial filters learned (``none``) and fixed by each method of
``acl.fix_spatial``; prints the test accuracy of each and the parameter values
still learned.

Part ``saliency`` (App. I): per seed, AnaNN-LeNet (exp3 spec) is trained
(``--saliency-epochs``); Eq. 4 saliency (``acl.kernel_saliency``, 15 minibatches of
4 training images, both variants) ranks its 102 spatial kernels; the x % least
salient, x % random and x % most salient are zeroed (``acl.zero_kernels``) and the
test accuracy printed for each x in ``--percents``.

    python benchmarks/bench_explainfix.py [--part init|saliency|both] [--seeds 0,1,2] [--epochs 10]
        [--saliency-epochs 4] [--percents 1,3,10,30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import acl
from acl.fixing import METHODS
from acl.saliency import VARIANTS, Saliency
from pipeline.archs import DEFAULT_SPEC, build
from pipeline.data import load_dataset
from pipeline.train import accuracy, train


def init_row(data, seed: int, epochs: int) -> dict[str, dict]:
    """Test accuracy and learned values per method, one seed."""
    row = {}
    for method in METHODS:
        torch.manual_seed(seed)
        model = build("lenet", None, in_channels=1, num_classes=10)
        summary = acl.fix_spatial(model, method, generator=torch.Generator().manual_seed(seed))
        begin = time.perf_counter()
        train(model, data, epochs=epochs, progress=False, seed=seed)
        acc = accuracy(model, data.x_test, data.y_test)
        row[method] = {"accuracy": acc, "learnable": summary.learnable, "seconds": time.perf_counter() - begin}
        print(f"  seed {seed} {method:9s} test accuracy {acc:.4f}, {summary.learnable} values learned", flush=True)
    return row


def _random(s: Saliency, seed: int) -> Saliency:
    g = torch.Generator().manual_seed(seed + 100)
    return Saliency(
        s.variant,
        s.minibatches,
        s.batch_size,
        {k: torch.rand(v.shape, generator=g) for k, v in s.kernels.items()},
        s.families,
    )


def saliency_row(data, seed: int, epochs: int, percents: list[float]) -> dict[str, dict]:
    """Accuracy with x % of the least / random / most salient kernels zeroed, per variant, one seed."""
    torch.manual_seed(seed)
    model = build("lenet", DEFAULT_SPEC, in_channels=1, num_classes=10)
    train(model, data, epochs=epochs, progress=False, seed=seed)
    base = accuracy(model, data.x_test, data.y_test)
    pick = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed))[:60]
    out: dict[str, dict] = {"base": {"accuracy": base}}
    for variant in VARIANTS:
        s = acl.kernel_saliency(model, data.x_train[pick], data.y_train[pick], minibatches=15, variant=variant)
        n = sum(k.numel() for k in s.kernels.values())
        rows = {}
        for pct in percents:
            count = max(1, round(n * pct / 100))
            rows[str(pct)] = {
                "kernels": count,
                "least": accuracy(acl.zero_kernels(model, s, count), data.x_test, data.y_test),
                "random": accuracy(acl.zero_kernels(model, _random(s, seed), count), data.x_test, data.y_test),
                "most": accuracy(acl.zero_kernels(model, s, count, most=True), data.x_test, data.y_test),
            }
            r = rows[str(pct)]
            print(
                f"  seed {seed} {variant:11s} {pct:>4g} % ({count:3d} of {n}) zeroed: least {r['least']:.4f}  "
                f"random {r['random']:.4f}  most {r['most']:.4f}  (base {base:.4f})",
                flush=True,
            )
        out[variant] = rows
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("init", "saliency", "both"), default="both")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of part init")
    p.add_argument("--saliency-epochs", type=int, default=4)
    p.add_argument("--percents", default="1,3,10,30")
    p.add_argument("--json")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    percents = [float(x) for x in args.percents.split(",")]
    data = load_dataset("digits")
    result: dict[str, dict] = {}
    if args.part in ("init", "both"):
        print(f"fixed spatial initialisations: plain LeNet, {args.epochs} epochs, Adam 2e-3, digits", flush=True)
        result["init"] = {seed: init_row(data, seed, args.epochs) for seed in seeds}
    if args.part in ("saliency", "both"):
        print(f"saliency sanity check: AnaNN-LeNet ({DEFAULT_SPEC}), {args.saliency_epochs} epochs", flush=True)
        result["saliency"] = {seed: saliency_row(data, seed, args.saliency_epochs, percents) for seed in seeds}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
