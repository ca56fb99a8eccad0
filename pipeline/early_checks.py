"""Option values of ``python -m pipeline.export`` checked before torch is imported.

Importing torch, ONNX and the model zoo takes 6-14 s on a busy machine; a typo in
``--arch``, ``--backends``, ``--data``, ``--spec``, ``--model``, a checkpoint path
or a training option is reported here, in well under a second, with the message the
job itself would give. The arch, model, spec and layers messages are owned here: the
job (``pipeline.stages.inputs``, ``pipeline.archs``, ``pipeline.checkpoint``; also an
API) calls these functions rather than holding a copy. Other checks the job keeps
as its own; tests keep those messages equal. Only what needs no model, no torch and
no reading of data is checked here: layer names and folder contents wait for the job.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import re
import shutil
import sys
from pathlib import Path

from pipeline import int8_args
from pipeline.fix_args import problem as fix_problem
from pipeline.prune_args import problem as prune_problem

__all__ = [
    "ARCH_NAMES",
    "DATA_HELP",
    "MAX_TRAIN_BATCH",
    "arch_and_model_problem",
    "arch_problem",
    "check_spec",
    "compiler_problem",
    "cxx_compiler",
    "data_problem",
    "in_memory_data_problem",
    "layers_problem",
    "layers_select_nothing",
    "malformed_model",
    "model_not_importable",
    "model_problem",
    "no_compiler",
    "problem",
    "spec_problem",
    "torchvision_name_malformed",
    "unknown_arch",
]

ARCH_NAMES = (
    "lenet",
    "cnn4",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet18_cifar",
    "resnet34_cifar",
    "mobilenet_v2",
    "vgg11_bn",
    "densenet121",
    "densenet_cifar",
)
"""``pipeline.archs.ARCHS``'s keys, spelled out so that nothing here needs torch (a test keeps them equal)."""
TORCHVISION_PREFIX = "torchvision:"
DATA_HELP = "'digits', 'mnist:DIR', 'cifar10:DIR' or 'folder:DIR[:SIZE]'"
"""Equal to ``pipeline.datasets.DATA_HELP`` (a test keeps them equal)."""
DATA_KINDS = ("mnist", "cifar10", "folder")
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")
MAX_TRAIN_BATCH = 65_536
"""Equal to ``pipeline.train.MAX_BATCH_SIZE`` (a test keeps them equal)."""
MAX_TRAIN_WORKERS = 64
"""Equal to ``pipeline.train.MAX_WORKERS`` (a test keeps them equal)."""
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_ARCH_EXPECTED = (
    f"one of {', '.join(ARCH_NAMES)}, 'torchvision:<name>', or your own 'package.module:factory' "
    "(a callable returning an nn.Module)"
)


def problem(args: argparse.Namespace) -> str | None:
    """The first option value that is wrong, as ``<what>, expected <what>``; None when none is (as far as seen here)."""
    for found in (
        backend_problem(args.backends),
        arch_problem(args.arch),
        model_problem(args.model),
        spec_problem(args.spec),
        layers_problem(args.layers),
        data_problem(args.data),
        one_source_problem(args.checkpoint, args.init_from),
        _path("", args.checkpoint),
        _path("--init-from: ", args.init_from),
        _training(args.batch_size, args.lr, args.workers),
        fix_problem(args.fix_spatial, args.checkpoint, args.fix_guide),
        _path("--fix-guide: ", args.fix_guide),
        prune_problem(args.prune, args.prune_finetune, args.prune_rank, args.prune_align),
        int8_args.problem(args),
        compiler_problem(args.compile_generator),
    ):
        if found:
            return found
    return None


def check_spec(spec: str | None) -> None:
    """Check a spec's syntax before any model exists (so a typo is reported before slow data loading).

    A ratio spec fits every layer and is checked fully; a count spec, or one with a
    ``(CixCo)`` prefix, can only be checked against its layers, so ``pipeline.archs.build`` does that.

    Raises:
        ValueError: malformed spec (as ``acl.parse_spec``).
    """
    from acl.spec import parse_spec  # torch-free

    if spec is None or spec == "none":
        return
    m = re.match(r"\s*\(\s*(\d+)\s*[xX×]\s*(\d+)\s*\)", spec)
    if m:
        parse_spec(spec, int(m.group(1)), int(m.group(2)))
        return
    try:
        parse_spec(spec, 1, 1 << 20)
    except ValueError as e:
        if "counts sum to" in str(e):  # a well-formed count form: its total depends on the layer
            return
        # The synthetic layer's kernel total would only mislead.
        raise ValueError(re.sub(r" \(expected kernels in total: \d+\)$", "", str(e))) from None


def backend_problem(names: tuple[str, ...] | None) -> str | None:
    from deploy.backends import ALL_BACKENDS  # torch-free

    unknown = [b for b in names or () if b not in ALL_BACKENDS]
    if unknown:
        return f"unknown backend(s) {', '.join(unknown)}; expected some of {', '.join(ALL_BACKENDS)}"
    return None


def arch_problem(arch: str | None) -> str | None:
    """What is wrong with an ``--arch`` value, as far as seen without torch or torchvision; None if nothing."""
    if arch is None or arch in ARCH_NAMES:
        return None
    if arch.startswith(TORCHVISION_PREFIX):
        if not arch[len(TORCHVISION_PREFIX) :].isidentifier():
            return torchvision_name_malformed(arch)
        return None  # the name is checked against torchvision's list, which needs torchvision
    if ":" in arch:
        return (
            f"--arch {arch} names your own code; pass it as --model {arch} (which imports and runs it), "
            "expected a built-in name or torchvision:<name> after --arch"
        )
    return unknown_arch(arch)


def unknown_arch(arch: object) -> str:
    return f"unknown --arch {arch!r}; expected {_ARCH_EXPECTED}"


def torchvision_name_malformed(arch: str) -> str:
    return f"--arch {arch!r}: expected 'torchvision:<name>' such as 'torchvision:resnet18'"


def arch_and_model_problem(arch: str | None, model: str | None) -> str | None:
    # On the command line argparse refuses the pair first (an exclusive group): this is the API's message.
    if arch and model:
        return f"--arch {arch} and --model {model} were both given, expected one of them"
    return None


def model_problem(target: str | None) -> str | None:
    """What is wrong with a ``--model`` value without importing it (only its top-level package is looked up)."""
    if target is None:
        return None
    if ":" not in target or target.startswith(TORCHVISION_PREFIX):
        return (
            f"--model {target!r} is not 'package.module:factory'; expected your own factory, "
            "or a built-in name or torchvision:<name> as --arch"
        )
    module_name, _, attr = target.partition(":")
    if not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attr):
        return malformed_model(target)
    top = module_name.split(".")[0]
    # Only the top-level name: finding a submodule would import (run) its package, which the job does later.
    if importlib.util.find_spec(top) is None:
        return model_not_importable(target, module_name, f"No module named {top!r}")
    return None


def malformed_model(target: str) -> str:
    return f"model {target!r} is malformed; expected 'package.module:factory' such as 'mynets.small:build'"


def model_not_importable(target: str, module_name: str, reason: str) -> str:
    """``reason``: the ``ModuleNotFoundError``'s text (``No module named 'x'``)."""
    return (
        f"model {target!r}: cannot import module {module_name!r} ({reason}); expected a module "
        "on the Python path (the working folder, or an installed package)"
    )


def spec_problem(spec: str | None) -> str | None:
    """What is wrong with a ``--spec`` value before any layer exists (a count spec's total waits for its layer)."""
    if spec is not None and not spec.strip():
        return f"--spec {spec!r} is empty, expected a spec such as G0.5P0.5, or none for plain convolutions"
    try:
        check_spec(spec)
    except ValueError as e:
        return str(e)
    return None


def layers_problem(layers: str | None) -> str | None:
    if layers is None or layers.strip() in ("first", "all") or any(n.strip() for n in layers.split(",")):
        return None
    return layers_select_nothing(layers)


def layers_select_nothing(layers: object) -> str:
    return f"--layers {layers!r} selects nothing; expected 'first', 'all' or comma-separated module names"


def data_problem(name: str) -> str | None:
    """A ``--data`` value that no loader of ``pipeline.datasets`` takes (its form only: folders are read later)."""
    kind, sep, rest = name.partition(":")
    if name == "digits" or (sep and rest and kind in DATA_KINDS):
        return None
    return f"unknown --data {name!r}; expected {DATA_HELP}"


def in_memory_data_problem(name: str, paper: str) -> str | None:
    """A ``--data`` that ``pipeline.reproduce --paper explainfix|recos`` cannot use, or None.

    Their experiments index whole image tensors (saliency minibatches from ``x_train``, the
    reversed test images): an image folder is decoded lazily and has none, which raised a
    traceback after training had begun (explainfix) or before anything was written (recos).
    """
    if name.partition(":")[0] != "folder":
        return None
    return (
        f"--data {name!r} is an image folder, decoded lazily, which --paper {paper} cannot use "
        "(its experiments index the images in memory), expected 'digits', 'mnist:DIR' or 'cifar10:DIR'"
    )


def one_source_problem(checkpoint: Path | None, init_from: Path | None) -> str | None:
    if checkpoint is not None and init_from is not None:
        return (
            "--init-from (start training from a plain checkpoint) and --checkpoint (skip training) were both given, "
            "expected one of them"
        )
    return None


def _path(prefix: str, path: Path | None) -> str | None:
    if path is None:
        return None
    if not path.exists():
        return f"{prefix}checkpoint not found: {path}, expected an existing .safetensors or .pt file"
    if not path.is_file():
        return f"{prefix}checkpoint {path} is not a file, expected a .safetensors or .pt file"
    if path.suffix not in CHECKPOINT_SUFFIXES:
        return f"{prefix}checkpoint {path} has suffix {path.suffix!r}, expected .safetensors, .pt or .pth"
    return None


def _training(batch_size: int, lr: float | None, workers: int | None) -> str | None:
    """As ``pipeline.train.check_options`` (the optimizer and AMP mode are argparse choices)."""
    if batch_size < 1:
        return f"--batch-size {batch_size} is not usable, expected a positive integer"
    if batch_size > MAX_TRAIN_BATCH:
        return f"--batch-size {batch_size} is out of range, expected 1 to {MAX_TRAIN_BATCH}"
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        return f"--lr {lr} is not usable, expected a positive finite number"
    if workers is not None and not 0 <= workers <= MAX_TRAIN_WORKERS:
        return f"--workers {workers} is out of range, expected 0 to {MAX_TRAIN_WORKERS}"
    return None


def cxx_compiler() -> str:
    """The C++ compiler torch.compile's inductor runs on the CPU, as its config picks it: ``$CXX``, else g++
    (clang++ on macOS, cl on Windows)."""
    return os.environ.get("CXX", {"darwin": "clang++", "win32": "cl"}.get(sys.platform, "g++"))


def compiler_problem(compile_generator: bool) -> str | None:
    """``--compile-generator`` without a C++ compiler on the PATH (the first training step would fail); None otherwise."""
    if not compile_generator or shutil.which(cxx_compiler()):
        return None
    return no_compiler(cxx_compiler())


def no_compiler(name: str) -> str:
    """The message for a missing or unusable C++ compiler ``name`` under ``--compile-generator``."""
    how = "$CXX" if "CXX" in os.environ else "the default; set CXX to use another"
    return (
        f"--compile-generator needs a C++ compiler for torch.compile and {name!r} ({how}) was not found or does "
        "not work, expected a working one: install g++ (e.g. apt-get install g++), or drop --compile-generator"
    )
