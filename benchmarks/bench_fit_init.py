"""Does starting an ACL from its conv's fitted kernels (``init="fit"``) fine-tune faster than random AKPs?

Per seed: trains a plain LeNet on the embedded digits to convergence
(``--plain-epochs``, Adam 2e-3), converts its convolutions (``--layers``) to ACLs
of ``--spec`` twice, with ``acl.from_conv(init="fit")`` (AKPs fitted to the
trained kernels, ``acl.fit``) and with random AKPs (``init="random"``); in both
the plain kernels, the bias and every other layer start trained. Then
fine-tunes both the same way (``--epochs``, Adam 2e-3, same shuffling) and
records the test accuracy after every epoch (epoch 0: right after conversion).
Last, Table 3 on the fine-tuned ``init="fit"`` model: the accuracy with each family
replaced by Mean kernels (``acl.ablate``), with all of them, and ``acl.attribution``.

Prints, side by side, the epochs each side needs to reach each accuracy target
(``--targets``, plus the plain model's own accuracy minus 1 point), the
accuracy right after conversion and at the end, and the fit's mean kernel error.

    python benchmarks/bench_fit_init.py [--seeds 0,1,2] [--plain-epochs 20] [--epochs 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import acl
from pipeline.archs import build
from pipeline.datasets.digits import load_digits_dataset
from pipeline.train import evaluate, train

EXP3 = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"


def fine_tune(model, data, epochs: int, seed: int) -> list[float]:
    """Test accuracy before and after every fine-tuning epoch."""
    curve = [evaluate(model, data)]
    train(
        model,
        data,
        epochs=epochs,
        seed=seed,
        progress=False,
        on_epoch_end=lambda e: curve.append(evaluate(model, data)),
    )
    return curve


def epochs_to(curve: list[float], target: float) -> int | None:
    return next((e for e, acc in enumerate(curve) if acc >= target), None)


def one_seed(seed: int, args, data) -> dict:
    torch.manual_seed(seed)
    plain = build("lenet", None)
    t0 = time.perf_counter()
    train(plain, data, epochs=args.plain_epochs, seed=seed, progress=False)
    plain_acc = evaluate(plain, data)
    layers = "all" if args.layers == "all" else args.layers.split(",")
    t1 = time.perf_counter()
    fitted = acl.convert(plain, args.spec, layers=layers, init="fit")
    fit_s = time.perf_counter() - t1
    torch.manual_seed(10_000 + seed)  # the random AKPs
    random = acl.convert(plain, args.spec, layers=layers)
    errors = {}
    for (name, conv), (_, layer_f), (_, layer_r) in zip(
        ((n, m) for n, m in plain.named_modules() if n in dict(acl.acl_layers(fitted))),
        acl.acl_layers(fitted),
        acl.acl_layers(random),
    ):
        target = conv.weight.detach().reshape(-1, *conv.kernel_size)
        mask = torch.tensor([k != "P" for k in layer_f.spec.kinds()])

        def err(layer, target=target, mask=mask):
            k = layer.weight.detach().reshape(target.shape)
            return float(((k - target).flatten(1).norm(dim=1) / target.flatten(1).norm(dim=1))[mask].mean())

        errors[name] = {"fit": err(layer_f), "random": err(layer_r)}
    curves = {"fit": fine_tune(fitted, data, args.epochs, seed), "random": fine_tune(random, data, args.epochs, seed)}
    # Table 3 on the fine-tuned fit-initialised AnaNN: each family replaced by Mean kernels, then all of them
    present = list(dict.fromkeys(s for _, m in acl.acl_layers(fitted) for s in m.spec.counts() if s != "M"))
    ablated = {s: evaluate(acl.ablate(fitted, s), data) for s in present}
    base = evaluate(fitted, data)
    share = acl.attribution(base, ablated, evaluate(acl.ablate(fitted, present), data))
    return {
        "seed": seed,
        "plain_acc": plain_acc,
        "kernel_rel_error": errors,
        "fit_seconds": fit_s,
        "curves": curves,
        "ablation": {"base": base, "ablated": ablated, "attribution": vars(share)},
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--plain-epochs", type=int, default=20)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--spec", default=EXP3)
    p.add_argument("--layers", default="all", help="all, or comma-separated conv names (conv1,conv2)")
    p.add_argument("--targets", default="0.9,0.95,0.97")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the curves here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits_dataset()
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        r = one_seed(seed, args, data)
        runs.append(r)
        errs = ", ".join(f"{n} {e['fit']:.3f} vs {e['random']:.3f}" for n, e in r["kernel_rel_error"].items())
        print(
            f"seed {seed}: plain LeNet {r['plain_acc']:.4f} after {args.plain_epochs} epochs; "
            f"mean analytic-kernel rel error fit vs random: {errs}; fit {r['fit_seconds']:.1f} s; {r['seconds']:.0f} s",
            flush=True,
        )
        for side, curve in r["curves"].items():
            print(f"  {side:>6}: " + " ".join(f"{a:.3f}" for a in curve), flush=True)
        ab, att = r["ablation"], r["ablation"]["attribution"]
        print(
            f"  ablation of the fine-tuned fit AnaNN (acc {ab['base']:.4f}): "
            + ", ".join(f"{s}->M {a:.4f}" for s, a in ab["ablated"].items())
            + f"; all->M loss {att['total']:.4f}, interaction {att['interaction']:.4f} "
            f"({att['share']['interaction']:.0%} of the total loss)",
            flush=True,
        )

    targets = [float(t) for t in args.targets.split(",")]
    print(
        f"\nepochs of fine-tuning to reach a test accuracy (spec {args.spec}, layers {args.layers}; 0 = at conversion)"
    )
    head = ["seed", "after conv. fit", "after conv. random"]
    head += [f">= {t:g} fit" for t in targets] + [f">= {t:g} random" for t in targets]
    head += ["plain-1pt fit", "plain-1pt random", "final fit", "final random"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))

    def fmt(e):
        return f">{args.epochs}" if e is None else str(e)

    for r in runs:
        cf, cr = r["curves"]["fit"], r["curves"]["random"]
        goal = r["plain_acc"] - 0.01
        row = [str(r["seed"]), f"{cf[0]:.3f}", f"{cr[0]:.3f}"]
        row += [fmt(epochs_to(cf, t)) for t in targets] + [fmt(epochs_to(cr, t)) for t in targets]
        row += [fmt(epochs_to(cf, goal)), fmt(epochs_to(cr, goal)), f"{cf[-1]:.3f}", f"{cr[-1]:.3f}"]
        print("| " + " | ".join(row) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
