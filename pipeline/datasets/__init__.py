"""Data sets from local files (nothing is downloaded): ``load_dataset(name)``.

=====================  ==========================================================
``--data``             what
=====================  ==========================================================
``digits``             scikit-learn's handwritten digits, 1x32x32 (``digits``)
``mnist:DIR``          MNIST's four IDX files, 1x32x32 (``mnist``)
``cifar10:DIR``        CIFAR-10's binary batches, 3x32x32 (``cifar10``)
``folder:DIR[:SIZE]``  ``DIR/<class>/*.jpg|jpeg|png``, 3xSIZExSIZE, default 224 (``folder``)
=====================  ==========================================================

Every loader returns a ``Dataset`` (``base``) and raises ``ValueError`` naming
what is wrong and what was expected.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.datasets.base import EVAL_BYTES, EVAL_IMAGES, Dataset, format_channels, parse_channels
from pipeline.datasets.cifar10 import load_cifar10_dataset
from pipeline.datasets.digits import load_digits_dataset
from pipeline.datasets.folder import DEFAULT_IMAGE_SIZE, BadImage, load_folder_dataset
from pipeline.datasets.mnist import load_mnist_dataset

__all__ = [
    "DATA_CHANNELS",
    "DATA_HELP",
    "EVAL_BYTES",
    "EVAL_IMAGES",
    "BadImage",
    "Dataset",
    "format_channels",
    "load_dataset",
    "parse_channels",
    "split_folder_spec",
]

DATA_HELP = "'digits', 'mnist:DIR', 'cifar10:DIR' or 'folder:DIR[:SIZE]'"
DATA_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "folder": 3}
"""Image channels per ``--data`` kind (the table above), known before any file is read."""


def split_folder_spec(rest: str) -> tuple[str, int]:
    """``DIR[:SIZE]`` -> (DIR, SIZE); a trailing ``:digits`` is the size unless ``DIR`` itself exists so named.

    Raises:
        ValueError: a SIZE that is not a whole number after an existing folder (``:abc``, ``:-5``).
    """
    head, sep, tail = rest.rpartition(":")
    if not sep or not head or Path(rest).is_dir():
        return rest, DEFAULT_IMAGE_SIZE
    if tail.isdigit():
        return head, int(tail)  # 0 and huge sizes are refused with the image size's own message
    if Path(head).is_dir():  # not a size, after a folder that exists: not part of the folder's name
        raise ValueError(
            f"--data folder:{rest}: SIZE {tail!r} is not usable, expected a positive whole number of pixels"
        )
    return rest, DEFAULT_IMAGE_SIZE


def load_dataset(name: str, *, norm=None) -> Dataset:
    """The data set ``name`` (a ``--data`` value), standardised with ``norm`` (per-channel mean, std) if given.

    Raises:
        ValueError: unknown name, or bad files (named).
    """
    kind, sep, rest = name.partition(":")
    if name == "digits":
        return load_digits_dataset(norm=norm)
    if sep and rest:
        if kind == "mnist":
            return load_mnist_dataset(rest, norm=norm)
        if kind == "cifar10":
            return load_cifar10_dataset(rest, norm=norm)
        if kind == "folder":
            folder, size = split_folder_spec(rest)
            return load_folder_dataset(folder, image_size=size, norm=norm)
    raise ValueError(f"unknown --data {name!r}; expected {DATA_HELP}")
