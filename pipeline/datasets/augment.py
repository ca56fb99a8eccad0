"""Training augmentation whose randomness is a function of (seed, epoch, image index).

Every random draw of an augmentation comes from a 64-bit *sample key* computed
from the epoch's stream key (``epoch_key(seed, epoch)``) and the image's index in
the training split (``sample_keys``), never from a process-global generator. So an
image is augmented identically whichever DataLoader worker, DDP rank or batch it
lands in, and a run resumed after epoch k draws exactly what the uninterrupted run
would have drawn: resuming is bitwise reproducible, and ``--workers`` does not
change the result.

Two augmentations, as the usual recipes use them:

- ``crop_flip``: CIFAR's random 32x32 crop of the image zero-padded by 4 pixels,
  and a horizontal flip with probability 1/2; vectorised over a uint8 batch.
- ``random_resized_box`` + flip (``flip_of``): ImageNet-style random resized crop
  (torchvision's ``RandomResizedCrop`` algorithm: scale 0.08-1 of the area, aspect
  3/4-4/3, ten tries then a centre crop), for images decoded one at a time.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch

__all__ = ["crop_flip", "epoch_key", "flip_of", "random_resized_box", "sample_keys"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (well-defined wrap-around, unlike int64 in torch)."""
    z = z.copy()
    z ^= z >> np.uint64(30)
    z *= _M1
    z ^= z >> np.uint64(27)
    z *= _M2
    z ^= z >> np.uint64(31)
    return z


def epoch_key(seed: int, epoch: int) -> int:
    """The 64-bit stream key of one training epoch of a run with ``seed``."""
    z = np.array([(seed & 0xFFFFFFFF) << 32 | (epoch & 0xFFFFFFFF)], dtype=np.uint64)
    return int(_mix(z * _GOLDEN + _GOLDEN)[0])


def sample_keys(stream: int, indices: Sequence[int] | np.ndarray | int) -> np.ndarray:
    """One uint64 key per image index for the epoch stream ``stream``."""
    idx = np.atleast_1d(np.asarray(indices, dtype=np.uint64))
    with np.errstate(over="ignore"):
        return _mix(np.uint64(stream) ^ _mix((idx + np.uint64(1)) * _GOLDEN))


def crop_flip(images: torch.Tensor | np.ndarray, keys: np.ndarray, pad: int = 4) -> torch.Tensor:
    """Random crop of the ``pad``-zero-padded images back to their size, and a random horizontal flip.

    Done in NumPy, one slice copy per image: 1 ms for 128 CIFAR images, where one
    torch gather over the batch takes 15-30 ms and, in the main process, competes
    for the training threads' OpenMP pool.

    Args:
        images: ``[B, C, H, W]`` on the CPU, any dtype (uint8 before
            standardisation, so the padding is black as in the usual CIFAR recipe).
        keys: ``B`` sample keys (``sample_keys``); bits 0-15 pick the row offset,
            16-31 the column offset, bit 32 the flip.
        pad: padding on each side, in pixels.

    Returns:
        ``[B, C, H, W]``, same dtype.
    """
    x = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    b, c, h, w = x.shape
    span = 2 * pad + 1
    k = (np.asarray(keys, dtype=np.uint64) & np.uint64(0x1FFFFFFFF)).astype(np.int64)
    dy = (k & 0xFFFF) % span
    dx = ((k >> 16) & 0xFFFF) % span
    flip = ((k >> 32) & 1).astype(bool)
    padded = np.zeros((b, c, h + 2 * pad, w + 2 * pad), x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    out = np.empty_like(x)
    for i in range(b):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop[:, :, ::-1] if flip[i] else crop
    return torch.from_numpy(out)


def random_resized_box(
    width: int,
    height: int,
    key: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop`` box ``(left, top, right, bottom)`` drawn from ``key``."""
    rng = random.Random(key)
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, left + w, top + h
    # Ten misses (very elongated images): the largest centred box within the ratio range.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def flip_of(key: int) -> bool:
    """The horizontal flip decision of ``key`` (independent of ``random_resized_box``'s draws)."""
    return bool((key >> 63) & 1)
