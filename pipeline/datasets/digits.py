"""``digits``: scikit-learn's handwritten digits (shipped with it, nothing to download).

1797 real 8x8 grey images (values 0..16) of 10 classes. AnaNN-LeNet expects 32x32
inputs (Fig. 5a), so images are upsampled once, bilinearly, to ``image_size``. The
train/test split is fixed: stratified, 20 % test, ``seed`` 0.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.datasets.base import Dataset, in_memory_dataset, norm_of

__all__ = ["load_digits_dataset", "preprocess"]


def preprocess(images: np.ndarray, image_size: int, mean: float, std: float) -> torch.Tensor:
    """Raw digits ``[N, 8, 8]`` (0..16) -> standardised ``float32[N, 1, S, S]``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32) / 16.0)[:, None]
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return ((x - mean) / std).contiguous()


def load_digits_dataset(*, seed: int = 0, test_size: float = 0.2, image_size: int = 32, norm=None) -> Dataset:
    """The digits split; standardised with ``norm`` (per-channel or scalar mean, std) or the training split's.

    Raises:
        ValueError: ``norm`` unusable for 1-channel images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed, stratify=digits.target)

    def split(ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Raw form 0..1 (mean 0, std 1 is the identity); Dataset.normalize standardises batches.
        return preprocess(digits.images[ids], image_size, 0.0, 1.0), torch.as_tensor(
            digits.target[ids], dtype=torch.int64
        )

    return in_memory_dataset(
        "sklearn digits",
        split(train_idx),
        split(test_idx),
        norm_of(norm, 1),
        classes=[str(c) for c in range(10)],
    )
