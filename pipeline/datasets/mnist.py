"""``mnist:DIR``: MNIST from the four IDX files of its distribution in ``DIR``; nothing is downloaded.

The paper's AnaNN data set (section 4.2): ``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each optionally ``.gz``. The 28x28 images are zero-padded to 32x32, as LeNet-5 was
fed. Its own train/test split is used.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.base import Dataset, in_memory_dataset, norm_of

__all__ = ["MAX_IDX_BYTES", "load_mnist_dataset", "read_idx"]

MAX_IDX_BYTES = 512 << 20
"""Larger IDX payloads are refused (MNIST's largest file holds 47 MB)."""

_IDX_TYPES = {0x08: np.uint8}
_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """An IDX file (MNIST's format; ``.gz`` accepted) as a NumPy array.

    The header is checked (two zero bytes, unsigned-byte type, 1 to 4 dimensions)
    and exactly the announced payload is read: a truncated file, trailing bytes, or
    a payload over ``max_bytes`` raise ``ValueError`` naming the file.
    """
    path = Path(path)
    try:
        return _read_idx(path, max_bytes)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        # gzip reports a cut-off or damaged stream with its own exception types, naming no file.
        raise ValueError(
            f"{path} is a truncated or corrupt gzip file ({e or type(e).__name__}), expected a whole .gz IDX file"
        ) from None


def _read_idx(path: Path, max_bytes: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise ValueError(
                f"{path} is not an IDX file (bad magic number {head.hex() or 'empty'}), expected 0000 then type and rank"
            )
        dtype, ndim = head[2], head[3]
        if dtype not in _IDX_TYPES:
            raise ValueError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned bytes, expected 0x08")
        if not 1 <= ndim <= 4:
            raise ValueError(f"{path}: IDX file has {ndim} dimensions, expected 1 to 4")
        raw_dims = f.read(4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise ValueError(f"{path}: IDX header is truncated, expected {ndim} 4-byte sizes")
        dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
        size = math.prod(dims)  # Python ints: np.prod in int64 wraps around for sizes like 0xffffffff**3
        if size > max_bytes:
            raise ValueError(
                f"{path}: IDX payload of {size} bytes ({'x'.join(map(str, dims))}) exceeds the {max_bytes}-byte "
                "limit, expected a smaller file"
            )
        data = f.read(size)
        if len(data) != size:
            raise ValueError(f"{path}: IDX file is truncated ({len(data)} bytes), expected {size} bytes of data")
        if f.read(1):
            raise ValueError(f"{path}: IDX file has bytes after its {size}-byte payload, expected it to end there")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"MNIST folder {folder} has no {stem}, expected {stem} or {stem}.gz")


def load_mnist_dataset(folder: str | Path, *, image_size: int = 32, norm=None) -> Dataset:
    """MNIST from its four local IDX files; 28x28 images zero-padded to ``image_size``.

    Raises:
        ValueError: missing, corrupt or inconsistent files (named), labels over 9,
            images larger than ``image_size``, ``norm`` unusable for 1 channel.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"MNIST folder {folder} does not exist, expected a folder holding MNIST's four IDX files")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in _MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(
                f"MNIST {split} files have shapes {images.shape} and {labels.shape}; expected [N, H, W] and [N]"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"MNIST {split} files disagree: {len(images)} images but {len(labels)} labels, expected one label "
                "per image"
            )
        if len(images) == 0:
            raise ValueError(f"MNIST {split} files hold no images, expected at least one image and label")
        if labels.size and labels.max() > 9:
            raise ValueError(f"MNIST {split} labels go up to {labels.max()}; expected 0..9")
    h, w = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != (h, w) or h > image_size or w > image_size:
        raise ValueError(
            f"MNIST images are {h}x{w} (test {arrays['test_images'].shape[1:]}); expected equal sizes up to {image_size}"
        )

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        # Kept as uint8 (a quarter of float32's memory); zero padding is black, as LeNet-5's inputs were.
        x = torch.from_numpy(arrays[f"{name}_images"].copy())[:, None]
        top, left = (image_size - h) // 2, (image_size - w) // 2
        x = F.pad(x, (left, image_size - w - left, top, image_size - h - top)).contiguous()
        return x, torch.as_tensor(arrays[f"{name}_labels"].astype(np.int64))

    return in_memory_dataset(
        f"MNIST ({folder})", split("train"), split("test"), norm_of(norm, 1), classes=[str(c) for c in range(10)]
    )
