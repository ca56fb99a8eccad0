"""Small models and images for the INT8 tests: BatchNorm, a residual depthwise block, a 1x1 conv, and a fragile one."""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

import acl
from tests.conftest import trained_looking_bn

IMAGE = (1, 8, 8)  # scikit-learn's digits as they are shipped


class Residual(nn.Module):
    """Depthwise 3x3, BatchNorm, pointwise 1x1, BatchNorm, added to its input."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.pw = nn.Conv2d(c, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.pw(torch.relu(self.bn1(self.dw(x))))))


@functools.lru_cache(maxsize=None)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 digits, 8x8, standardised, and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0 - 0.3) / 0.35
    return x[:, None].astype(np.float32), d.target.astype(np.int64)


def train(model: nn.Module, steps: int = 60, seed: int = 0) -> nn.Module:
    """A few Adam steps on batches of the first 1200 digits: logits that depend on the image, as a trained model's do."""
    x, y = digits()
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(steps):
        i = (step * 200) % 1200
        opt.zero_grad()
        nn.functional.cross_entropy(
            model(torch.from_numpy(x[i : i + 200])), torch.from_numpy(y[i : i + 200])
        ).backward()
        opt.step()
    return model.eval()


def resnet_like(seed: int = 0) -> nn.Module:
    """A trained AnaNN with BatchNorm, a residual depthwise block and a 1x1 conv."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        Residual(8),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    return train(trained_looking_bn(acl.convert(net, "G0.25Lg0.25P0.5", layers="all"), IMAGE))


def fragile(seed: int = 0, scale: float = 2000.0) -> nn.Module:
    """A plain CNN whose ``2`` conv has one output channel ``scale`` times the others, undone by the next layer.

    The function is unchanged, but that channel sets the per-tensor INT8 scale of
    the activation, and the other channels lose their resolution (the default
    job's ``conv2`` does this with kernel families of weights 0.18 and 12.2).
    """
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    train(net, seed=seed)
    with torch.no_grad():
        net[2].weight[0] *= scale
        net[2].bias[0] *= scale
        net[4].weight[:, 0] /= scale
    return net.eval()


def splits() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Calibration (200) and validation (400) images from the 1200 training digits; the other 597 for tests."""
    x, y = digits()
    return {"calibration": (x[:200], y[:200]), "validation": (x[200:600], y[200:600]), "test": (x[1200:], y[1200:])}


def export_static(model: nn.Module, path, image=IMAGE):
    import export

    return export.to_onnx(model, path, (1, *image), mode="static")
