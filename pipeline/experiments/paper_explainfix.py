"""ExplainFix's numbers and claims, as printed (Gaudio et al.; the design brief's part A), for comparison only.

The paper trains ResNet50, DenseNet121 and EfficientNet-b0 on CheXpert (chest x-rays,
five tasks, ROC AUC) and a U-Net on BBBC038v1 (microscopy segmentation). Ours are
LeNet and AnaNN-LeNet (and the 4-layer CNN in the full grid) on scikit-learn's digits
(or MNIST / CIFAR-10), top-1 accuracy. Compare orderings, not values.
"""

from __future__ import annotations

__all__ = [
    "DATA_NOTE",
    "INIT_CLAIMS",
    "NOT_STEERED",
    "SANITY_CLAIMS",
    "STEERED",
    "TABLE3_SECONDS",
    "TABLE_M1",
]

DATA_NOTE = (
    "Paper: ResNet50, DenseNet121 and EfficientNet-b0 on CheXpert (ROC AUC over five tasks) and a U-Net on "
    "BBBC038v1; ours: LeNet / AnaNN-LeNet (and the 4-layer CNN in the full grid) on the data named above, final-epoch "
    "test top-1. Compare orderings, not values."
)

STEERED = ("unchanged", "ghaar", "psine", "guidedsteer")
"""Sec. 3.1: the steered initialisations (GuidedSteer's guide here: the learned baseline of another seed)."""
NOT_STEERED = ("ones", "dct2")

INIT_CLAIMS = (
    "Sec. 4.1, Fig. 8 (BBBC038v1): steered fixed models significantly outperform the non-steered ones (Ones, DCT2); "
    "GHaar significantly outperforms the learned baseline.",
    "Fig. 10 (CheXpert): steered fixed models approximately equal the learned baseline; DCT2 is lower.",
)

SANITY_CLAIMS = (
    "App. I, Fig. I.1: zeroing the least salient kernels gives no performance drop in some cases even when 50 % "
    "of kernels are zeroed.",
    "Removing less than 3 % of the most salient kernels makes the models' output random.",
)

TABLE_M1: dict[tuple[str, float], float] = {
    ("DenseNet121", 80.0): 0.58,
    ("DenseNet121", 90.0): 0.74,
    ("ResNet50", 90.0): 0.52,
    ("ResNet50", 99.0): 0.79,
    ("ResNet50", 99.9): 0.86,
}
"""(model, % of spatial kernels zeroed) -> fraction of all parameters ChannelPrune removed."""

TABLE3_SECONDS: dict[str, tuple[int, int]] = {
    "ResNet50": (191, 231),
    "DenseNet121": (347, 383),
    "EfficientNet-b0": (259, 267),
}
"""Seconds per training epoch, (pruned, not pruned)."""
