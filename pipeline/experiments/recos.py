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

This module (options, tables, files) imports no PyTorch, so bad options are refused at
once; the experiments are ``pipeline.experiments.recos_runs``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

__all__ = ["EPOCHS", "PAPER", "Settings", "main", "markdown", "settings_of", "write"]

PAPER = {
    "table1": [("C1/S2", 26, 6), ("C3/S4", 150, 16), ("C5", 400, 120), ("F6", 120, 84), ("Output", 84, 10)],
    "original": 98.94,
    "reversed": 37.36,
    "negated_original": 37.36,
    "negated_reversed": 98.94,
}
"""As printed (Table 1; Sec. 2's accuracies in %)."""
EPOCHS = {"quick": 4, "full": 20}


@dataclasses.dataclass(frozen=True)
class Settings:
    data: str = "digits"
    epochs: int = EPOCHS["full"]
    limit: int | None = None
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


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
        f"## Backgrounds (Fig. 8): {doc['scenes']['count']} scenes from scikit-learn's sample images, "
        f"max(digit, {doc['scenes']['weight']} scene)",
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
    from pipeline.early_checks import data_problem, in_memory_data_problem
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
    problem = data_problem(args.data) or in_memory_data_problem(args.data, "recos")
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
        s = settings_of(args)  # before torch is imported: a typo is refused at once
        if out.exists() and not out.is_dir():
            raise UserError(f"--out {out} exists and is not a folder")
        try:
            doc = {**_one_thread(s, say), "paper": PAPER}
        except ValueError as e:  # bad data files, named by the loader
            raise UserError(str(e)) from None
    except UserError as e:
        say(f"error: {e}")
        return 2
    write(doc, out)
    say(f"wrote {out}/recos.md ({doc['seconds']:.0f} s)")
    return 0


def _one_thread(s: Settings, log) -> dict[str, Any]:
    """``recos_runs.run`` on one PyTorch thread (as the ACL grid's runs: small models, 4x faster on 2 busy cores)."""
    import torch

    from pipeline.experiments.recos_runs import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run(s, log=log)
    finally:
        torch.set_num_threads(threads)
