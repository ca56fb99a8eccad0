"""What every data set provides: ``Dataset``, in-memory image sets, standardisation, the bounded evaluation tensor.

Contract of ``Dataset.train_set`` / ``Dataset.test_set`` (``torch.utils.data.Dataset``):
they yield *raw* images, uint8 0..255 or float32 0..1, ``[C, S, S]`` (or ``[B, C,
S, S]`` for in-memory sets indexed by a list), with int64 labels;
``Dataset.normalize`` turns a batch into the standardised float32 the model sees,
on whatever device the batch is on (uint8 crosses to a GPU in a quarter of the
bytes). The training set is indexed by ``(epoch_key, index)`` and augments (see
``pipeline.datasets.augment``); a plain index gives the deterministic evaluation
form.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from pipeline.datasets.augment import sample_keys

__all__ = [
    "EVAL_BYTES",
    "EVAL_IMAGES",
    "Dataset",
    "Norm",
    "TensorImages",
    "eval_subset",
    "format_channels",
    "norm_of",
    "parse_channels",
]

EVAL_IMAGES = 1000
"""At most this many test images are materialised as ``x_test`` (parity and latency inputs)."""
EVAL_BYTES = 64 << 20
"""...and at most this many bytes of float32 (111 images at 3x224x224)."""

Norm = tuple[tuple[float, ...], tuple[float, ...]]
"""Per-channel (mean, std) on the 0..1 scale."""


def norm_of(norm: tuple[Sequence[float] | float, Sequence[float] | float] | None, channels: int) -> Norm | None:
    """``norm`` as per-channel tuples for ``channels`` channels (a scalar serves every channel).

    Raises:
        ValueError: wrong channel count, non-finite values or a std that is not positive.
    """
    if norm is None:
        return None
    out = []
    for name, value in zip(("mean", "std"), norm):
        values = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
        if len(values) == 1 and channels > 1:
            values = values * channels
        if len(values) != channels:
            raise ValueError(f"standardisation {name} has {len(values)} channel(s), expected {channels} for these data")
        if not all(math.isfinite(v) for v in values) or (name == "std" and min(values) <= 0):
            raise ValueError(f"standardisation {name} {list(values)} is not usable, expected finite values (std > 0)")
        out.append(values)
    return out[0], out[1]


def format_channels(values: Sequence[float]) -> str:
    """Checkpoint metadata form: a plain number for one channel (as before), a JSON list otherwise."""
    values = [float(v) for v in values]
    return repr(values[0]) if len(values) == 1 else json.dumps(values)


def parse_channels(text: str) -> tuple[float, ...]:
    """Inverse of ``format_channels``; also reads older checkpoints' plain numbers. ``ValueError`` if neither."""
    text = text.strip()
    value = json.loads(text) if text.startswith("[") else float(text)
    values = tuple(float(v) for v in value) if isinstance(value, list) else (float(value),)
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{text!r} is not a number or a list of finite numbers")
    return values


def channel_stats(images: torch.Tensor) -> Norm:
    """Per-channel mean and (unbiased) std of raw images ``[N, C, H, W]`` on the 0..1 scale.

    uint8 images go through a 256-bin histogram per channel: exact, and no float
    copy of a 150 MB training split.
    """
    c = images.shape[1]
    if images.dtype == torch.uint8:
        means, stds = [], []
        levels = np.arange(256, dtype=np.float64) / 255.0
        for ch in range(c):
            counts = torch.bincount(images[:, ch].reshape(-1), minlength=256).double().numpy()
            n = counts.sum()
            mean = float((counts * levels).sum() / n)
            var = float((counts * (levels - mean) ** 2).sum() / max(n - 1, 1))
            means.append(mean)
            stds.append(math.sqrt(var))
        return tuple(means), tuple(stds)
    x = images.transpose(0, 1).reshape(c, -1)
    return tuple(float(v) for v in x.mean(1)), tuple(float(v) for v in x.std(1))


def check_varies(name: str, images: torch.Tensor, std: Sequence[float]) -> None:
    """Refuse training images with a channel of zero variance: standardising it divides by zero.

    All-zero images, or a channel that is one value everywhere, would make every
    input NaN and train a NaN model. There is no safe fallback: a floored std would
    turn any test pixel that differs from the constant into an enormous input.

    Raises:
        ValueError: naming the data set, the channel and its one value.
    """
    for c, s in enumerate(std):
        if not s > 0:
            value = float(images[:1, c].reshape(-1)[0])
            value = value / 255 if images.dtype == torch.uint8 else value
            raise ValueError(
                f"{name}: every training image has the same value ({value:.4g} on the 0..1 scale) in every pixel of "
                f"channel {c}, so it cannot be standardised, expected training images that vary in each channel"
            )


def eval_subset(labels: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` images, class-balanced, in the split's order.

    Round-robin over classes: every class's first image, then every class's second,
    and so on; all images (in order) when there are at most ``limit``.
    """
    labels = np.asarray(labels)
    if len(labels) <= limit:
        return np.arange(len(labels))
    rank = np.zeros(len(labels), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(labels.tolist()):
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    order = np.lexsort((np.arange(len(labels)), rank))  # by rank, then position
    return np.sort(order[:limit])


def eval_limit(channels: int, image_size: int) -> int:
    """How many test images ``x_test`` holds at most (``EVAL_IMAGES``, ``EVAL_BYTES``)."""
    return max(1, min(EVAL_IMAGES, EVAL_BYTES // (4 * channels * image_size * image_size)))


class TensorImages(TorchDataset):
    """An in-memory image set, indexed by an index or a list of indices (one gather per batch).

    Args:
        images: ``[N, C, S, S]`` raw images, uint8 or float32 0..1.
        labels: ``[N]`` int64.
        augment: ``f(images, keys) -> images`` for a batch and its sample keys,
            applied when indexed by ``(epoch_key, index_or_indices)``; None: never.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        augment: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None,
    ) -> None:
        self.images = images
        self.labels = labels
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key):
        stream, index = key if isinstance(key, tuple) else (None, key)
        # NumPy's fancy indexing: a 128-image gather takes 0.04 ms, torch's 0.8 ms on
        # one thread and far more when its OpenMP pool competes with training.
        x = torch.from_numpy(self.images.numpy()[index])
        y = torch.from_numpy(np.asarray(self.labels.numpy()[index]))
        if stream is not None and self.augment is not None:
            single = x.dim() == 3
            x = self.augment(x[None] if single else x, sample_keys(stream, index))
            x = x[0] if single else x
        return x, y


@dataclass
class Dataset:
    """A classification data set: training and test splits, standardisation, evaluation tensor.

    Attributes:
        name: human-readable, with the source path (also keys resumable training state).
        train_set: training split (see the module docstring for indexing and values).
        test_set: the whole test split, for accuracy.
        x_test: standardised float32 ``[M, C, S, S]``: the test split's first images,
            class-balanced, at most ``EVAL_IMAGES`` and ``EVAL_BYTES`` (parity and latency inputs).
        y_test: ``[M]`` int64 labels of ``x_test``.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel std on the 0..1 scale.
        image_size: ``S``.
        num_classes: classifier outputs.
        classes: class names, index order.
        in_memory: True when the splits are tensors (index with lists, no workers
            needed); False when images are decoded lazily (DataLoader workers decode).
    """

    name: str
    train_set: TorchDataset
    test_set: TorchDataset
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    num_classes: int
    classes: tuple[str, ...] = ()
    in_memory: bool = True

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def train_size(self) -> int:
        return len(self.train_set)

    @property
    def test_size(self) -> int:
        return len(self.test_set)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw images (uint8 0..255 or float 0..1, ``[..., C, H, W]``) -> standardised float32, same device."""
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device)[:, None, None]
        return ((x - mean) / std).contiguous()

    @property
    def x_train(self) -> torch.Tensor:
        """The whole standardised training split (in-memory sets only; for small sets and tests)."""
        if not isinstance(self.train_set, TensorImages):
            raise TypeError(f"{self.name} is decoded lazily; iterate train_set instead")
        return self.normalize(self.train_set.images)

    @property
    def y_train(self) -> torch.Tensor:
        if not isinstance(self.train_set, TensorImages):
            raise TypeError(f"{self.name} is decoded lazily; iterate train_set instead")
        return self.train_set.labels

    def describe(self) -> str:
        def fmt(v: tuple[float, ...]) -> str:
            return f"{v[0]:.4f}" if len(v) == 1 else "/".join(f"{x:.3f}" for x in v)

        capped = f" (parity on {len(self.x_test)})" if len(self.x_test) < self.test_size else ""
        return (
            f"{self.name}: {self.train_size} train / {self.test_size} test images{capped}, "
            f"{self.channels}x{self.image_size}x{self.image_size}, {self.num_classes} classes, "
            f"standardised (mean {fmt(self.mean)}, std {fmt(self.std)})"
        )


def in_memory_dataset(
    name: str,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    norm: Norm | None,
    *,
    classes: Sequence[str],
    augment: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None,
) -> Dataset:
    """A ``Dataset`` of raw image tensors; standardised with ``norm`` or the training split's statistics."""
    x_train, y_train = train
    x_test, y_test = test
    for split, x in (("training", x_train), ("test", x_test)):
        if len(x) == 0:
            raise ValueError(f"{name}: the {split} split holds no images, expected at least one")
    mean, std = norm or channel_stats(x_train)
    if norm is None:
        check_varies(name, x_train, std)
    size = x_train.shape[-1]
    keep = torch.from_numpy(eval_subset(y_test.numpy(), eval_limit(x_train.shape[1], size)))
    ds = Dataset(
        name=name,
        train_set=TensorImages(x_train, y_train, augment),
        test_set=TensorImages(x_test, y_test),
        x_test=torch.empty(0),
        y_test=y_test[keep],
        mean=tuple(mean),
        std=tuple(std),
        image_size=size,
        num_classes=len(classes),
        classes=tuple(classes),
        in_memory=True,
    )
    ds.x_test = ds.normalize(x_test[keep])
    return ds
