"""Datasets that ship with a package: scikit-learn's handwritten digits.

The digits are 1797 real 8x8 grey images (values 0..16) of 10 classes. AnaNN-LeNet
expects 32x32 inputs (Fig. 5a), so images are upsampled once, bilinearly, to
``image_size`` and standardised with the training split's mean and std. The
train/test split is fixed: stratified, 20 % test, ``seed`` 0 by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Dataset", "load_digits_dataset", "preprocess"]


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
            f"{self.name}: {len(self.x_train)} train / {len(self.x_test)} test images, "
            f"8x8 upsampled to {self.image_size}x{self.image_size}, standardised (mean {self.mean:.4f}, std {self.std:.4f})"
        )


def preprocess(images: np.ndarray, image_size: int, mean: float, std: float) -> torch.Tensor:
    """Raw digits ``[N, 8, 8]`` (0..16) -> standardised ``float32[N, 1, S, S]``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) / 16.0)[:, None]
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ((x - mean) / std).contiguous()


def load_digits_dataset(*, seed: int = 0, test_size: float = 0.2, image_size: int = 32) -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=digits.target)
    raw_train = preprocess(digits.images[train_idx], image_size, 0.0, 1.0)
    mean, std = float(raw_train.mean()), float(raw_train.std())
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
