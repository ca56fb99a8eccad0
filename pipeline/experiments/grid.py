"""The experiment grid: which models are trained (cells), for how long, over which seeds.

A *cell* is one model configuration (architecture, arrangement spec, epochs); a *run*
is one cell trained from one seed. The paper's arrangements (printed as counts over
the 3x64 kernels of ResNet-34's first convolution) become ratios of 192
(``ratio_form``), so each fits any layer: every convolution of the model becomes an
ACL with the same ratios (``acl.parse_spec`` rounds them to whole counts per layer).

Tables and cells (``S`` is the sweep architecture, AnaNN-LeNet by default):

- AnaNN tests (sec. 4.2): ``lenet-plain``, ``lenet-exp3``, ``cnn4-plain``, ``cnn4-exp3``.
- Table 1: ``S-exp1`` .. ``S-exp7``.
- Table 2: ``S-exp3``, ``S-t2exp7``, ``S-t2exp8`` (Table 2's own exp7 and exp8).
- Table 3: ``S-exp3``'s trained models with families replaced by Mean kernels
  (``acl.ablate``, no retraining; with ``finetune`` N > 0 also fine-tuned N epochs),
  ``S-exp7`` (all Mean, trained) and, in the full
  grid, models trained from scratch with Table 3's arrangements: the ablated ones
  ``S-exp9`` .. ``S-exp14`` and the single-family ones ``S-exp16`` .. ``S-exp19``.

A cell that two tables name is trained once.

>>> ratio_form("G30Lg15Lt15Tf36P96")
'G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5'
>>> [c.id for c in build_grid("digits", quick=True).cells][:4]
['lenet-plain', 'lenet-exp3', 'cnn4-plain', 'cnn4-exp3']
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction

from pipeline.experiments import paper

__all__ = [
    "ABLATIONS",
    "ANANN_ROWS",
    "ARCHS",
    "FULL",
    "QUICK",
    "TABLE3_TRAINED",
    "Cell",
    "Grid",
    "Settings",
    "arrangement",
    "build_grid",
    "ratio_form",
]

ARCHS = ("lenet", "cnn4")
PAPER_KERNELS = 192  # 3x64: ResNet-34's first convolution, where the paper's counts live

ABLATIONS: dict[str, tuple[str, ...]] = {
    "exp9": ("G",),
    "exp10": ("Lg",),
    "exp11": ("Lt",),
    "exp12": ("Tf",),
    "exp13": ("P",),
    "exp14": ("G", "Lg", "Lt", "Tf"),
    "exp15": ("G", "Lg", "Lt", "Tf", "P"),
}
"""Table 3's rows as Mean substitutions of exp3's families (exp14: every ACK; exp15: every kernel)."""

ANANN_ROWS = (
    ("LeNet", "lenet-plain"),
    ("AnaNN-LeNet", "lenet-exp3"),
    ("4-layer CNN", "cnn4-plain"),
    ("4-layer AnaNN", "cnn4-exp3"),
)


@dataclass(frozen=True)
class Settings:
    """What ``--quick`` and the full grid mean: seeds and epochs per architecture, extra cells."""

    seeds: int
    epochs: dict[str, int]
    table3_trained: bool  # Table 3's exp9-14 and exp16-19 trained from scratch: ten more sweep cells


QUICK = Settings(seeds=3, epochs={"lenet": 6, "cnn4": 3}, table3_trained=False)
FULL = Settings(seeds=5, epochs={"lenet": 30, "cnn4": 15}, table3_trained=True)
TABLE3_TRAINED = ("exp9", "exp10", "exp11", "exp12", "exp13", "exp14", "exp16", "exp17", "exp18", "exp19")


def ratio_form(counts: str, total: int = PAPER_KERNELS) -> str:
    """A count-form arrangement of ``total`` kernels as exact ratios (the paper's are multiples of 1/64)."""
    out = []
    for sym, n in re.findall(r"([A-Z][a-z]?)(\d+)", counts):
        r = Fraction(int(n), total)
        out.append(f"{sym}{float(r)!r}")
    return "".join(out)


def arrangement(exp: str) -> str:
    """The paper's count-form arrangement of an experiment name of ours (``exp3``, ``t2exp7``, ``exp16``)."""
    if exp.startswith("t2"):
        return paper.TABLE2[exp[2:]][0]
    if exp in paper.TABLE1:
        return paper.TABLE1[exp][0]
    return paper.TABLE3[exp][0]


@dataclass(frozen=True)
class Cell:
    """One model configuration.

    Attributes:
        id: ``<arch>-<exp>`` or ``<arch>-plain``; names the runs' files.
        arch: ``lenet`` or ``cnn4``.
        exp: the paper's experiment name (``exp3``, ``t2exp7``) or ``plain``.
        spec: ratio-form arrangement for every convolution; None: the plain CNN.
        epochs: training epochs.
        ablate: evaluate Table 3's Mean substitutions on the trained model.
        fix: ExplainFix (``--paper explainfix``): an ``acl.fix_spatial`` method applied before training.
        sanity: ExplainFix: the saliency sanity check (App. I) on the trained model.
        prune: ExplainFix: ChannelPrune's Table 3 / M.1 with this % of spatial kernels zeroed, on the trained model.
        prune_finetune: ExplainFix: epochs of fine-tuning after pruning (with ``prune``).
        guide: ExplainFix's GuidedSteer (``fix="guidedsteer"``): the id of the cell whose trained
            model of another seed guides this one (``pipeline.experiments.guided_runs``).
    """

    id: str
    arch: str
    exp: str
    spec: str | None
    epochs: int
    ablate: bool = False
    fix: str | None = None
    sanity: bool = False
    prune: float | None = None
    prune_finetune: int = 0
    guide: str | None = None

    def to_json(self) -> dict:
        """The cell as JSON; ``fix`` and ``sanity`` only when set, so ACL grids and run keys stay as they were."""
        doc = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if doc[name] == default:
                del doc[name]
        return doc


_LATER_FIELDS = {"fix": None, "sanity": False, "prune": None, "prune_finetune": 0, "guide": None}
"""Fields added with ``--paper explainfix``, left out of the JSON at their defaults (``Cell.to_json``)."""


@dataclass(frozen=True)
class Grid:
    """Everything that determines the results: a resumed grid must equal the stored one exactly.

    Attributes:
        data: ``--data`` value.
        limit: at most this many training and test images (the first of each split); None: all.
        seeds: training seeds; each run's model initialisation and data order derive from its seed only.
        sweep_arch: the architecture of Tables 1-3.
        batch_size, lr, optimizer: training (``pipeline.train``).
        cells: the models, in table order.
        finetune: epochs of fine-tuning for each of Table 3's ablated models after its zero-shot
            accuracy (``--finetune``); 0: none. A grid stored before this field existed means 0.
        paper: ``acl`` (Cui et al.) or ``explainfix`` (Gaudio et al., ``pipeline.experiments.explainfix``);
            left out of the JSON when ``acl``, so the ACL grids stored before it existed still resume.
    """

    data: str
    limit: int | None
    seeds: tuple[int, ...]
    sweep_arch: str
    batch_size: int
    lr: float
    optimizer: str
    cells: tuple[Cell, ...] = field(default_factory=tuple)
    finetune: int = 0
    paper: str = "acl"

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["cells"] = [c.to_json() for c in self.cells]
        if self.paper == "acl":
            del doc["paper"]
        return json.loads(json.dumps(doc))

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]

    def cell(self, cell_id: str) -> Cell | None:
        return next((c for c in self.cells if c.id == cell_id), None)

    def runs(self) -> list[tuple[Cell, int]]:
        return [(c, s) for c in self.cells for s in self.seeds]

    @classmethod
    def from_json(cls, doc: dict) -> Grid:
        cells = tuple(Cell(**c) for c in doc["cells"])
        return cls(**{**doc, "seeds": tuple(doc["seeds"]), "cells": cells})


def _check_grid_options(n_seeds: int, epochs: int | None, sweep_arch: str, limit: int | None, finetune: int) -> None:
    if n_seeds < 3:
        raise ValueError(f"--seeds {n_seeds} is too few, expected at least 3 (a spread needs them)")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs {epochs} is not usable, expected a positive integer")
    if sweep_arch not in ARCHS:
        raise ValueError(f"--sweep-arch {sweep_arch!r} is unknown, expected one of {', '.join(ARCHS)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit} is not usable, expected a positive integer")
    if finetune < 0:
        raise ValueError(f"--finetune {finetune} is not usable, expected 0 (off) or a positive number of epochs")


def build_grid(
    data: str,
    *,
    quick: bool = False,
    seeds: int | None = None,
    epochs: int | None = None,
    sweep_arch: str = "lenet",
    limit: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    optimizer: str = "adam",
    finetune: int = 0,
) -> Grid:
    """The grid of ``--quick`` or the full one; ``seeds`` and ``epochs`` (every architecture) override.

    Raises:
        ValueError: fewer than 3 seeds, epochs below 1, unknown sweep architecture, limit below 1,
            finetune below 0.
    """
    settings = QUICK if quick else FULL
    n_seeds = settings.seeds if seeds is None else seeds
    _check_grid_options(n_seeds, epochs, sweep_arch, limit, finetune)
    cells: dict[str, Cell] = {}

    def add(arch: str, exp: str, ablate: bool = False) -> None:
        cid = f"{arch}-{exp}"
        spec = None if exp == "plain" else ratio_form(arrangement(exp))
        ep = settings.epochs[arch] if epochs is None else epochs
        old = cells.get(cid)
        cells[cid] = Cell(cid, arch, exp, spec, ep, ablate or (old.ablate if old else False))

    for _, cid in ANANN_ROWS:
        arch, exp = cid.split("-", 1)
        add(arch, exp)
    for exp in paper.TABLE1:
        add(sweep_arch, exp, ablate=exp == "exp3")
    add(sweep_arch, "t2exp7")
    add(sweep_arch, "t2exp8")
    if settings.table3_trained:
        for exp in TABLE3_TRAINED:
            add(sweep_arch, exp)
    return Grid(
        data=data,
        limit=limit,
        seeds=tuple(range(n_seeds)),
        sweep_arch=sweep_arch,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        cells=tuple(cells.values()),
        finetune=finetune,
    )
