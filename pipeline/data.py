"""Datasets: scikit-learn's handwritten digits (shipped), and MNIST from local IDX files.

``digits`` (the default): 1797 real 8x8 grey images (values 0..16) of 10 classes.
AnaNN-LeNet expects 32x32 inputs (Fig. 5a), so images are upsampled once,
bilinearly, to ``image_size``. The train/test split is fixed: stratified, 20 %
test, ``seed`` 0.

``mnist:DIR``: the paper's AnaNN data set (section 4.2), read from the four IDX
files of its distribution in ``DIR`` (``train-images-idx3-ubyte``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``,
each optionally ``.gz``); nothing is downloaded. The 28x28 images are zero-padded
to 32x32, as LeNet-5 was fed. Its own train/test split is used.

Both are standardised with the training split's mean and std (or with a
checkpoint's, so that a trained model sees the inputs it was trained on).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MAX_IDX_BYTES",
    "Dataset",
    "load_dataset",
    "load_digits_dataset",
    "load_mnist_dataset",
    "preprocess",
    "read_idx",
]

MAX_IDX_BYTES = 512 << 20
"""Larger IDX payloads are refused (MNIST's largest file holds 47 MB)."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # [N, 1, S, S] float32, standardised
    y_train: torch.Tensor  # [N] int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float
    image_size: int
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images at "
            f"{self.image_size}x{self.image_size}, standardised (mean {self.mean:.4f}, std {self.std:.4f})"
        )


def preprocess(images: np.ndarray, image_size: int, mean: float, std: float) -> torch.Tensor:
    """Raw digits ``[N, 8, 8]`` (0..16) -> standardised ``float32[N, 1, S, S]``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) / 16.0)[:, None]
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ((x - mean) / std).contiguous()


def load_digits_dataset(
    *, seed: int = 0, test_size: float = 0.2, image_size: int = 32, norm: tuple[float, float] | None = None
) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=digits.target)
    raw_train = preprocess(digits.images[train_idx], image_size, 0.0, 1.0)
    mean, std = norm or (float(raw_train.mean()), float(raw_train.std()))
    return Dataset(
        name="sklearn digits",
        x_train=(raw_train - mean) / std,
        y_train=torch.as_tensor(digits.target[train_idx], dtype=torch.int64),
        x_test=preprocess(digits.images[test_idx], image_size, mean, std),
        y_test=torch.as_tensor(digits.target[test_idx], dtype=torch.int64),
        mean=mean,
        std=std,
        image_size=image_size,
        num_classes=10,
    )


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
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0:
            raise ValueError(f"{path} is not an IDX file (bad magic number {head.hex() or 'empty'})")
        dtype, ndim = head[2], head[3]
        if dtype not in _IDX_TYPES:
            raise ValueError(f"{path}: IDX data type 0x{dtype:02x} is not unsigned bytes (0x08)")
        if not 1 <= ndim <= 4:
            raise ValueError(f"{path}: IDX file has {ndim} dimensions, expected 1 to 4")
        raw_dims = f.read(4 * ndim)
        if len(raw_dims) < 4 * ndim:
            raise ValueError(f"{path}: IDX header is truncated")
        dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
        size = int(np.prod(dims, dtype=np.int64))
        if size > max_bytes:
            raise ValueError(f"{path}: IDX payload of {size} bytes exceeds the {max_bytes}-byte limit")
        data = f.read(size)
        if len(data) != size:
            raise ValueError(f"{path}: IDX file is truncated ({len(data)} of {size} bytes)")
        if f.read(1):
            raise ValueError(f"{path}: IDX file has bytes after its {size}-byte payload")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"MNIST folder {folder} has no {stem} (or {stem}.gz)")


def load_mnist_dataset(folder: str | Path, *, image_size: int = 32, norm: tuple[float, float] | None = None) -> Dataset:
    """MNIST from its four local IDX files; 28x28 images zero-padded to ``image_size``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"MNIST folder {folder} does not exist")
    arrays = {key: read_idx(_find(folder, stem)) for key, stem in _MNIST_FILES.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(
                f"MNIST {split} files have shapes {images.shape} and {labels.shape}; expected [N, H, W] and [N]"
            )
        if len(images) != len(labels):
            raise ValueError(f"MNIST {split} files disagree: {len(images)} images but {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"MNIST {split} labels go up to {labels.max()}; expected 0..9")
    h, w = arrays["train_images"].shape[1:]
    if arrays["test_images"].shape[1:] != (h, w) or h > image_size or w > image_size:
        raise ValueError(
            f"MNIST images are {h}x{w} (test {arrays['test_images'].shape[1:]}); expected equal sizes up to {image_size}"
        )

    def prep(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
        x = torch.as_tensor(images.astype(np.float32) / 255.0)[:, None]
        top, left = (image_size - h) // 2, (image_size - w) // 2
        x = F.pad(x, (left, image_size - w - left, top, image_size - h - top))
        return ((x - mean) / std).contiguous()

    raw_train = prep(arrays["train_images"], 0.0, 1.0)
    mean, std = norm or (float(raw_train.mean()), float(raw_train.std()))
    return Dataset(
        name=f"MNIST ({folder})",
        x_train=(raw_train - mean) / std,
        y_train=torch.as_tensor(arrays["train_labels"].astype(np.int64)),
        x_test=prep(arrays["test_images"], mean, std),
        y_test=torch.as_tensor(arrays["test_labels"].astype(np.int64)),
        mean=mean,
        std=std,
        image_size=image_size,
        num_classes=10,
    )


def load_dataset(name: str, *, norm: tuple[float, float] | None = None) -> Dataset:
    """``digits`` or ``mnist:DIR``; ``ValueError`` names what is wrong."""
    if name == "digits":
        return load_digits_dataset(norm=norm)
    if name.startswith("mnist:"):
        return load_mnist_dataset(name.split(":", 1)[1], norm=norm)
    raise ValueError(f"unknown --data {name!r}; expected 'digits' or 'mnist:DIR' (a folder with MNIST's IDX files)")
