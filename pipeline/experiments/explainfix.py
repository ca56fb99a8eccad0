"""ExplainFix's experiments (``python -m pipeline.reproduce --paper explainfix``): the grid and each run's extras.

Cells (the same ``Grid``/``Cell`` and runner as the ACL paper's, so resumption works alike):

- Sec. 4.1, initialisation methods vs learned: ``<arch>-fix-<method>`` for every method of
  ``acl.fix_spatial`` (``none`` is the learned baseline), plain networks, spatial filters
  set and frozen before training from the run's seed. ``<arch>-fix-guidedsteer``'s guide is the
  learned baseline ``<arch>-fix-none`` of the next seed (the same architecture trained from another
  seed; ``pipeline.experiments.guided_runs``), so the runner runs it after those.
- App. I, the saliency sanity check (``sanity``): on the learned baseline and on AnaNN-LeNet
  (exp3's arrangement, ``lenet-exp3``), the x % least salient, random and most salient spatial
  kernels zeroed (``acl.zero_kernels``), test accuracy, for x in ``PERCENTS``, both Eq. 4
  variants. Saliency from 15 minibatches of 4 training images picked by the run's seed.
- Table 3 / Table M.1 (ChannelPrune): ``<arch>-prune<p>`` (``pruning_cells``), GHaar-fixed spatial
  filters, trained, then p % of the spatial kernels zeroed by saliency, channels removed, FillZero,
  fine-tuned, seconds per epoch pruned vs not (``pipeline.experiments.explainfix_pruning``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from pipeline.experiments.grid import Cell, Grid, Settings, arrangement, ratio_form

__all__ = ["FULL", "METHODS", "PERCENTS", "QUICK", "build_explainfix_grid", "pruning_cells", "sanity"]

METHODS = ("none", "unchanged", "ones", "dct2", "ghaar", "psine", "guidedsteer")
"""``acl.fixing.METHODS`` (repeated without torch; a test keeps them equal)."""
PERCENTS = (1, 3, 10, 30, 50)
MINIBATCHES, BATCH = 15, 4
QUICK = Settings(seeds=3, epochs={"lenet": 6, "cnn4": 3}, table3_trained=False)
FULL = Settings(seeds=5, epochs={"lenet": 15, "cnn4": 6}, table3_trained=False)
QUICK_ARCHS, FULL_ARCHS = ("lenet",), ("lenet", "cnn4")

# Table 3 / Table M.1 (ChannelPrune, ``pipeline.experiments.explainfix_pruning``): % zeroed per
# architecture, and the fine-tuning epochs after pruning (not changed by --epochs: they are Table 3's).
QUICK_PRUNE = {"lenet": (50, 90)}
FULL_PRUNE = {"lenet": (50, 80, 90, 99), "cnn4": (50, 80, 90, 99)}
PRUNE_FINETUNE = {"lenet": 2, "cnn4": 2}
PRUNE_FIX = "ghaar"  # ExplainFix's pipeline: fixed (steered) spatial filters, then explained and pruned


def pruning_cells(quick: bool, epochs) -> list[Cell]:
    """Table 3 / M.1's cells: ``<arch>-prune<p>``, GHaar-fixed, trained ``epochs(arch)`` epochs, then pruned."""
    cells = []
    for arch, percents in (QUICK_PRUNE if quick else FULL_PRUNE).items():
        for p in percents:
            fields = {"fix": PRUNE_FIX, "prune": float(p), "prune_finetune": PRUNE_FINETUNE[arch]}
            cells.append(Cell(f"{arch}-prune{p:g}", arch, f"prune{p:g}", None, epochs(arch), **fields))
    return cells


def build_explainfix_grid(
    data: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    limit: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
) -> Grid:
    """The quick or full ExplainFix grid (module docstring); ``seeds`` and ``epochs`` override.

    Raises:
        ValueError: fewer than 3 seeds, epochs or limit below 1.
    """
    settings = QUICK if quick else FULL
    n_seeds = settings.seeds if seeds is None else seeds
    if n_seeds < 3:
        raise ValueError(f"--seeds {n_seeds} is too few, expected at least 3 (a spread needs them)")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs {epochs} is not usable, expected a positive integer")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} is not usable, expected a positive integer")

    def ep(arch: str) -> int:
        return settings.epochs[arch] if epochs is None else epochs

    cells = []
    for arch in QUICK_ARCHS if quick else FULL_ARCHS:
        for method in METHODS:
            guide = f"{arch}-fix-none" if method == "guidedsteer" else None
            cells.append(Cell(f"{arch}-fix-{method}", arch, f"fix-{method}", None, ep(arch), fix=method, guide=guide))
        cells[-len(METHODS)] = replace(cells[-len(METHODS)], sanity=True)  # the learned baseline
    cells.append(Cell("lenet-exp3", "lenet", "exp3", ratio_form(arrangement("exp3")), ep("lenet"), sanity=True))
    cells.extend(pruning_cells(quick, ep))
    return Grid(
        data=data,
        limit=limit,
        seeds=tuple(range(n_seeds)),
        sweep_arch="lenet",
        batch_size=batch_size,
        lr=lr,
        optimizer="adam",
        cells=tuple(cells),
        paper="explainfix",
    )


def _random_like(s, seed: int):
    """A ``Saliency`` of random scores (one ranking per seed): the random baseline of the sanity check."""
    import torch

    from acl.saliency import Saliency

    g = torch.Generator().manual_seed(10_000 + seed)
    return Saliency(
        s.variant,
        s.minibatches,
        s.batch_size,
        {k: torch.rand(v.shape, generator=g) for k, v in s.kernels.items()},
        s.families,
    )


def sanity(model, data, seed: int, percents=PERCENTS) -> dict[str, Any]:
    """App. I on a trained ``model``: test top-1 % with x % of its spatial kernels zeroed, least / random / most salient.

    Returns:
        ``{"kernels", "minibatches", "batch_size", "percents": {x: {"zeroed", "random", "weight_grad":
        {"least", "most"}, "grad": {...}}}}`` (x as a string, for JSON).
    """
    import torch

    import acl
    from acl.saliency import VARIANTS
    from pipeline.train import evaluate

    batch = min(BATCH, data.train_size)
    count = min(MINIBATCHES, data.train_size // batch)
    pick = torch.randperm(data.train_size, generator=torch.Generator().manual_seed(seed))[: count * batch]
    x, y = data.x_train[pick], data.y_train[pick]
    scores = {v: acl.kernel_saliency(model, x, y, minibatches=count, batch_size=batch, variant=v) for v in VARIANTS}
    n = sum(k.numel() for k in scores["grad"].kernels.values())
    rand = _random_like(scores["grad"], seed)

    def acc(s, k: int, most: bool = False) -> float:
        return 100.0 * evaluate(acl.zero_kernels(model, s, k, most=most), data, workers=0)

    out: dict[str, Any] = {"kernels": n, "minibatches": count, "batch_size": batch, "percents": {}}
    for pct in percents:
        k = max(1, round(n * pct / 100))
        row: dict[str, Any] = {"zeroed": k, "random": acc(rand, k)}
        for v, s in scores.items():
            row[v] = {"least": acc(s, k), "most": acc(s, k, most=True)}
        out["percents"][str(pct)] = row
    return out
