"""``python -m pipeline.export``: train (or load), export, run, validate, report.

With no arguments: trains AnaNN-LeNet (both convolutions ACLs with exp3's ratio
spec) on scikit-learn's handwritten digits and writes everything to
``runs/default``. A thin layer over ``pipeline.stages.run``; nothing heavy is
imported before the arguments are parsed, so ``--help`` works without
onnxruntime or TensorRT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USER_ERROR = 2


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 1,8,64, got {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers such as 1,8,64, got {text!r}")
    return values


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.export",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/default"), help="output folder (must be new or empty, or use --force)"
    )
    p.add_argument(
        "--checkpoint", type=Path, help="use this trained model (.safetensors, or weights-only .pt) instead of training"
    )
    p.add_argument(
        "--spec",
        help="arrangement spec for every ACL, count or ratio form, or 'none' for plain convolutions "
        "(default: the checkpoint's, else exp3's ratio G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="'digits' (scikit-learn's, shipped) or 'mnist:DIR' (MNIST's four IDX files in DIR, .gz or not; nothing is downloaded)",
    )
    p.add_argument("--arch", choices=("lenet", "cnn4"), help="architecture (default: the checkpoint's, else lenet)")
    p.add_argument("--epochs", type=int, default=15, help="training epochs")
    p.add_argument("--batch-sizes", type=_int_list, default=(1, 8, 64), help="batch sizes to time, comma-separated")
    p.add_argument(
        "--backends",
        type=_name_list,
        default=None,
        help="comma-separated subset of torch,ort-cpu,ort-cuda,ort-trt,trt,trt-fp16 (default: all; unavailable ones are reported as such)",
    )
    p.add_argument("--force", action="store_true", help="replace a previous run's outputs in --out")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for PyTorch and ONNX Runtime (default: all cores)"
    )
    p.add_argument(
        "--latency-seconds", type=float, default=1.0, help="minimum timed seconds per backend and batch size"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from pipeline.errors import UserError
    from pipeline.stages import JobConfig, run

    cfg = JobConfig(
        out=args.out,
        checkpoint=args.checkpoint,
        spec=args.spec,
        data=args.data,
        arch=args.arch,
        epochs=args.epochs,
        batch_sizes=args.batch_sizes,
        backends=args.backends,
        force=args.force,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        latency_seconds=args.latency_seconds,
    )
    try:
        report = run(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing was written to --out", file=sys.stderr)
        return 130
    if report is None:  # a non-zero DDP rank: rank 0 writes the outputs
        return 0
    failed = [k for k, v in report["parity"].items() if v.get("available", True) and not v.get("passed")]
    if failed:
        print(f"parity FAILED for {', '.join(failed)} (see {args.out}/report.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
