"""``python -m pipeline.export``: train (or load), export, run, validate, report.

With no arguments: trains AnaNN-LeNet (both convolutions ACLs with exp3's ratio
spec) on scikit-learn's handwritten digits and writes everything to
``runs/default``. A thin layer over ``pipeline.stages.run``; nothing heavy is
imported before the arguments are checked (``pipeline.early_checks``), so
``--help`` works without onnxruntime or TensorRT and a typo is reported at once.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import NoReturn

from deploy.backends import ALL_BACKENDS  # torch-free, like everything imported before the arguments are checked
from deploy.cli import HelpFormatter
from pipeline import early_checks
from pipeline.early_checks import ARCH_NAMES, MAX_TRAIN_BATCH
from pipeline.fix_args import add_fix_arguments
from pipeline.int8_args import add_int8_arguments, int8_fields
from pipeline.interrupts import Terminated
from pipeline.interrupts import signals_raise as _signals_raise  # the name pipeline.reproduce imports
from pipeline.prune_args import add_prune_arguments

EXIT_USER_ERROR = 2


def _items(text: str, what: str) -> list[str]:
    """The comma-separated items of ``text``; an empty one (``1,,8``, a trailing comma) is refused, not skipped."""
    items = [v.strip() for v in text.split(",")]
    if not any(items):
        raise argparse.ArgumentTypeError(f"{text!r} is empty, expected {what}")
    if "" in items:
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item (item {items.index('') + 1}), expected {what}")
    twice = next((v for i, v in enumerate(items) if v in items[:i]), None)
    if twice is not None:  # likely a typo for another value, which would then silently be missing
        raise argparse.ArgumentTypeError(f"{text!r} lists {twice} twice, expected {what}")
    return items


def _int_list(text: str) -> tuple[int, ...]:
    what = "comma-separated positive integers such as 1,8,64, each once"
    values = []
    for item in _items(text, what):
        try:
            value = int(item)
        except ValueError:
            value = 0
        if value < 1:
            raise argparse.ArgumentTypeError(f"{text!r} has {item!r}, not a positive integer, expected {what}")
        if value in values:
            raise argparse.ArgumentTypeError(f"{text!r} lists {value} twice, expected {what}")
        values.append(value)
    return tuple(values)


def _path(text: str) -> Path:
    # Path("") is ".": an empty value (an unset shell variable in quotes) would silently mean the current folder.
    if not text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is empty, expected a path (. for the current folder)")
    return Path(text)


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(_items(text, "comma-separated names such as torch,ort-cpu, each once"))


MAX_EPOCHS = 10_000
MAX_LATENCY_BATCH = 4096
"""Latency inputs are tiled to the batch size: 4096 images of 3x224x224 are 2.4 GB of float32."""
MAX_LATENCY_BATCHES = 16
MAX_LATENCY_SECONDS = 10.0
"""``deploy.timing.measure_latency`` stops at 10 s whatever the minimum asked, so a larger value would be ignored."""
MAX_THREADS = 1024
MAX_SEED = 2**32 - 1
"""Augmentation stream keys hold the seed in 32 bits (``pipeline.datasets.augment.epoch_key``)."""


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, ``error: <what>, expected <what>``, and exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        if len(message) > 400:  # argparse quotes the bad value: a 100 kB argument is not echoed back
            message = f"{message[:400]}... ({len(message)} characters)"
        if "expected" not in message:
            message += f", expected the arguments described by {self.prog} --help"
        self.exit(EXIT_USER_ERROR, f"error: {message}\n")


def check_args(args: argparse.Namespace) -> str | None:
    """The first argument outside its stated limits, as ``<what>, expected <what>``; None when all are usable."""
    import math

    def shown(value) -> str:  # :g rounds large integers (the seed's 2**32 - 1 to 4.29497e+09)
        return f"{value:g}" if isinstance(value, float) else str(value)

    def out_of(flag: str, value, lo, hi) -> str | None:
        ok = value is None or (math.isfinite(value) and lo <= value <= hi)
        return None if ok else f"{flag} {shown(value)} is out of range, expected {shown(lo)} to {shown(hi)}"

    if len(args.batch_sizes) > MAX_LATENCY_BATCHES:
        return f"--batch-sizes lists {len(args.batch_sizes)} sizes, expected at most {MAX_LATENCY_BATCHES}"
    big = [b for b in args.batch_sizes if b > MAX_LATENCY_BATCH]
    if big:
        return f"--batch-sizes {big[0]} is out of range, expected 1 to {MAX_LATENCY_BATCH}"
    for problem in (
        out_of("--epochs", args.epochs, 0, MAX_EPOCHS),
        out_of("--threads", args.threads, 1, MAX_THREADS),
        out_of("--latency-seconds", args.latency_seconds, 0, MAX_LATENCY_SECONDS),
        out_of("--seed", args.seed, 0, MAX_SEED),
    ):
        if problem:
            return problem
    return None


def parser() -> argparse.ArgumentParser:
    """The command's parser; each ``_add_*_arguments`` adds one group of options (a new group: one more line)."""
    p = _Parser(
        prog="python -m pipeline.export",
        description=__doc__.split("\n\n")[0].split(": ", 1)[1],
        formatter_class=HelpFormatter,
    )
    # --help lists the options in the order they are added.
    _add_input_arguments(p)
    _add_model_arguments(p)
    _add_training_arguments(p)
    _add_run_arguments(p)
    _add_serving_arguments(p)
    add_int8_arguments(p)
    add_fix_arguments(p)
    add_prune_arguments(p)
    return p


def _add_input_arguments(p: argparse.ArgumentParser) -> None:
    """The output folder, and what the run starts from: --out, --checkpoint, --spec, --data."""
    p.add_argument(
        "--out", type=_path, default=Path("runs/default"), help="output folder (must be new or empty, or use --force)"
    )
    p.add_argument(
        "--checkpoint",
        type=_path,
        help="use this trained model (.safetensors, or weights-only .pt) instead of training",
    )
    p.add_argument(
        "--spec",
        help="arrangement spec for every ACL, count or ratio form, or 'none' for plain convolutions "
        "(default: the checkpoint's, else exp3's ratio G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5)",
    )
    p.add_argument(
        "--data",
        default="digits",
        help="data set from local files, nothing is downloaded: 'digits' (scikit-learn's, shipped), "
        "'mnist:DIR' (MNIST's four IDX files, .gz or not), 'cifar10:DIR' (CIFAR-10's binary version: "
        "cifar-10-batches-bin or its parent), 'folder:DIR[:SIZE]' (DIR/<class>/*.jpg|jpeg|png, or DIR/train and "
        "DIR/val; images cropped to SIZE, default 224)",
    )


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The network and its ACLs: --arch or --model, --layers, --init-from."""
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--arch",
        help=f"architecture: one of {', '.join(ARCH_NAMES)}, or torchvision:<name> (needs an importable "
        "torchvision; never downloads weights) (default: the checkpoint's, else lenet)",
    )
    which.add_argument(
        "--model",
        metavar="PACKAGE.MODULE:FACTORY",
        help="your own network instead of --arch: imports that module and calls the factory (THIS RUNS YOUR CODE), "
        "passing num_classes and in_channels when it takes them; it must return an nn.Module. "
        "A checkpoint of such a model needs the same --model again to be loaded",
    )
    p.add_argument(
        "--layers",
        help="which Conv2d layers become ACLs: 'first' (ACL-X), 'all' (AnaNN-X) or comma-separated module names "
        "such as conv1,layer1.0.conv1; only spatial convolutions (kernels at least 2x2): 'first' and 'all' leave "
        "1x1, 1xk and kx1 ones plain (default: the checkpoint's, else all)",
    )
    p.add_argument(
        "--init-from",
        type=_path,
        metavar="PATH",
        help="start training from this trained plain (non-ACL) checkpoint of the same architecture "
        "(.safetensors, or a weights-only .pt state dict): the ACLs start from the convolutions they replace",
    )


def _add_training_arguments(p: argparse.ArgumentParser) -> None:
    """--epochs, --batch-size, --optimizer, --lr, --workers, --amp, --compile-generator, --no-resume."""
    p.add_argument("--epochs", type=int, default=15, help=f"training epochs, 0 to {MAX_EPOCHS}")
    p.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help=f"training batch size, 1 to {MAX_TRAIN_BATCH} (per process under torchrun)",
    )
    p.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam: constant learning rate; sgd: Nesterov momentum 0.9, weight decay 5e-4 (not on AKPs), "
        "cosine schedule (ResNets on CIFAR)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 2e-3 for adam, 0.1 for sgd)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: 0 for in-memory data, min(4, cores) for image folders)",
    )
    p.add_argument(
        "--amp",
        choices=("auto", "off", "bf16", "fp16"),
        default="auto",
        help="mixed precision for training: auto (bf16 on a CUDA device that has it, else off), off, "
        "bf16 (CUDA, or CPU when asked), fp16 (CUDA only)",
    )
    p.add_argument(
        "--compile-generator",
        action="store_true",
        help="train the ACLs with the compiled kernel generator (torch.compile; the first step compiles for some "
        "seconds; needs a C++ compiler)",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start training at epoch 1 even if an interrupted run with the same settings left its state "
        "(kept in .<out-name>.resume beside --out after every epoch, removed when the run completes)",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """What is timed and how the run goes: --batch-sizes, --backends, --force, --seed, --threads, ...."""
    p.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=(1, 8, 64),
        help=f"batch sizes to time, comma-separated, each 1 to {MAX_LATENCY_BATCH}, at most {MAX_LATENCY_BATCHES} sizes",
    )
    p.add_argument(
        "--backends",
        type=_name_list,
        default=None,
        help=f"comma-separated subset of {','.join(ALL_BACKENDS)}; torch, the reference, always runs "
        "(default: all; unavailable ones are reported as such)",
    )
    p.add_argument("--force", action="store_true", help="replace a previous run's outputs in --out")
    p.add_argument("--seed", type=int, default=0, help=f"training seed, 0 to {MAX_SEED}")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"CPU threads for PyTorch and ONNX Runtime, 1 to {MAX_THREADS} (default: all cores)",
    )
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=1.0,
        help=f"minimum timed seconds per backend and batch size, 0 to {MAX_LATENCY_SECONDS:g} (the timer's own cap)",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bars (the per-epoch lines are printed either way)"
    )


def _add_serving_arguments(p: argparse.ArgumentParser) -> None:
    """Triton: --triton-repo, --serve-test."""
    p.add_argument(
        "--triton-repo",
        type=_path,
        default=None,
        metavar="DIR",
        help="also write a Triton model repository (onnxruntime and python backends; tensorrt_plan when an engine "
        "was built), batching set from the measured ONNX Runtime latency; DIR must be new or empty, or an earlier "
        "repository with --force",
    )
    p.add_argument(
        "--serve-test",
        action="store_true",
        help="serve the repository's python-backend model with a real Triton server (nvidia-pytriton, the serve "
        "environment): parity with PyTorch and a load test at 1, 4, 16 clients (server start plus at most 8 s per "
        "level); "
        "reported as not available where no server can run",
    )


def _interrupted_message(signum: int, out: Path, *, imported: bool = True) -> str:
    kept = ""
    if imported:  # else torch may be half imported: importing it again (pipeline.resume does) could fail
        from pipeline.resume import ResumeStore

        resume = ResumeStore.beside(out, {}).folder
        kept = f"; training state kept in {resume}: the same command resumes it" if resume.is_dir() else ""
    return (
        f"interrupted by {signal.Signals(signum).name}: {out} is as it was before this run, "
        f"or holds this run's complete outputs{kept}"
    )


def job_config(args: argparse.Namespace):
    """The ``JobConfig`` of parsed arguments (each option is one field)."""
    from pipeline.stages import JobConfig

    return JobConfig(
        out=args.out,
        checkpoint=args.checkpoint,
        spec=args.spec,
        data=args.data,
        arch=args.arch,
        model=args.model,
        layers=args.layers,
        init_from=args.init_from,
        epochs=args.epochs,
        batch_sizes=args.batch_sizes,
        backends=args.backends,
        force=args.force,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
        latency_seconds=args.latency_seconds,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        workers=args.workers,
        amp=args.amp,
        compile_generator=args.compile_generator,
        resume=not args.no_resume,
        triton_repo=args.triton_repo,
        serve_test=args.serve_test,
        fix_spatial=args.fix_spatial,
        fix_guide=args.fix_guide,
        prune=args.prune,
        prune_finetune=args.prune_finetune,
        prune_rank=args.prune_rank,
        prune_align=args.prune_align,
        **int8_fields(args),
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    problem = check_args(args) or early_checks.problem(args)
    if problem:
        p.error(problem)
    try:
        with _signals_raise():  # torch and ONNX take seconds to import: a signal meanwhile is one line too
            from export.atomic import NO_SPACE_ERRNOS, no_space_error
            from export.verify import ExportVerificationError
            from pipeline.errors import UserError
            from pipeline.stages import run
    except (Terminated, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        print(_interrupted_message(signum, args.out, imported=False), file=sys.stderr)
        return 128 + signum
    cfg = job_config(args)
    try:
        with _signals_raise():
            report = run(cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        if e.errno not in NO_SPACE_ERRNOS:
            raise
        # The machine's state, not a bug: one line, like bad input (the staging folder is already removed).
        print(f"error: {no_space_error(e, None if e.filename else args.out)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (Terminated, KeyboardInterrupt) as e:
        signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
        print(_interrupted_message(signum, args.out), file=sys.stderr)
        return 128 + signum
    except ExportVerificationError as e:
        # Not the user's mistake, and no traceback helps: the numbers say what went wrong.
        print(f"failed: {e}; nothing was written to --out", file=sys.stderr)
        return 1
    if report is None:  # a non-zero DDP rank: rank 0 writes the outputs
        return 0
    failed = report["verdict"]["failed"]  # parity rows and the FP16 range checks
    if failed:
        print(f"checks FAILED for {', '.join(failed)} (see {args.out}/report.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
