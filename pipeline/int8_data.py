"""The images INT8 is made and judged on, drawn from the training split, never the test split.

Class-balanced (``pipeline.datasets.base.eval_subset``, as the parity images are
drawn from the test split): the first ``N`` are the calibration images; the
validation images, on which the accuracy bound is enforced, are drawn the same
way from the training images left, at most as many as the parity images
(``eval_limit``). Calibration images are standardised batch by batch as the
calibrator reads them, so ``N`` is not bounded by memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import UserError

__all__ = ["TrainImages", "calibration_count", "draw_images"]

DEFAULT = 256


def calibration_count(train_size: int, requested: int | None, data_name: str, checkpoint: Path | None = None) -> int:
    """How many calibration images: ``requested``, or 256 (half the split when smaller); at least one left over.

    Raises:
        UserError: the training split cannot give them and a validation image.
    """
    n = requested if requested is not None else min(DEFAULT, train_size // 2)
    if n >= 1 and n < train_size:
        return n
    if checkpoint is not None and train_size < 2:
        raise UserError(
            f"--int8 with --checkpoint calibrates on the training split of --data ({data_name}), which holds "
            f"{train_size} image(s), expected a --data whose training split holds at least 2"
        )
    if requested is None:
        raise UserError(
            f"--int8 needs at least 2 training images (calibration and validation), {data_name} has {train_size}, "
            "expected a larger training split"
        )
    return _too_many(requested, train_size, data_name)


def _too_many(requested: int, train_size: int, data_name: str) -> int:
    raise UserError(
        f"--int8-calibration {requested} is larger than the training split allows ({data_name}: {train_size} "
        f"training images, at least one kept for validation), expected at most {max(train_size - 1, 0)}"
    )


class TrainImages:
    """Standardised training images at ``indices``, read when sliced (``len`` and ``[a:b]``, as the calibrator reads)."""

    def __init__(self, ds: Any, indices: np.ndarray) -> None:
        self.ds, self.indices = ds, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key: slice) -> np.ndarray:
        import torch

        idx = self.indices[key]
        if self.ds.in_memory:
            raw = self.ds.train_set[idx.tolist()][0]
        else:
            raw = torch.stack([self.ds.train_set[int(i)][0] for i in idx])
        return self.ds.normalize(raw).numpy()


def draw_images(ds: Any, requested: int | None, checkpoint: Path | None = None) -> tuple[TrainImages, tuple]:
    """``(calibration, (x_val, y_val))`` from ``ds``'s training split (module docstring)."""
    from pipeline.datasets.base import eval_limit, eval_subset

    labels = np.asarray(ds.train_set.labels)
    n = calibration_count(len(labels), requested, ds.name, checkpoint)
    cal = eval_subset(labels, n)
    rest = np.setdiff1d(np.arange(len(labels)), cal)
    val = rest[eval_subset(labels[rest], eval_limit(ds.channels, ds.image_size))]
    return TrainImages(ds, cal), (TrainImages(ds, val)[:], labels[val])
