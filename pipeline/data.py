"""Data sets, as used by the pipeline: ``load_dataset(name)`` and friends.

The implementations live in ``pipeline.datasets`` (one module per source); this
module keeps the names the rest of the code and older imports use.
"""

from __future__ import annotations

from pipeline.datasets import DATA_HELP, BadImage, Dataset, format_channels, load_dataset, parse_channels
from pipeline.datasets.cifar10 import load_cifar10_dataset, read_cifar_batch
from pipeline.datasets.digits import load_digits_dataset, preprocess
from pipeline.datasets.folder import load_folder_dataset
from pipeline.datasets.mnist import MAX_IDX_BYTES, load_mnist_dataset, read_idx

__all__ = [
    "DATA_HELP",
    "MAX_IDX_BYTES",
    "BadImage",
    "Dataset",
    "format_channels",
    "load_cifar10_dataset",
    "load_dataset",
    "load_digits_dataset",
    "load_folder_dataset",
    "load_mnist_dataset",
    "parse_channels",
    "preprocess",
    "read_cifar_batch",
    "read_idx",
]
