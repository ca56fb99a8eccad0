"""The RECOS experiments themselves (``pipeline.experiments.recos`` is the command and the tables).

``run(settings)`` trains four models on one data set and measures everything the tables
show; see ``pipeline.experiments.recos`` for what and why.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SCENES",
    "SCENE_WEIGHT",
    "backgrounds",
    "cascade",
    "composite",
    "disturbance",
    "one_layer",
    "rectification",
    "run",
]

SCENE_WEIGHT = 0.6
SCENES = 10


def backgrounds(size: int = 32, count: int = SCENES) -> torch.Tensor:
    """``count`` gray scenes ``[count, 1, size, size]`` (0..1): crops of scikit-learn's sample images.

    Crops alternate between the two images, at fixed positions along their diagonals,
    each a square of 3/5 of the image height, area-resized to ``size``.
    """
    from sklearn.datasets import load_sample_images

    images = [torch.tensor(im, dtype=torch.float32).mean(-1) / 255.0 for im in load_sample_images().images]
    out = []
    for i in range(count):
        im = images[i % len(images)]
        side = im.shape[0] * 3 // 5
        step = i // len(images)
        top = (im.shape[0] - side) * step // max(1, count // len(images) - 1)
        left = (im.shape[1] - side) * step // max(1, count // len(images) - 1)
        crop = im[top : top + side, left : left + side][None, None]
        out.append(F.interpolate(crop, size=(size, size), mode="area")[0])
    return torch.stack(out)


def composite(raw: torch.Tensor, scenes: torch.Tensor) -> torch.Tensor:
    """Raw images (0..1 float or uint8) on scene ``i % len(scenes)``: ``max(digit, SCENE_WEIGHT * scene)``."""
    x = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
    idx = torch.arange(len(x)) % len(scenes)
    return torch.maximum(x, SCENE_WEIGHT * scenes[idx].to(x.dtype).expand(-1, x.shape[1], -1, -1))


class OneLayer(nn.Module):
    """Eq. 22's one-layer system: one 13x13 convolution (LeNet's two-layer receptive field), stride 2, then LeNet's head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 16, 13, stride=2)  # 32 -> 10
        self.pool = nn.MaxPool2d(2)  # -> 5: the head's 16 x 5 x 5
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv(x))).flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def one_layer(*, in_channels: int = 1, num_classes: int = 10) -> OneLayer:
    return OneLayer(in_channels, num_classes)


def _train(factory, data, s) -> nn.Module:
    from pipeline.train import train

    torch.manual_seed(s.seed)
    model = factory(in_channels=data.channels, num_classes=data.num_classes)
    train(model, data, epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, seed=s.seed, progress=False, workers=0)
    return model.eval()


@torch.inference_mode()
def _logits(model: nn.Module, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean()) * 100


def _with_scenes(data, scenes: torch.Tensor):
    """``data`` with every training image also on a scene (twice the training set), raw images as float 0..1."""
    from pipeline.datasets.base import TensorImages

    raw, y = data.train_set.images, data.train_set.labels
    clean = raw.float() / 255.0 if raw.dtype == torch.uint8 else raw.float()
    images = torch.cat([clean, composite(raw, scenes)])
    return dataclasses.replace(data, train_set=TensorImages(images, torch.cat([y, y]), data.train_set.augment))


def rectification(model: nn.Module, data, raw: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Sec. 2's experiment: accuracies (%) on original and reversed images, with C1 as trained and negated."""
    from acl.recos import negate_first_layer

    x = data.normalize(raw)
    literal = data.normalize(255 - raw if raw.dtype == torch.uint8 else 1 - raw)  # Fig. 5's 1 - x
    negated = negate_first_layer(model)
    base, base_rev, neg, neg_rev = (_logits(m, v) for m, v in ((model, x), (model, -x), (negated, x), (negated, -x)))
    return {
        "original": _acc(base, y),
        "reversed": _acc(base_rev, y),  # 2 mean - x: -x once standardised
        "negated_original": _acc(neg, y),
        "negated_reversed": _acc(neg_rev, y),
        "swap_exact": bool(torch.equal(neg_rev, base) and torch.equal(neg, base_rev)),
        "literal_reversed": _acc(_logits(model, literal), y),
        "negated_literal_reversed": _acc(_logits(negated, literal), y),
    }


@torch.inference_mode()
def _responses(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LeNet's rectified layer-1 responses (conv1 + ReLU) and layer-2 responses (pool, conv2 + ReLU), per image."""
    r1 = F.relu(model.conv1(x))
    r2 = F.relu(model.conv2(model.pool(r1)))
    return r1.flatten(1), r2.flatten(1)


def disturbance(model: nn.Module, clean: torch.Tensor, noisy: torch.Tensor) -> dict[str, float]:
    """Fig. 8: mean over images of ``||r(noisy) - r(clean)|| / ||r(clean)||`` at layers 1 and 2."""
    out = {}
    for name, a, b in zip(("layer1", "layer2"), _responses(model, clean), _responses(model, noisy)):
        ratio = (b - a).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)
        out[name] = float(ratio.mean())
    return out


@torch.inference_mode()
def cascade(model: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Eqs. 12-21 on LeNet's conv1 -> conv2 (subsampling by 2 for the pooling): ``z = C^T x``,
    ``z' = C'^T x`` against the real rectified two-layer response ``z''``."""
    from acl.recos import composite_bias, composite_check, composite_kernel

    check = composite_check(model.conv1, model.conv2, x, subsample=2)
    w1, w2 = model.conv1.weight.double(), model.conv2.weight.double()
    bias = composite_bias(w2, model.conv1.bias.double(), model.conv2.bias.double())
    xd = x.double()
    z = F.conv2d(xd, composite_kernel(w1, w2), bias, stride=2)
    zr = F.conv2d(xd, composite_kernel(w1, w2, rectify=True), bias, stride=2)
    real = F.relu(model.conv2(F.relu(model.conv1(x))[:, :, ::2, ::2])).double()
    on = real > 0
    return {
        "check": check,
        "active": float(on.double().mean()),
        "z_vs_real": _compare(z[on], real[on]),
        "zr_vs_real": _compare(zr[on], real[on]),
    }


def _compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    if a.numel() < 2:
        return {"pearson": float("nan"), "rel_l2": float("nan")}
    r = torch.corrcoef(torch.stack([a, b]))[0, 1]
    return {"pearson": float(r), "rel_l2": float((a - b).norm() / b.norm().clamp_min(1e-300))}


def run(s, log=print) -> dict[str, Any]:
    """Every experiment, on ``s`` (``recos.Settings``); the results as plain numbers (``recos.markdown`` renders them)."""
    from acl.recos import anchor_table
    from pipeline.archs.lenet import lenet
    from pipeline.experiments.runner import load_data

    began = time.perf_counter()
    data = load_data(s.data, s.limit)
    raw, y = data.test_set.images, data.test_set.labels
    scenes = backgrounds(data.image_size)
    with_scenes = _with_scenes(data, scenes)
    log(f"recos: training 4 models ({s.epochs} epochs each) on {data.name}")
    models = {
        "lenet": _train(lenet, data, s),
        "lenet_scenes": _train(lenet, with_scenes, s),
        "one_layer": _train(one_layer, data, s),
        "one_layer_scenes": _train(one_layer, with_scenes, s),
    }
    x, x_bg = data.normalize(raw), data.normalize(composite(raw, scenes))
    doc: dict[str, Any] = {
        "settings": dataclasses.asdict(s),
        "data": data.describe(),
        "scenes": {"count": SCENES, "weight": SCENE_WEIGHT},
        "table1": anchor_table(models["lenet"]),
        "rectification": rectification(models["lenet"], data, raw, y),
        "backgrounds": {
            name: {
                "clean": _acc(_logits(m, x), y),
                "scenes": _acc(_logits(m, x_bg), y),
                **(disturbance(m, x, x_bg) if name.startswith("lenet") else {}),
            }
            for name, m in models.items()
        },
        "cascade": cascade(models["lenet"], x[:256]),
    }
    doc["seconds"] = time.perf_counter() - began
    return doc
