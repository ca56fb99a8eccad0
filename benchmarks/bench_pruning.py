"""ChannelPrune, deployed: the pruned AnaNN-ResNet-18's static file and ONNX Runtime CPU latency against the unpruned one.

One run, side by side: the unpruned model (trained ``--epochs``) and the same
model pruned at each ``--percents`` (spatial kernels zeroed, Eq. 4 saliency on 60
training images, ``acl.channel_prune``), then FillZero and ``--finetune`` epochs.
For each: test accuracy, the exactness check (pruned = zeroed model, before
FillZero, fp32 tolerance row), ONNX Runtime parity of its static file (fp32 row),
the static file's size, and p50 latency per call at batch 1 and 32 (rounds alternate
the order of the sessions; each cell is the median over rounds).
``--rank``: the paper's saliency ranking (``sal``), saliency per multiply-add
(``s/flop``, ours), per share of parameters plus multiply-adds (``s/cost``, ours;
``acl.pruning_rank``) and whole channel classes per that share (``ch/cost``, ours;
``acl.pruning_classes``), side by side by default. ``--multiple 1,8``:
also with every pruned convolution's channels rounded up to a multiple of 8 (``acl.pruning_align``).
Target (issue 22): at 90 %, file <= 0.5x and batch-32 latency <= 0.7x the unpruned.

    python benchmarks/bench_pruning.py                                 # digits (1x32x32, upsampled), resnet18_cifar
    python benchmarks/bench_pruning.py --data cifar10:DIR --epochs 30  # CIFAR-10 files
    python benchmarks/bench_pruning.py --arch resnet18 --image 224     # the ImageNet stem at 224 (digits upsampled)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import acl
import export
from acl.pruning_rank import RANKINGS
from deploy.runners import OrtRunner, quiet_polygraphy
from deploy.timing import measure_latency
from export.compare import TOLERANCES, compare_outputs
from pipeline.archs import DEFAULT_SPEC, build
from pipeline.archs.calibrate import trained_looking_bn
from pipeline.data import load_dataset, load_digits_dataset
from pipeline.train import accuracy, train


def _resized(data, size: int):
    """Test images at ``size`` x ``size`` (bilinear) when the arch wants another size than the data's."""
    x = data.x_test
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def prune_one(model, data, saliency, percent: float, rank: str, multiple: int, args) -> tuple[torch.nn.Module, dict]:
    """The pruned, FillZero'd, fine-tuned copy of ``model`` and its row (accuracy, exactness)."""
    finetune, seed = args.finetune, args.seed
    costs = acl.rank_inputs(model, list(saliency.kernels), data.x_train[:1], rank)
    masks, emptied = acl.zero_masks(saliency, percent, rank=rank, **costs)
    result = acl.channel_prune(model, masks, data.x_train[:2], multiple=multiple)
    with torch.no_grad():
        x = data.x_test[:256]
        exact = compare_outputs(result.zeroed(x).numpy(), result.model(x).numpy(), TOLERANCES["fp32"])
    pruned_acc = accuracy(result.model, data.x_test, data.y_test)
    final = acl.fill_zero(result, seed=seed)
    if finetune:
        train(final, data, epochs=finetune, progress=False, seed=seed)
    final.eval()
    row = {"exact": exact["passed"], "exact_max_abs": exact["max_abs_err"], "pruned_acc": pruned_acc,
           "acc": accuracy(final, data.x_test, data.y_test), "kept_one": emptied, "removed": _removed(result),
           "kept": result.kept, "folded": sum(result.folded.values()), "by_stage": _by_stage(result)}  # fmt: skip
    return final, row


def _by_stage(result) -> dict[str, str]:
    """Output channels left per stage of spatial layers (``layer3``: kept/before), to see where pruning went."""
    out: dict[str, list[int]] = {}
    for n, c in result.channels.items():
        if n in result.masks:
            before, after = c["out"]
            acc = out.setdefault(n.split(".")[0], [0, 0])
            acc[0], acc[1] = acc[0] + after, acc[1] + before
    return {k: f"{a}/{b}" for k, (a, b) in out.items()}


def _removed(result) -> dict[str, int]:
    """Output channels of spatial layers whose kernels were all zeroed, against those removed."""
    rows = sum(int(m.all(1).sum()) for m in result.masks.values())
    gone = sum(c["out"][0] - c["out"][1] for n, c in result.channels.items() if n in result.masks)
    return {"all_zero_rows": rows, "removed": gone, "of": sum(m.shape[0] for m in result.masks.values())}


def _trained_longer(base, data, args) -> float | None:
    """Accuracy of the unpruned model trained ``--finetune`` more epochs: the control for the pruned rows' budget."""
    if not args.finetune:
        return None
    control = copy.deepcopy(base)
    train(control, data, epochs=args.finetune, progress=False, seed=args.seed)
    return accuracy(control.eval(), data.x_test, data.y_test)


def ort_parity(model, path: Path, x: torch.Tensor) -> bool:
    with torch.no_grad():
        ref = model(x).numpy()
    runner = OrtRunner(path, name="static")
    runner.activate()
    out = runner.infer({"input": x.numpy()})
    runner.deactivate()
    return bool(compare_outputs(ref, next(iter(out.values())), TOLERANCES["fp32"])["passed"])


def latencies(files: dict[str, Path], image, batches, rounds: int, seconds: float) -> dict[tuple[str, int], float]:
    runners = {k: OrtRunner(p, name=k) for k, p in files.items()}
    for r in runners.values():
        r.activate()
    rng, p50 = np.random.default_rng(0), {}
    for rnd in range(rounds):
        order = list(runners) if rnd % 2 == 0 else list(runners)[::-1]
        for b in batches:
            x = rng.standard_normal((b, *image)).astype(np.float32)
            for name in order:
                s = measure_latency(runners[name], {"input": x}, warmup=2, min_iters=5 if b > 1 else 20,
                                    min_seconds=seconds)  # fmt: skip
                p50.setdefault((name, b), []).append(s.p50_ms)
    for r in runners.values():
        r.deactivate()
    return {k: statistics.median(v) for k, v in p50.items()}


def trained_base(base, data, args) -> None:
    """Train ``base`` (or load it from ``--base``, so several pruning runs share one trained model)."""
    if args.base and args.base.exists():
        base.load_state_dict(torch.load(args.base, weights_only=True))
    elif args.epochs:
        train(base, data, epochs=args.epochs, progress=False, seed=args.seed)
    else:  # a mechanics check on a loaded machine: no training, measured BatchNorm statistics (accuracy is chance)
        trained_looking_bn(base, tuple(data.input_shape), seed=args.seed)
    base.eval()
    if args.base and not args.base.exists():
        torch.save(base.state_dict(), args.base)


SHORT = {"saliency": "sal", "saliency-per-flop": "s/flop", "saliency-per-cost": "s/cost", "channel-per-cost": "ch/cost"}


def _ranks(text: str) -> str:
    bad = [r for r in text.split(",") if r not in RANKINGS]
    if bad:
        raise argparse.ArgumentTypeError(f"ranking {bad[0]!r}, expected {', '.join(RANKINGS)} (comma-separated)")
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="resnet18_cifar")
    p.add_argument("--spec", default=DEFAULT_SPEC)
    p.add_argument("--data", default="digits")
    p.add_argument("--epochs", type=int, default=10, help="training epochs of the unpruned model (0: untrained)")
    p.add_argument("--finetune", type=int, default=3)
    p.add_argument("--percents", default="50,90")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rank", default=",".join(RANKINGS), type=_ranks,
                   help="rankings to compare, comma-separated: saliency (the paper's), saliency-per-flop, saliency-per-cost, "
                   "channel-per-cost (ours)")
    p.add_argument("--multiple", default="1",
                   help="comma-separated: each pruned convolution keeps a multiple of this many channels (exact; 8 or "
                   "16 keeps ONNX Runtime's blocked NCHWc layout, acl.pruning_align)")
    p.add_argument("--base", type=Path, help="trained unpruned state dict: loaded if it exists, else saved there")
    p.add_argument("--image", type=int, help="digits upsampled to N x N (224 for --arch resnet18)")
    args = p.parse_args()
    if args.image and args.data != "digits":
        p.error(f"--image {args.image} with --data {args.data}, expected --data digits (other sets keep their size)")
    quiet_polygraphy()
    data = load_digits_dataset(image_size=args.image) if args.image else load_dataset(args.data)
    torch.manual_seed(args.seed)
    base = build(args.arch, args.spec, in_channels=data.channels, num_classes=data.num_classes)
    begin = time.perf_counter()
    trained_base(base, data, args)
    print(f"trained {args.arch} ({args.spec}) {args.epochs} epochs on {data.describe()} in {time.perf_counter() - begin:.0f} s")
    models, rows = {"unpruned": base}, {"unpruned": {"acc": accuracy(base, data.x_test, data.y_test)}}
    rows["unpruned"]["acc_more"] = _trained_longer(base, data, args)
    s = acl.kernel_saliency(base, data.x_train[:60], data.y_train[:60], minibatches=15, batch_size=4)
    for pct in [float(v) for v in args.percents.split(",")]:
        for rank in args.rank.split(","):
            for mult in [int(v) for v in args.multiple.split(",")]:
                key = f"{pct:g} % {SHORT[rank]}" + (f" /{mult}" if mult > 1 else "")
                models[key], rows[key] = prune_one(base, data, s, pct, rank, mult, args)
                print(f"pruned {key}: {rows[key]}", flush=True)
    image = tuple(data.input_shape)
    with tempfile.TemporaryDirectory() as d:
        files = {k: export.to_onnx(m, Path(d) / f"{i}.onnx", (1, *image)) for i, (k, m) in enumerate(models.items())}
        for k, m in models.items():
            rows[k] |= {"ort": ort_parity(m, files[k], data.x_test[:64]), "bytes": files[k].stat().st_size,
                        "params": sum(q.numel() for q in acl.bake(m).parameters())}  # fmt: skip
        p50 = latencies(files, image, (1, 32), args.rounds, args.seconds)
    report(rows, p50, args)


def report(rows: dict, p50: dict, args) -> None:
    base = rows["unpruned"]
    print(f"\nonnxruntime CPU, torch threads {torch.get_num_threads()}, {args.rounds} rounds, fine-tune {args.finetune} "
          "epochs; p50 per call in ms")  # fmt: skip
    print(f"{'model':>18s} {'acc':>6s} {'pruned':>6s} {'exact':>5s} {'ort':>4s} {'values':>10s} {'MB':>6s} {'size':>5s} "
          f"{'b1 ms':>7s} {'b1 x':>5s} {'b32 ms':>8s} {'b32 x':>5s}")  # fmt: skip
    for k, r in rows.items():
        exact = "-" if "exact" not in r else ("pass" if r["exact"] else "FAIL")
        pruned = f"{r['pruned_acc']:.3f}" if "pruned_acc" in r else "-"
        print(f"{k:>18s} {r['acc']:6.3f} {pruned:>6s} {exact:>5s} {'pass' if r['ort'] else 'FAIL':>4s} "
              f"{r['params']:10,d} {r['bytes'] / 1e6:6.2f} {r['bytes'] / base['bytes']:5.2f} "
              f"{p50[k, 1]:7.2f} {p50[k, 1] / p50['unpruned', 1]:5.2f} {p50[k, 32]:8.2f} "
              f"{p50[k, 32] / p50['unpruned', 32]:5.2f}")  # fmt: skip
    if base.get("acc_more") is not None:  # pruned rows trained --finetune epochs more than the unpruned one
        print(f"unpruned trained {args.finetune} more epochs (the pruned rows' fine-tuning budget): acc {base['acc_more']:.3f}")
    print("sal: the paper's global saliency ranking; s/flop: saliency per multiply-add; s/cost: saliency per share of "
          "parameters plus share of multiply-adds; ch/cost: whole channel classes per that share (ours); /8: channels rounded "
          "up to multiples of 8")
    print("acc: test accuracy (pruned rows after FillZero and fine-tuning); pruned: before FillZero; exact: the pruned "
          "model equals the zeroed one (fp32 row); ort: the static file against its PyTorch model (fp32 row)")  # fmt: skip


if __name__ == "__main__":
    main()
