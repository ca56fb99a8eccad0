"""Bad-input corpus: every user error is one line ``error: <what>, expected <what>``, exit 2, nothing touched.

Each case builds its bad input in a fresh folder and runs a CLI on it: ``python -m
pipeline.export`` with ``--out`` pointing at a copy of an earlier good run and
``--force`` (so a case that got through would replace it), or ``python -m
deploy.tensorrt check``. A case states its exit code and a fragment of its message,
and the test checks that no traceback appears, that exactly one ``error:`` line is
printed (the last one), that it says what was expected and stays short, and that
the earlier run's files are byte for byte unchanged. Every case fails before
training. Most run in-process (fast); those marked ``subprocess`` run the real
entry point: the import-free early checks (a fraction of a second each), one case
found after torch is imported (the checkpoint's metadata, a few seconds of
imports) and the TensorRT tool's own argument error.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from tests.conftest import digest
from tests.pipeline.conftest import SHORT_JOB
from tests.pipeline.test_data_models import make_mnist, write_idx
from tests.pipeline.test_datasets import cifar_records, make_cifar, make_folder, write_image

ROOT = Path(__file__).resolve().parents[2]
# A case that wrongly got through trains one short epoch, not fifteen.
FAST = ["--epochs", "1", *SHORT_JOB]
MAX_ERROR_CHARS = 700
"""An error line quotes user input clipped; paths of the test's temporary folders make up most of it."""


@pytest.fixture()
def good_run(lenet_run) -> Path:
    """The default job's run (tests/pipeline/conftest.py); each case works on a copy."""
    return lenet_run["out"]


# --- builders of bad inputs: (tmp folder, good run) -> the case's own arguments ---------------


def _ckpt(tmp: Path, good: Path, *, meta=None, drop=(), nan=None, name="bad.safetensors") -> str:
    """The good run's checkpoint with metadata overridden, tensors dropped or a NaN written in."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    src = good / "model.safetensors"
    tensors = load_file(str(src))
    with safe_open(str(src), framework="pt") as f:
        md = dict(f.metadata())
    md.update(meta or {})
    for k in drop:
        del tensors[k]
    if nan is not None:
        tensors[nan] = tensors[nan].clone()
        tensors[nan].view(-1)[0] = float("nan")
    path = tmp / name
    save_file(tensors, str(path), metadata=md)
    return str(path)


def _file(tmp: Path, name: str, data: bytes) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _mnist(tmp: Path, **kw) -> Path:
    return make_mnist(tmp / "mnist", n_train=30, n_test=10, **kw)


def _mnist_with(tmp: Path, stem: str, data: bytes) -> list[str]:
    """A good small MNIST folder whose file ``stem`` is replaced by ``data`` (``.gz`` when ``stem`` ends so)."""
    folder = _mnist(tmp)
    plain = stem.removesuffix(".gz")
    (folder / plain).unlink()
    (folder / stem).write_bytes(data)
    return ["--data", f"mnist:{folder}"]


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


def _cifar_with(tmp: Path, name: str, data: bytes | None) -> list[str]:
    folder = make_cifar(tmp / "cifar", n_train=4, n_test=10)
    if data is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(data)
    return ["--data", f"cifar10:{folder.parent}"]


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width x height`` pixels: no pixel data follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _folder_split(tmp: Path, val_name: str, val_bytes: bytes) -> list[str]:
    """``train``/``val`` image folders whose val split holds one bad file among good ones."""
    root = tmp / "images"
    make_folder(root / "train", per_class=3)
    make_folder(root / "val", per_class=1)
    _file(root / "val" / "red", val_name, val_bytes)
    return ["--data", f"folder:{root}:16"]


def _constant_cifar(tmp: Path) -> list[str]:
    """CIFAR-10 records whose blue plane is 0 in every image: that channel cannot be standardised."""
    folder = make_cifar(tmp / "cifar", n_train=4, n_test=10)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)]:
        rec = np.frombuffer((folder / name).read_bytes(), dtype=np.uint8).reshape(-1, 3073).copy()
        rec[:, 1 + 2 * 1024 :] = 0
        (folder / name).write_bytes(rec.tobytes())
    return ["--data", f"cifar10:{folder}"]


def _truncated_gz(tmp: Path) -> list[str]:
    folder = _mnist(tmp, gz=True)
    target = folder / "train-images-idx3-ubyte.gz"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return ["--data", f"mnist:{folder}"]


def _pt(tmp: Path, obj, name="bad.pt") -> str:
    import torch

    path = tmp / name
    torch.save(obj, str(path))
    return str(path)


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, Path], list[str]]
    code: int
    fragment: str
    tool: str = "export"  # or "trt": python -m deploy.tensorrt
    subprocess: bool = False
    says_expected: bool = True  # False: a message made outside this files (see the case)


def arg(*args: str) -> Callable[[Path, Path], list[str]]:
    return lambda tmp, good: list(args)


SPEC_100K = "G" + "1" * 100_000

CASES = [
    # --- command line: pipeline.export -------------------------------------------------------
    Case("threads-negative", arg("--threads", "-1"), 2, "--threads -1", subprocess=True),
    Case("threads-zero", arg("--threads", "0"), 2, "--threads 0"),
    Case("threads-huge", arg("--threads", "100000"), 2, "--threads 100000"),
    Case("latency-nan", arg("--latency-seconds", "nan"), 2, "--latency-seconds nan"),
    Case("latency-negative", arg("--latency-seconds", "-1"), 2, "--latency-seconds -1"),
    Case("latency-inf", arg("--latency-seconds", "inf"), 2, "--latency-seconds inf"),
    Case("latency-huge", arg("--latency-seconds", "1e9"), 2, "--latency-seconds 1e+09"),
    Case("batch-sizes-huge", arg("--batch-sizes", "1,100000"), 2, "--batch-sizes", subprocess=True),
    Case("batch-sizes-zero", arg("--batch-sizes", "0,8"), 2, "--batch-sizes"),
    Case("batch-sizes-text", arg("--batch-sizes", "a,b"), 2, "--batch-sizes"),
    Case("batch-sizes-empty", arg("--batch-sizes", ","), 2, "--batch-sizes"),
    # an empty item was once skipped: 1,,8 ran as 1,8 (issue 18)
    Case("batch-sizes-empty-item", arg("--batch-sizes", "1,,8"), 2, "'1,,8' has an empty item (item 2)"),
    Case("batch-sizes-trailing-comma", arg("--batch-sizes", "1,8,"), 2, "'1,8,' has an empty item (item 3)"),
    Case("batch-sizes-twice", arg("--batch-sizes", "8,1,8"), 2, "'8,1,8' lists 8 twice"),
    Case("backends-empty-item", arg("--backends", "ort-cpu,,torch"), 2, "'ort-cpu,,torch' has an empty item"),
    Case("backends-empty", arg("--backends", ""), 2, "--backends: '' is empty"),  # once meant every backend
    Case("layers-empty-item", arg("--layers", "conv1,,conv2"), 2, "'conv1,,conv2' has an empty item (item 2)"),
    Case("epochs-negative", arg("--epochs", "-1"), 2, "--epochs -1"),
    Case("epochs-text", arg("--epochs", "many"), 2, "--epochs"),
    Case("epochs-huge", arg("--epochs", "10000000"), 2, "--epochs 10000000"),
    Case("batch-size-zero", arg("--batch-size", "0"), 2, "--batch-size 0"),
    Case("batch-size-huge", arg("--batch-size", "100000000"), 2, "--batch-size 100000000"),
    Case("lr-nan", arg("--lr", "nan"), 2, "--lr nan"),
    Case("lr-negative", arg("--lr", "-0.1"), 2, "--lr -0.1"),
    Case("workers-negative", arg("--workers", "-1"), 2, "--workers -1"),
    Case("optimizer-unknown", arg("--optimizer", "lbfgs"), 2, "--optimizer"),
    Case("amp-fp16-without-cuda", arg("--amp", "fp16"), 2, "--amp fp16"),
    Case("out-empty", arg("--out", ""), 2, "--out: '' is empty"),
    Case("triton-repo-empty", arg("--triton-repo", ""), 2, "--triton-repo: '' is empty"),
    Case("seed-negative", arg("--seed", "-1"), 2, "--seed -1"),
    Case("seed-huge", arg("--seed", str(2**70)), 2, "--seed"),
    Case("unknown-flag", arg("--bogus"), 2, "unrecognized arguments: --bogus", subprocess=True),
    Case("arch-and-model", arg("--arch", "lenet", "--model", "a.b:c"), 2, "not allowed with"),
    Case("backends-unknown", arg("--backends", "ort-cpu,tpu"), 2, "unknown backend(s) tpu"),
    Case("data-unknown", arg("--data", "imagenet"), 2, "unknown --data 'imagenet'"),
    Case("arch-unknown", arg("--arch", "lenet9000"), 2, "lenet9000"),
    # acl.conversion's message lists the layers there are, but not yet as "expected ..."
    Case("layers-unknown", arg("--layers", "conv9"), 2, "conv9"),
    Case("model-not-importable", arg("--model", "no_such_package_xyz.mod:make"), 2, "no_such_package_xyz"),
    Case(
        "init-from-and-checkpoint",
        lambda tmp, good: [
            "--init-from",
            str(good / "model.safetensors"),
            "--checkpoint",
            str(good / "model.safetensors"),
        ],
        2,
        "expected one of them",
    ),
    # --- specs ---------------------------------------------------------------------------------
    Case("spec-empty", arg("--spec", ""), 2, "--spec ''"),
    Case("spec-blank", arg("--spec", "   "), 2, "--spec '   '"),
    Case("spec-ratio-sum", arg("--spec", "G0.5P0.4"), 2, "ratios sum to 0.9"),
    Case("spec-unknown-symbol", arg("--spec", "X0.5P0.5"), 2, "unknown or malformed token"),
    Case("spec-negative-ratio", arg("--spec", "G-0.5P1.5"), 2, "negative"),
    Case("spec-100k", arg("--spec", SPEC_100K), 2, "characters)", subprocess=True),
    Case("spec-huge-exponent", arg("--spec", "G1e-999999999P1.0"), 2, "bad arrangement spec"),
    Case("spec-count-total", arg("--spec", "P7"), 2, "expected kernels in total: 6"),
    Case("spec-prefix-mismatch", arg("--spec", "(3x64)G30Lg15Lt15Tf36P96"), 2, "disagrees with the layer"),
    Case("spec-unclosed-brace", arg("--spec", "G{0.5P0.5"), 2, "bad arrangement spec"),
    # --- checkpoints -----------------------------------------------------------------------------
    Case("ckpt-missing", arg("--checkpoint", "/no/such.safetensors"), 2, "checkpoint not found: /no/such.safetensors"),
    Case("ckpt-zero-bytes", lambda t, g: ["--checkpoint", _file(t, "e.safetensors", b"")], 2, "corrupt"),
    Case("ckpt-garbage", lambda t, g: ["--checkpoint", _file(t, "g.safetensors", b"\x00" * 100)], 2, "corrupt"),
    Case("ckpt-suffix", lambda t, g: ["--checkpoint", _file(t, "model.txt", b"hello")], 2, "suffix '.txt'"),
    Case("ckpt-folder", lambda t, g: ["--checkpoint", str(t)], 2, "is not a file"),
    Case(
        "ckpt-num-classes-text",
        lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"num_classes": "abc"})],
        2,
        "bad num_classes",
        subprocess=True,
    ),
    Case(
        "ckpt-num-classes-huge",
        lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"num_classes": "1000000000"})],
        2,
        "bad num_classes",
    ),
    Case("ckpt-in-channels", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"in_channels": "-3"})], 2, "in_channels"),
    Case("ckpt-image-size", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"image_size": "big"})], 2, "image_size"),
    Case("ckpt-mean-text", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"mean": "abc"})], 2, "bad mean"),
    Case("ckpt-std-zero", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"std": "0.0"})], 2, "std"),
    Case("ckpt-layers-json", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"layers": "{oops"})], 2, "layers"),
    Case("ckpt-format", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"format": "other/9"})], 2, "format 'other/9'"),
    Case("ckpt-arch-unknown", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"arch": "nosuch"})], 2, "nosuch"),
    Case("ckpt-spec-bad", lambda t, g: ["--checkpoint", _ckpt(t, g, meta={"spec": "X1"})], 2, "bad arrangement spec"),
    Case("ckpt-nan-tensor", lambda t, g: ["--checkpoint", _ckpt(t, g, nan="conv1.bias")], 2, "non-finite"),
    Case("ckpt-missing-tensor", lambda t, g: ["--checkpoint", _ckpt(t, g, drop=["fc3.weight"])], 2, "missing fc3"),
    Case(
        "ckpt-arch-mismatch", lambda t, g: ["--arch", "cnn4", "--checkpoint", str(g / "model.safetensors")], 2, "cnn4"
    ),
    Case("ckpt-pt-list", lambda t, g: ["--checkpoint", _pt(t, [1, 2, 3])], 2, "holds a list"),
    Case("ckpt-pt-garbage", lambda t, g: ["--checkpoint", _file(t, "x.pt", b"not a zip")], 2, "corrupt"),
    Case("init-from-acl", lambda t, g: ["--init-from", str(g / "model.safetensors")], 2, "is an ACL checkpoint"),
    # --- data files: MNIST IDX -------------------------------------------------------------------
    Case("mnist-missing-folder", lambda t, g: ["--data", f"mnist:{t / 'none'}"], 2, "does not exist"),
    Case("mnist-truncated-gz", lambda t, g: _truncated_gz(t), 2, "train-images-idx3-ubyte.gz"),
    Case(
        "mnist-not-gzip",
        lambda t, g: _mnist_with(t, "train-labels-idx1-ubyte.gz", b"plain bytes, not gzip"),
        2,
        "train-labels-idx1-ubyte.gz",
    ),
    Case("mnist-zero-images", lambda t, g: _zero_images(t), 2, "no images"),
    Case(
        "mnist-header-overflow",
        lambda t, g: _mnist_with(t, "train-images-idx3-ubyte", bytes([0, 0, 8, 3]) + b"\xff\xff\xff\xff" * 3),
        2,
        "train-images-idx3-ubyte",
    ),
    Case("mnist-bad-magic", lambda t, g: _mnist_with(t, "t10k-images-idx3-ubyte", b"\x01\x02\x08\x03"), 2, "magic"),
    Case(
        "mnist-float-type",
        lambda t, g: _mnist_with(t, "t10k-labels-idx1-ubyte", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"\0" * 4),
        2,
        "0x0d",
    ),
    Case(
        "mnist-label-over-9",
        lambda t, g: _mnist_with(t, "t10k-labels-idx1-ubyte", _idx_bytes(np.full(10, 12))),
        2,
        "labels go up to 12",
    ),
    Case(
        "mnist-count-mismatch",
        lambda t, g: _mnist_with(t, "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(7))),
        2,
        "10 images but 7 labels",
    ),
    Case(
        "mnist-trailing-bytes",
        lambda t, g: _mnist_with(t, "t10k-labels-idx1-ubyte", _idx_bytes(np.zeros(10)) + b"xx"),
        2,
        "bytes after",
    ),
    Case(
        "mnist-constant-images",
        lambda t, g: _mnist_with(t, "train-images-idx3-ubyte", _idx_bytes(np.zeros((30, 28, 28)))),
        2,
        "the same value",
    ),
    # --- data files: CIFAR-10 binary -------------------------------------------------------------
    Case("cifar-partial-record", lambda t, g: _cifar_with(t, "test_batch.bin", b"\x00" * 3000), 2, "multiple of 3073"),
    Case(
        "cifar-label-over-9",
        lambda t, g: _cifar_with(t, "data_batch_2.bin", cifar_records([3, 11])),
        2,
        "label 11",
    ),
    Case("cifar-empty-file", lambda t, g: _cifar_with(t, "data_batch_5.bin", b""), 2, "holds 0 bytes"),
    Case("cifar-missing-test", lambda t, g: _cifar_with(t, "test_batch.bin", None), 2, "has no test_batch.bin"),
    Case(
        "cifar-python-version",
        lambda t, g: [
            "--data",
            f"cifar10:{Path(_file(t / 'py' / 'cifar-10-batches-py', 'data_batch_1', b'x')).parents[1]}",
        ],
        2,
        "never unpickled",
    ),
    Case("cifar-constant-channel", lambda t, g: _constant_cifar(t), 2, "channel 2"),
    # --- data files: image folders ---------------------------------------------------------------
    Case("folder-no-classes", lambda t, g: _no_classes(t), 2, "no class folders"),
    Case("folder-empty-class", lambda t, g: _empty_class(t), 2, "has no images"),
    Case(
        "folder-size-huge", lambda t, g: ["--data", f"folder:{make_folder(t / 'f', per_class=2)}:100000"], 2, "100000"
    ),
    Case(
        "folder-size-zero", lambda t, g: ["--data", f"folder:{make_folder(t / 'f', per_class=2)}:0"], 2, "image size 0"
    ),
    Case(
        "folder-size-word", lambda t, g: ["--data", f"folder:{make_folder(t / 'f', per_class=2)}:abc"], 2, "SIZE 'abc'"
    ),
    Case(
        "folder-size-negative",
        lambda t, g: ["--data", f"folder:{make_folder(t / 'f', per_class=2)}:-5"],
        2,
        "SIZE '-5'",
    ),
    Case("folder-corrupt-image", lambda t, g: _folder_split(t, "bad.png", b"\x89PNG garbage"), 2, "bad.png"),
    Case("folder-huge-header", lambda t, g: _folder_split(t, "huge.png", _png_header(100_000, 100_000)), 2, "huge.png"),
    Case("folder-unknown-val-class", lambda t, g: _unknown_val_class(t), 2, "purple"),
    # --- ONNX files given to the deploy tools: python -m deploy.tensorrt check --------------------
    Case("trt-zero-bytes", lambda t, g: ["check", _file(t, "e.onnx", b"")], 2, "empty", tool="trt"),
    Case("trt-missing", lambda t, g: ["check", str(t / "none.onnx")], 2, "no such file", tool="trt"),
    Case("trt-garbage", lambda t, g: ["check", _file(t, "g.onnx", os.urandom(64))], 2, "ONNX", tool="trt"),
    Case("trt-folder", lambda t, g: ["check", str(t)], 2, "not a regular file", tool="trt"),
    Case(
        "trt-truncated",
        lambda t, g: ["check", _file(t, "half.onnx", (g / "model.static.onnx").read_bytes()[:200])],
        2,
        "ONNX",
        tool="trt",
    ),
    Case(
        "trt-checkpoint-given",
        lambda t, g: ["check", str(g / "model.safetensors")],
        2,
        "ONNX",
        tool="trt",
    ),
    Case("trt-no-files", arg("check"), 2, "the following arguments are required: FILE.onnx", tool="trt"),
    Case("trt-unknown-command", lambda t, g: ["verify", str(g / "model.static.onnx")], 2, "invalid choice", tool="trt"),
    Case("trt-no-command", arg(), 2, "required: COMMAND", tool="trt", subprocess=True),
]


def _zero_images(tmp: Path) -> list[str]:
    """A training split of 0 images and 0 labels: well-formed IDX files, nothing to learn from."""
    folder = _mnist(tmp)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((0, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(0))
    return ["--data", f"mnist:{folder}"]


def _no_classes(tmp: Path) -> list[str]:
    root = tmp / "flat"
    write_image(root / "0.png", (120, 0, 120), 1)
    return ["--data", f"folder:{root}:16"]


def _empty_class(tmp: Path) -> list[str]:
    root = make_folder(tmp / "f", per_class=2)
    (root / "zz").mkdir()
    return ["--data", f"folder:{root}:16"]


def _unknown_val_class(tmp: Path) -> list[str]:
    root = tmp / "images"
    make_folder(root / "train", per_class=3)
    make_folder(root / "val", per_class=1)
    write_image(root / "val" / "purple" / "0.png", (120, 0, 120), 1)
    return ["--data", f"folder:{root}:16"]


def _run(case: Case, argv: list[str], capsys) -> tuple[int, str, str]:
    if case.subprocess:
        module = "pipeline.export" if case.tool == "export" else "deploy.tensorrt"
        res = subprocess.run(
            [sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        return res.returncode, res.stdout, res.stderr
    if case.tool == "export":
        from pipeline.export import main
    else:
        from deploy.tensorrt.__main__ import main
    try:
        code = main(argv)
    except SystemExit as e:  # argparse leaves through sys.exit
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_corpus_is_large_and_covers_every_input_kind():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40
    kinds = {c.id.split("-")[0] for c in CASES}
    assert {"ckpt", "mnist", "cifar", "folder", "spec", "trt"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, good_run: Path, tmp_path: Path, capsys):
    before = digest(good_run)
    work = tmp_path / "inputs"
    work.mkdir()
    args = case.build(work, good_run)
    if case.tool == "export":
        prev = tmp_path / "prev"
        shutil.copytree(good_run, prev)
        argv = ["--out", str(prev), "--force", *FAST, *args]
    else:
        prev = None
        argv = args
    capsys.readouterr()
    code, out, err = _run(case, argv, capsys)

    assert "Traceback" not in err and "Traceback" not in out, err[-2000:]
    assert code == case.code, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    line = errors[0]
    assert case.fragment in line, line[:MAX_ERROR_CHARS]
    assert "expected" in line or not case.says_expected, line
    assert len(line) <= MAX_ERROR_CHARS, f"{len(line)} characters: {line[:200]}..."
    assert digest(good_run) == before
    if prev is not None:
        assert digest(prev) == before, "the earlier run's files changed"
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == ["inputs", "prev"], f"staging or resume folders left: {left}"


def test_help_states_the_limits(capsys):
    from pipeline.export import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for limit in ("--threads", "--latency-seconds", "--batch-sizes", "--epochs", "--seed"):
        assert limit in text
    from pipeline.export import MAX_LATENCY_BATCH, MAX_LATENCY_SECONDS, MAX_THREADS

    assert f"1 to {MAX_LATENCY_BATCH}" in text
    assert f"0 to {MAX_LATENCY_SECONDS:g}" in text
    assert f"1 to {MAX_THREADS}" in text


def test_help_limits_match_the_code_that_enforces_them():
    from pipeline import export, train
    from pipeline.datasets import augment

    assert export.MAX_TRAIN_BATCH == train.MAX_BATCH_SIZE
    # the seed's upper bound is what the augmentation key keeps of it
    assert augment.epoch_key(export.MAX_SEED, 0) != augment.epoch_key(export.MAX_SEED - 1, 0)


# --- a full disk: the one-line error, exit 2, the earlier run intact, nothing left beside it -------


@pytest.fixture()
def full_disk_for(monkeypatch):
    """``full_disk_for(name)``: every atomic write of a file called ``name`` goes to ``/dev/full``.

    The temporary file ``export.atomic`` writes is made a link to ``/dev/full``, so
    the writer (Python, or a library's native code) gets the kernel's real ENOSPC,
    as on a full file system.
    """
    import tempfile

    if not os.access("/dev/full", os.W_OK):
        pytest.skip("not available: /dev/full, which fails every write with ENOSPC, is not writable here")
    real_mkstemp, real_chmod = tempfile.mkstemp, os.chmod

    def arm(name: str) -> None:
        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            fd, tmp = real_mkstemp(suffix=suffix, prefix=prefix, dir=dir, text=text)
            if prefix == f".{name}.":
                os.close(fd)
                os.unlink(tmp)
                os.symlink("/dev/full", tmp)
                fd = os.open(tmp, os.O_WRONLY)
            return fd, tmp

        def chmod(path, mode, **kw):  # only after a successful write, which /dev/full never allows
            assert not os.path.islink(path), f"{path} -> /dev/full was written to and would be chmod-ed"
            return real_chmod(path, mode, **kw)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(os, "chmod", chmod)

    return arm


def _no_space_case(good_run: Path, tmp_path: Path, capsys, argv: list[str]) -> str:
    from pipeline.export import main

    before = digest(good_run)
    prev = tmp_path / "prev"
    shutil.copytree(good_run, prev)
    capsys.readouterr()
    code = main(["--out", str(prev), "--force", *FAST, *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, lines[-5:]
    assert sum(ln.startswith("error:") for ln in lines) == 1 and lines[-1].startswith("error: "), lines[-5:]
    assert digest(prev) == before, "the earlier run's files changed"
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["prev"], f"staging or temporary files left: {left}"
    return lines[-1]


@pytest.mark.parametrize("name", ["model.safetensors", "model.live.onnx"])
def test_a_full_disk_while_writing_the_checkpoint_or_an_onnx_file(good_run, tmp_path, capsys, full_disk_for, name):
    full_disk_for(name)
    line = _no_space_case(good_run, tmp_path, capsys, ["--checkpoint", str(good_run / "model.safetensors")])
    size = (good_run / name).stat().st_size  # the same model's file, as the earlier run wrote it
    assert size < 1e6, "a LeNet file: its size is given in kB"
    assert line.startswith("error: no space left on device writing ") and f"/{name} ({size / 1e3:.1f} kB)" in line
    assert f"expected at least {size / 1e3:.1f} kB free in " in line, line


def test_a_full_disk_while_saving_the_training_state(good_run, tmp_path, capsys, full_disk_for):
    from pipeline.resume import ResumeStore

    full_disk_for(ResumeStore.FILE)
    line = _no_space_case(good_run, tmp_path, capsys, [])
    assert line.startswith("error: no space left on device writing ") and "expected at least" in line, line


def test_a_full_disk_while_writing_the_report(good_run, tmp_path, capsys, monkeypatch):
    """A writer outside ``export.atomic`` (the report, charts) fails with a bare ENOSPC: the same one line."""
    import errno

    from pipeline.stages import report

    def write_markdown(doc, path, plan):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(report, "write_markdown", write_markdown)
    line = _no_space_case(good_run, tmp_path, capsys, ["--checkpoint", str(good_run / "model.safetensors")])
    assert line.startswith("error: no space left on device writing ") and "/report.md, expected more free" in line


def test_out_of_range_limits_are_shown_as_the_numbers_they_are():
    """``--seed -1`` said ``expected 0 to 4.29497e+09``: the limit, an integer, was printed rounded."""
    from pipeline.export import check_args, parser

    assert check_args(parser().parse_args(["--seed", "-1"])) == "--seed -1 is out of range, expected 0 to 4294967295"
    problem = check_args(parser().parse_args(["--latency-seconds", "10.5"]))
    assert problem == "--latency-seconds 10.5 is out of range, expected 0 to 10"
