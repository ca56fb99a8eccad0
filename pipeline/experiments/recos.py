"""``python -m pipeline.reproduce --paper recos``: Kuo's RECOS experiments on LeNet-5, ours beside the paper's.

1. Table 1: LeNet-5's anchor table (``acl.recos.anchor_table``).
2. Rectification (Sec. 2): accuracy on the original and the gray-reversed test images,
   and with the first layer's weights negated (the paper: 98.94 % and 37.36 %, swapped).
   Reversal reflects an image about the data's mean, ``2 mean - x``: ``-x`` once
   standardised, so the swap is exact (``negate_first_layer``); the literal ``1 - x``
   of Fig. 5 is reported beside it (not an exact swap: the reflection's centre moves).
3. Fig. 8: digits composited on 10 scenes cropped from scikit-learn's two bundled sample
   images (``max(digit, 0.6 scene)``); a LeNet trained on the originals plus their
   composites; how much a background changes each layer's rectified responses
   (``||r(bg) - r(clean)|| / ||r(clean)||``, per image, mean): the paper shows layer 1
   disturbed more than layer 2 (qualitative).
4. Eq. 22: a one-layer system (``Conv2d(C, 16, 13, stride 2)``, ReLU, 2x2 max-pool, LeNet's
   head) against LeNet-5, both trained the same way, on clean and background test images;
   and LeNet's composite kernel ``C`` (``composite_check``), ``C' = Rec(C)`` and the real
   rectified two-layer response ``z''`` compared.

Differences: the paper trains LeNet-5 with sigmoids on MNIST; ours uses ReLU and
max-pooling (``pipeline.archs.lenet``), on scikit-learn's 8x8 digits upsampled to 32x32
unless ``--data mnist:DIR``: compare directions, not values.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EPOCHS", "PAPER", "Settings", "backgrounds", "one_layer", "run"]

PAPER = {
    "table1": [("C1/S2", 26, 6), ("C3/S4", 150, 16), ("C5", 400, 120), ("F6", 120, 84), ("Output", 84, 10)],
    "original": 98.94,
    "reversed": 37.36,
    "negated_original": 37.36,
    "negated_reversed": 98.94,
}
"""As printed (Table 1; Sec. 2's accuracies in %)."""
EPOCHS = {"quick": 4, "full": 20}
SCENE_WEIGHT = 0.6
SCENES = 10


@dataclasses.dataclass(frozen=True)
class Settings:
    data: str = "digits"
    epochs: int = EPOCHS["full"]
    limit: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


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


def _train(factory, data, s: Settings) -> nn.Module:
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


def run(s: Settings, log=print) -> dict[str, Any]:
    """Every experiment of the module docstring; the results as plain numbers (``markdown`` renders them)."""
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
        "paper": PAPER,
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


def write(doc: dict[str, Any], out: Path) -> list[Path]:
    """``recos.json`` and ``recos.md`` into ``out``, each written atomically."""
    from export.atomic import atomic_output

    files = []
    for name, text in (("recos.json", json.dumps(doc, indent=1) + "\n"), ("recos.md", "\n".join(markdown(doc)) + "\n")):
        with atomic_output(Path(out) / name) as tmp:
            tmp.write_text(text)
        files.append(Path(out) / name)
    return files


def _table1(doc: dict[str, Any]) -> list[str]:
    lines = ["## Table 1: LeNet-5's anchors", "", "| layer | paper | N (paper) | K (paper) | N (ours) | K (ours) |"]
    lines.append("|---|---|---|---|---|---|")
    for (paper_name, n, k), row in zip(PAPER["table1"], doc["table1"]):
        lines.append(f"| `{row['layer']}` | {paper_name} | {n} | {k} | {row['N']} | {row['K']} |")
    return [*lines, "", "N of the first layer includes the patch mean (Eqs. 5-8); every layer here also has a bias."]


def _rectification(doc: dict[str, Any]) -> list[str]:
    r, p = doc["rectification"], PAPER
    return [
        "",
        "## Rectification (Sec. 2, Fig. 5): accuracy, %",
        "",
        "| model | original (paper) | original (ours) | reversed (paper) | reversed (ours) | reversed 1 - x (ours) |",
        "|---|---|---|---|---|---|",
        f"| LeNet-5 | {p['original']} | {r['original']:.2f} | {p['reversed']} | {r['reversed']:.2f} | "
        f"{r['literal_reversed']:.2f} |",
        f"| C1 negated | {p['negated_original']} | {r['negated_original']:.2f} | {p['negated_reversed']} | "
        f"{r['negated_reversed']:.2f} | {r['negated_literal_reversed']:.2f} |",
        "",
        "Reversed: each image reflected about the data's mean (2 mean - x, which is -x once standardised). "
        f"Swap exact (negated model on reversed images = model on originals, logits bit-identical): "
        f"**{'yes' if r['swap_exact'] else 'NO'}**. The literal 1 - x of Fig. 5 also moves the reflection's centre, "
        "so its swap is not exact.",
    ]


def _backgrounds(doc: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Backgrounds (Fig. 8): {SCENES} scenes from scikit-learn's sample images, max(digit, {SCENE_WEIGHT} scene)",
        "",
        "| model | trained on | accuracy clean, % | accuracy on scenes, % | layer-1 change | layer-2 change |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in doc["backgrounds"].items():
        model = "LeNet-5 (two layers)" if name.startswith("lenet") else "one layer (Eq. 22)"
        trained = "digits + scenes" if name.endswith("scenes") else "digits"
        change = [f"{e[k]:.3f}" if k in e else "-" for k in ("layer1", "layer2")]
        lines.append(f"| {model} | {trained} | {e['clean']:.2f} | {e['scenes']:.2f} | {change[0]} | {change[1]} |")
    lines += [
        "",
        "Change: ||r(scene) - r(clean)|| / ||r(clean)|| of the rectified responses, mean over test images. The paper "
        "(qualitative): backgrounds disturb layer-1 responses more than layer-2 responses.",
    ]
    return lines


def _cascade(doc: dict[str, Any]) -> list[str]:
    c = doc["cascade"]
    k = c["check"]
    return [
        "",
        "## Cascade (Eqs. 12-22)",
        "",
        f"- Composite kernel of conv1 and conv2 (subsampling by 2 in place of pooling): {k['kernel']}, stride "
        f"{k['stride'][0]}; equals the two-layer linear path to {k['max_abs']:.1e} (max abs, {k['positions']} positions).",
        f"- Against the real rectified response z'' (ReLU after both layers), where it is positive "
        f"({c['active'] * 100:.1f} % of outputs): z = C^T x Pearson {c['z_vs_real']['pearson']:.3f}, "
        f"rel. L2 {c['z_vs_real']['rel_l2']:.3f}; z' = Rec(C)^T x Pearson {c['zr_vs_real']['pearson']:.3f}, "
        f"rel. L2 {c['zr_vs_real']['rel_l2']:.3f}.",
    ]


def markdown(doc: dict[str, Any]) -> list[str]:
    s = doc["settings"]
    head = [
        "# RECOS (Kuo) reproduced",
        "",
        f"Data: {doc['data']}. {s['epochs']} epochs, Adam lr {s['lr']}, batch {s['batch_size']}, seed {s['seed']}; "
        f"{doc['seconds']:.0f} s. The paper: LeNet-5 with sigmoids on MNIST; ours: ReLU and max-pooling "
        "(digits upsampled from 8x8 unless MNIST is given): compare directions, not values.",
        "",
    ]
    return head + _table1(doc) + _rectification(doc) + _backgrounds(doc) + _cascade(doc)


ACL_ONLY = {"seeds": None, "sweep_arch": "lenet", "jobs": None, "finetune": 0}
"""``pipeline.reproduce`` options of the ACL grid alone, and their defaults."""


def settings_of(args) -> Settings:
    """The ``pipeline.reproduce`` options as ``Settings``.

    Raises:
        UserError: an option of the ACL grid, or a value out of range.
    """
    from pipeline.early_checks import data_problem
    from pipeline.errors import UserError

    given = [k for k, default in ACL_ONLY.items() if getattr(args, k, default) != default]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UserError(f"{flag} applies to the ACL paper's grid, expected it without --paper recos")
    epochs = args.epochs if args.epochs is not None else EPOCHS["quick" if args.quick else "full"]
    for flag, value in (("--epochs", epochs), ("--batch-size", args.batch_size)):
        if value < 1:
            raise UserError(f"{flag} {value} is not usable, expected a positive integer")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise UserError(f"--lr {args.lr} is not usable, expected a positive finite number")
    if args.limit is not None and args.limit < 10:
        raise UserError(f"--limit {args.limit} is too small, expected at least 10 images")
    problem = data_problem(args.data)
    if problem:
        raise UserError(problem)
    return Settings(data=args.data, epochs=epochs, limit=args.limit, batch_size=args.batch_size, lr=args.lr)


def main(args) -> int:
    """``python -m pipeline.reproduce --paper recos``: 0, or 2 with one ``error:`` line for bad input."""
    import sys

    from pipeline.errors import UserError

    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    out = Path(args.out)
    try:
        s = settings_of(args)
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder")
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the ACL grid's runs: small models, a shared machine (4x faster on 2 busy cores)
        try:
            doc = run(s, log=say)
        except ValueError as e:  # bad data files, named by the loader
            raise UserError(str(e)) from None
        finally:
            torch.set_num_threads(threads)
    except UserError as e:
        say(f"error: {e}")
        return 2
    write(doc, out)
    say(f"wrote {out}/recos.md ({doc['seconds']:.0f} s)")
    return 0
