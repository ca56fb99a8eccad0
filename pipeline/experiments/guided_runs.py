"""GuidedSteer in a grid: a guided cell's run of seed ``s`` is guided by another cell's run of the next seed.

A cell with ``Cell.guide`` (ExplainFix's ``<arch>-fix-guidedsteer``, guided by the learned
baseline ``<arch>-fix-none``: the same architecture, spatial filters trained) takes its guide
kernels from the guide cell's run of seed ``seeds[(i + 1) % len(seeds)]``, ``i`` the index of its
own seed: the same architecture trained from another seed, as the paper's Algorithm 1 asks.
The guide's run keeps its trained model beside its record, ``runs/<cell>-seed<s>.safetensors``
(``pipeline.checkpoint``'s format), and the guided run reads it back with the job's
``--fix-guide`` reader (``pipeline.fix_guide``). So the runner runs the grid in two waves
(``waves``): every other run first, then the guided ones; a guide whose record exists but whose
model file does not (a grid finished before guided cells existed) runs again.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.experiments.grid import Cell, Grid

__all__ = ["guide_file", "guide_of", "is_guide", "load_guide", "save_guide", "waves"]


def guide_of(grid: Grid, cell: Cell, seed: int) -> tuple[Cell, int] | None:
    """The (cell, seed) whose trained model guides ``cell``'s run of ``seed``; None for an unguided cell."""
    if not cell.guide:
        return None
    guide = grid.cell(cell.guide)
    if guide is None:
        raise KeyError(f"cell {cell.id}'s guide {cell.guide!r} is not in the grid")
    seeds = list(grid.seeds)
    return guide, seeds[(seeds.index(seed) + 1) % len(seeds)]


def is_guide(grid: Grid, cell: Cell) -> bool:
    """Whether another cell of ``grid`` is guided by ``cell``'s runs (which then keep their trained models)."""
    return any(c.guide == cell.id for c in grid.cells)


def guide_file(runs_dir: Path, cell: Cell, seed: int) -> Path:
    return Path(runs_dir) / f"{cell.id}-seed{seed}.safetensors"


def save_guide(model, data, cell: Cell, seed: int, runs_dir: Path) -> None:
    """Keep a guide run's trained ``model`` (a checkpoint of ``pipeline.checkpoint``, metadata included)."""
    from pipeline import checkpoint

    meta = {
        "arch": cell.arch,
        "spec": cell.spec or "none",
        "convert_layers": "all",
        "in_channels": data.channels,
        "num_classes": data.num_classes,
        "image_size": data.image_size,
    }
    checkpoint.save(model, guide_file(runs_dir, cell, seed), meta)


def load_guide(grid: Grid, cell: Cell, seed: int, runs_dir: Path) -> dict | None:
    """The guide kernels of ``cell``'s run of ``seed``, ``{layer: kernels}``; None when its guide run kept no model."""
    from pipeline.fix_guide import read_guide

    guide, guide_seed = guide_of(grid, cell, seed)
    path = guide_file(runs_dir, guide, guide_seed)
    if not path.is_file():  # the guide run diverged (nothing trained to keep)
        return None
    return read_guide(path, arch=cell.arch)


def waves(grid: Grid, todo: list[tuple[Cell, int]], runs_dir: Path) -> list[list[tuple[Cell, int]]]:
    """``todo`` as [unguided runs, guided runs] (empty waves left out); a guided run needs its guide's model.

    A guide run already recorded without its model file (but not diverged) is added to the first wave.
    """
    pending = set((c.id, s) for c, s in todo)
    first = [(c, s) for c, s in todo if not c.guide]
    for cell, seed in [(c, s) for c, s in todo if c.guide]:
        guide, guide_seed = guide_of(grid, cell, seed)
        if (guide.id, guide_seed) not in pending and not _kept(runs_dir, guide, guide_seed):
            first.append((guide, guide_seed))
            pending.add((guide.id, guide_seed))
    second = [(c, s) for c, s in todo if c.guide]
    return [w for w in (first, second) if w]


def _kept(runs_dir: Path, cell: Cell, seed: int) -> bool:
    """Whether a recorded guide run has its model file, or needs none (it diverged: nothing to keep)."""
    import json

    if guide_file(runs_dir, cell, seed).is_file():
        return True
    try:
        return json.loads((Path(runs_dir) / f"{cell.id}-seed{seed}.json").read_text()).get("accuracy") is None
    except (OSError, ValueError):
        return False
