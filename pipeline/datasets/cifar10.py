"""``cifar10:DIR``: CIFAR-10 from the *binary* version of its distribution; nothing is downloaded.

``DIR`` is the ``cifar-10-batches-bin`` folder or the folder holding it:
``data_batch_1.bin`` .. ``data_batch_5.bin`` (training) and ``test_batch.bin``,
each a sequence of 3073-byte records (1 label byte 0..9, then 3072 pixel bytes:
the 32x32 red, green and blue planes, row-major). The python version of the
distribution is a pickle and is refused: unpickling a file runs code of its
choosing.

Images stay uint8 in memory (150 MB for the training split); standardisation is
per channel with the training split's mean and std (or a checkpoint's). Training
augmentation is the usual recipe's: a random 32x32 crop of the image zero-padded
by 4 pixels, and a horizontal flip (``pipeline.datasets.augment.crop_flip``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.datasets.augment import crop_flip
from pipeline.datasets.base import Dataset, in_memory_dataset, norm_of

__all__ = ["CLASSES", "MAX_CIFAR_FILE_BYTES", "RECORD_BYTES", "load_cifar10_dataset", "read_cifar_batch"]

RECORD_BYTES = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
MAX_CIFAR_FILE_BYTES = 4 * 10000 * RECORD_BYTES
"""Larger batch files are refused before reading (each official file holds 10000 records)."""
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def read_cifar_batch(path: str | Path, *, max_bytes: int = MAX_CIFAR_FILE_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """One binary CIFAR-10 batch file -> ``uint8[N, 3, 32, 32]`` images and ``int64[N]`` labels.

    Raises:
        ValueError: the file (named) is empty, over ``max_bytes``, not whole
            records, changed while read, or has a label over 9.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"{path} is {size} bytes, expected at most {max_bytes} (a CIFAR-10 batch file)")
    if size == 0 or size % RECORD_BYTES:
        raise ValueError(
            f"{path} holds {size} bytes, expected a positive multiple of {RECORD_BYTES} "
            "(CIFAR-10 binary records: 1 label byte + 3072 pixel bytes)"
        )
    with open(path, "rb") as f:
        raw = f.read(size + 1)  # one byte more: a file that grew since stat() is caught
    if len(raw) != size:
        raise ValueError(f"{path} changed while it was read ({len(raw)} bytes, expected {size})")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise ValueError(
            f"{path}: record {bad} has label {labels[bad]}, expected 0..9 "
            "(CIFAR-100's binary files have two label bytes and are not CIFAR-10)"
        )
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def batches_folder(folder: str | Path) -> Path:
    """``folder`` itself when it holds the batch files, else its ``cifar-10-batches-bin``.

    Raises:
        ValueError: neither exists, or only the pickled python version is there.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"CIFAR-10 folder {folder} does not exist, expected cifar-10-batches-bin or its parent")
    for candidate in (folder, folder / "cifar-10-batches-bin"):
        if (candidate / TEST_FILE).is_file() or (candidate / TRAIN_FILES[0]).is_file():
            return candidate
    for candidate in (folder, folder / "cifar-10-batches-py"):
        if (candidate / "data_batch_1").is_file():
            raise ValueError(
                f"CIFAR-10 folder {candidate} is the python (pickle) version, which is never unpickled; "
                "expected the binary version (cifar-10-batches-bin)"
            )
    raise ValueError(f"CIFAR-10 folder {folder} has no {TEST_FILE}, expected cifar-10-batches-bin or its parent")


def _class_names(folder: Path) -> tuple[str, ...]:
    meta = folder / "batches.meta.txt"
    if meta.is_file() and meta.stat().st_size <= 4096:  # the official file is 88 bytes
        names = tuple(n.strip() for n in meta.read_text(errors="replace").splitlines() if n.strip())
        if len(names) == 10:
            return names
    return CLASSES


def load_cifar10_dataset(folder: str | Path, *, norm=None) -> Dataset:
    """CIFAR-10's binary batches in ``folder``: 3x32x32, 10 classes, crop-and-flip augmentation.

    Args:
        folder: ``cifar-10-batches-bin`` or its parent.
        norm: per-channel (mean, std) to standardise with (a checkpoint's); None:
            the training split's.

    Raises:
        ValueError: missing or bad files (named), ``norm`` not for 3 channels.
    """
    root = batches_folder(folder)
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (root / n).is_file()]
    if missing:
        raise ValueError(
            f"CIFAR-10 folder {root} has no {', '.join(missing)}, expected {TRAIN_FILES[0]}..5 and {TEST_FILE}"
        )
    train = [read_cifar_batch(root / n) for n in TRAIN_FILES]
    x_test, y_test = read_cifar_batch(root / TEST_FILE)
    x_train = torch.from_numpy(np.concatenate([x for x, _ in train]))
    y_train = torch.from_numpy(np.concatenate([y for _, y in train]))
    return in_memory_dataset(
        f"CIFAR-10 ({folder})",
        (x_train, y_train),
        (torch.from_numpy(x_test), torch.from_numpy(y_test)),
        norm_of(norm, 3),
        classes=_class_names(root),
        augment=crop_flip,
    )
