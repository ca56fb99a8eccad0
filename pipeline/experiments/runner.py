"""Runs of the grid: one (cell, seed) each, recorded atomically, resumable, in parallel processes.

Every finished run is one JSON file, ``runs/<cell>-seed<seed>.json``, written
atomically (``export.atomic``) and keyed by a hash of everything that determines it
(``run_key``). A run's result depends only on its cell and seed: the model is
initialised from ``torch.manual_seed(seed)``, the data order and augmentation from
``seed`` (``pipeline.train``), and PyTorch uses one thread in every run, so the
floating-point reductions are the same whichever process runs it and however many
run beside it. A killed grid therefore resumes to the same results as an
uninterrupted one: finished runs are read back, and a run cut short continues after
its last complete epoch from ``runs/.<run>.resume/`` (``pipeline.resume``; bitwise
as if uninterrupted).

With ``Grid.finetune`` N > 0, a run of an ablating cell (exp3 of the sweep) also
fine-tunes each ablated model for N epochs (``finetune``) inside ``run_one``, before
its record is written: the run stays the unit of resumption. A run killed while
fine-tuning keeps its training state (complete), so it resumes with no training
epoch left and does every fine-tuning again from the start; each is a pure function
of the trained model, the grid's settings and the seed, so the record is the same.
ExplainFix's pruning cells (``Cell.prune``) prune inside their run the same way
(``explainfix_pruning.prune_run``); only its measured seconds per epoch vary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from export.atomic import atomic_output
from pipeline.experiments import guided_runs
from pipeline.experiments.grid import ABLATIONS, Cell, Grid

__all__ = [
    "ABLATE_MISSING",
    "RUN_FORMAT",
    "compact_factor",
    "default_jobs",
    "finetune",
    "layer_specs",
    "load_data",
    "read_run",
    "run_grid",
    "run_id",
    "run_key",
    "run_one",
]

RUN_FORMAT = "acl-deploy/reproduce-run/1"
# Relative cost of an epoch, to start the longest runs first (2 processes finish together).
_EPOCH_COST = {"lenet": 1.0, "cnn4": 10.0}
ABLATE_MISSING = "not available: acl.ablate missing"

_DATA_CACHE: dict[tuple[str, int | None], Any] = {}

try:
    from pipeline.train import TrainingDiverged as _Diverged
except ImportError:  # a training module that does not detect divergence: nothing to catch

    class _Diverged(Exception):
        pass


def run_id(cell: Cell, seed: int) -> str:
    return f"{cell.id}-seed{seed}"


def run_key(grid: Grid, cell: Cell, seed: int) -> str:
    """Hash of what determines one run: data, limit, training settings, the cell and the seed."""
    import hashlib

    doc = {
        "data": grid.data,
        "limit": grid.limit,
        "batch_size": grid.batch_size,
        "lr": grid.lr,
        "optimizer": grid.optimizer,
        "cell": cell.to_json(),  # ExplainFix's fields only when set: the ACL grids' keys are unchanged
        "seed": seed,
    }
    if grid.finetune and cell.ablate:  # absent otherwise: the records of grids without fine-tuning stay valid
        doc["finetune"] = grid.finetune
    if cell.guide:  # the guide's seed depends on the grid's seeds (guided_runs.guide_of)
        doc["guide_seed"] = guided_runs.guide_of(grid, cell, seed)[1]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def load_data(name: str, limit: int | None):
    """The data set ``name``, cut to its first ``limit`` training and test images; cached per process.

    Raises:
        ValueError: unknown or bad data (``pipeline.datasets``); images that are not 32x32
            (LeNet's and the 4-layer CNN's heads are sized for them); ``limit`` on lazily decoded data.
    """
    key = (name, limit)
    if key in _DATA_CACHE:
        return _DATA_CACHE[key]
    from pipeline.datasets import load_dataset
    from pipeline.datasets.base import TensorImages

    data = load_dataset(name)
    if data.image_size != 32:
        raise ValueError(
            f"--data {name}: images are {data.image_size}x{data.image_size}, expected 32x32 "
            "(LeNet and the 4-layer CNN are sized for them): use digits, mnist:DIR or cifar10:DIR"
        )
    if limit is not None:
        if not data.in_memory:
            raise ValueError(f"--limit needs an in-memory data set, {data.name} is decoded lazily")

        def cut(s: TensorImages) -> TensorImages:
            return TensorImages(s.images[:limit], s.labels[:limit], s.augment)

        data = dataclasses.replace(data, train_set=cut(data.train_set), test_set=cut(data.test_set))
    _DATA_CACHE[key] = data
    return data


def layer_specs(model) -> dict[str, str]:
    """Canonical count-form spec of every ACL of ``model``, by module name."""
    import acl

    return {name: str(layer.spec) for name, layer in acl.acl_layers(model)}


def compact_factor(model) -> float | None:
    """Eq. 25 over all ACLs of ``model`` together: the share of their kernel parameters saved; None: no ACL.

    Each layer counts with its ``Co x Ci x h x w`` kernel parameters, so the factor is
    what the model's convolutions save as a whole.
    """
    import acl

    saved = total = 0.0
    for _, layer in acl.acl_layers(model):
        h, w = layer.kernel_size
        size = layer.spec.total * h * w
        cf = acl.compact_factor(layer.spec, layer.in_channels, layer.out_channels, (h, w), groups=layer.groups)
        saved += cf * size
        total += size
    return saved / total if total else None


def finetune(model, data, grid: Grid, seed: int):
    """A copy of ``model`` trained ``grid.finetune`` more epochs; returns ``(copy, TrainResult)``.

    The grid's optimizer, learning rate and batch size, with a fresh optimizer (the
    trained model's optimizer state is not kept), data order and augmentation from
    ``seed`` (``pipeline.train`` seeds the global RNG from it first): the result
    depends only on ``model``, the grid's settings and ``seed``. ``model`` is untouched.

    Raises:
        TrainingDiverged: the fine-tuning diverged.
    """
    import copy

    tuned = copy.deepcopy(model)
    return tuned, _train(tuned, data, grid, seed, grid.finetune)


def _train(model, data, grid: Grid, seed: int, epochs: int, resume=None):
    """``pipeline.train.train`` with the grid's settings: one process, no progress bar, full precision."""
    from pipeline.train import train

    return train(
        model,
        data,
        epochs=epochs,
        batch_size=grid.batch_size,
        lr=grid.lr,
        seed=seed,
        progress=False,
        optimizer=grid.optimizer,
        workers=0,
        amp="off",
        resume=resume,
    )


def _ablations(model, data, grid: Grid, seed: int) -> dict[str, Any]:
    import acl
    from pipeline.train import evaluate

    try:
        ablate = acl.ablate
    except (AttributeError, ImportError):
        return {exp: {"error": ABLATE_MISSING} for exp in ABLATIONS}
    out: dict[str, Any] = {}
    for exp, families in ABLATIONS.items():
        try:
            ablated = ablate(model, families)
        except ValueError as e:  # e.g. no layer holds a kernel of the family after rounding the ratios
            out[exp] = {"error": f"not available: {e}"}
            continue
        out[exp] = {
            "families": list(families),
            "accuracy": 100.0 * evaluate(ablated, data, workers=0),
            "compact_factor": compact_factor(ablated),
            "specs": layer_specs(ablated),
        }
        if grid.finetune:
            try:
                tuned, result = finetune(ablated, data, grid, seed)
            except _Diverged as e:
                out[exp].update(accuracy_finetuned=None, loss_history_finetuned=None, diverged_finetuned=str(e))
            else:
                out[exp].update(
                    accuracy_finetuned=100.0 * evaluate(tuned, data, workers=0),
                    loss_history_finetuned=result.loss_history,
                    diverged_finetuned=None,
                )
    return out


def _model(cell: Cell, data, seed: int, guide: dict | None = None):
    """The cell's untrained model from ``seed``, and its ``acl.fix_spatial`` summary (None without ``cell.fix``).

    ``guide``: GuidedSteer's guide kernels (``guided_runs.load_guide``), for a guided cell.
    """
    import torch

    from pipeline.archs import build

    torch.manual_seed(seed)
    model = build(cell.arch, cell.spec, layers="all", in_channels=data.channels, num_classes=data.num_classes)
    if not cell.fix or (cell.guide and guide is None):  # a guided cell whose guide diverged is not trained
        return model, None
    import acl

    g = torch.Generator().manual_seed(seed)
    return model, acl.fix_spatial(model, cell.fix, generator=g, guide=guide).as_dict()


def _guide(grid: Grid, cell: Cell, seed: int, runs: Path) -> tuple[dict | None, str | None]:
    """A guided cell's guide kernels, or why there are none (its guide run diverged); (None, None) unguided."""
    if not cell.guide:
        return None, None
    guide = guided_runs.load_guide(grid, cell, seed, runs)
    if guide is None:
        other, other_seed = guided_runs.guide_of(grid, cell, seed)
        return None, f"not available: the guide run {run_id(other, other_seed)} diverged, no trained model guides it"
    return guide, None


def _explainfix_extras(model, data, grid: Grid, cell: Cell, seed: int) -> dict[str, Any]:
    """ExplainFix's App. I (``sanity``) and Table 3 / M.1 (``pruning``) of a trained run, when its cell asks."""
    extras: dict[str, Any] = {}
    if cell.sanity:  # only ExplainFix's cells: the ACL grid's records are unchanged
        from pipeline.experiments.explainfix import sanity

        extras["sanity"] = sanity(model, data, seed)
    if cell.prune is not None:
        from pipeline.experiments.explainfix_pruning import prune_run

        extras["pruning"] = prune_run(model, data, cell, seed, lambda m, n: _train(m, data, grid, seed, n), _Diverged)
    return extras


def run_one(grid_doc: dict, cell_id: str, seed: int, runs_dir: str) -> dict:
    """Train one cell from one seed, evaluate it (and its ablations), write ``runs/<id>.json``; returns the record.

    Module-level with JSON-able arguments, so a spawned worker process can run it.
    """
    import torch

    from pipeline.resume import ResumeStore, tensor_digest
    from pipeline.train import evaluate

    torch.set_num_threads(1)  # one thread: the same reductions in every process (module docstring)
    grid = Grid.from_json(grid_doc)
    cell = grid.cell(cell_id)
    if cell is None:
        raise KeyError(f"cell {cell_id!r} is not in the grid")
    data = load_data(grid.data, grid.limit)
    rid = run_id(cell, seed)
    key = run_key(grid, cell, seed)
    runs = Path(runs_dir)

    guide, no_guide = _guide(grid, cell, seed, runs)
    model, fixed = _model(cell, data, seed, guide)
    init = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}  # ACLs add their spec
    store = ResumeStore(runs / f".{rid}.resume", {"run": key, "init": tensor_digest(init)})
    began = time.perf_counter()
    record = {
        "format": RUN_FORMAT,
        "key": key,
        "cell": cell.id,
        "seed": seed,
        "compact_factor": compact_factor(model),
        "specs": layer_specs(model),
        "parameters": sum(p.numel() for p in model.parameters()),
        **({"fix": fixed} if cell.fix else {}),
    }
    try:
        if no_guide:
            raise _Diverged(no_guide)
        result = _train(model, data, grid, seed, cell.epochs, resume=store)
    except _Diverged as e:
        # A result like any other (this arrangement does not train at this lr), not a failure of the grid.
        record.update(accuracy=None, diverged=str(e), loss_history=None, ablations=None, resumed_from_epoch=None)
    else:
        if guided_runs.is_guide(grid, cell):  # before the record: a recorded guide run has its model file
            guided_runs.save_guide(model, data, cell, seed, runs)
        record.update(
            accuracy=100.0 * evaluate(model, data, workers=0),
            diverged=None,
            loss_history=result.loss_history,
            ablations=_ablations(model, data, grid, seed) if cell.ablate else None,
            resumed_from_epoch=result.resumed_from,
        )
        record.update(_explainfix_extras(model, data, grid, cell, seed))
    record["seconds"] = time.perf_counter() - began
    with atomic_output(runs / f"{rid}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    store.clear()
    return record


def read_run(path: Path, key: str) -> dict | None:
    """The record at ``path`` when it is a finished run of this key; None otherwise (missing, partial, other grid)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != RUN_FORMAT or doc.get("key") != key:
        return None
    return doc


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    # A SIGKILLed parent cannot stop its workers: have Linux kill them with it, so that no orphan keeps
    # training (and writing the resume state of) a run that the next invocation resumes.
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # 1: PR_SET_PDEATHSIG


def run_grid(
    grid: Grid,
    out: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
    max_runs: int | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr, flush=True),
    executor: Callable | None = None,
) -> dict[tuple[str, int], dict]:
    """Run every (cell, seed) of ``grid`` not yet recorded under ``out/runs``; returns all records.

    Args:
        grid: the grid.
        out: the output folder (``runs/`` inside it holds one JSON per finished run).
        jobs: processes; 1 runs in this process.
        progress: a tqdm bar over the whole grid (on a terminal), else a log line per run.
        max_runs: stop after this many new runs (the rest stay pending, as after a kill).
        log: messages.
        executor: runs ``todo`` elsewhere instead of ``jobs`` local processes, called as
            ``executor(grid doc, todo, runs dir, finished)`` (``cluster.ClusterExecutor``).

    Returns:
        ``{(cell id, seed): record}`` of the finished runs.
    """
    from tqdm import tqdm

    runs_dir = Path(out) / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    done, todo = _recorded_and_pending(grid, runs_dir)
    if done:
        log(f"resume: {len(done)} of {len(done) + len(todo)} runs already recorded in {runs_dir}")
    todo = _longest_first(grid, todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    total = len(grid.runs())
    bar = tqdm(total=total, initial=len(done), desc="grid", unit="run", disable=None if progress else True)
    lines = bar.disable and progress

    def finished(rec: dict) -> None:
        done[(rec["cell"], rec["seed"])] = rec
        bar.update(1)
        what = "diverged" if rec["accuracy"] is None else f"top-1 {rec['accuracy']:.2f} %"
        bar.set_postfix_str(f"{rec['cell']} seed {rec['seed']}: {what}")
        if lines:
            log(f"run {len(done)}/{total}: {rec['cell']} seed {rec['seed']}: {what} ({rec['seconds']:.0f} s)")

    doc = grid.to_json()
    try:
        for wave in guided_runs.waves(grid, todo, runs_dir):  # guided runs after the runs that guide them
            if executor is not None:
                executor(doc, wave, runs_dir, finished)
            elif jobs <= 1 or len(wave) <= 1:
                for cell, seed in wave:
                    finished(run_one(doc, cell.id, seed, str(runs_dir)))
            else:
                _run_in_workers(doc, wave, runs_dir, jobs, finished)
    finally:
        bar.close()
    return done


def _recorded_and_pending(grid: Grid, runs_dir: Path) -> tuple[dict[tuple[str, int], dict], list[tuple[Cell, int]]]:
    """The runs of ``grid`` already recorded in ``runs_dir`` (``{(cell id, seed): record}``), and the others."""
    done: dict[tuple[str, int], dict] = {}
    todo: list[tuple[Cell, int]] = []
    for cell, seed in grid.runs():
        rec = read_run(runs_dir / f"{run_id(cell, seed)}.json", run_key(grid, cell, seed))
        if rec is not None:
            done[(cell.id, seed)] = rec
        else:
            todo.append((cell, seed))
    return done, todo


def _longest_first(grid: Grid, todo: list[tuple[Cell, int]]) -> list[tuple[Cell, int]]:
    """``todo`` by estimated cost, longest first (stable: grid order otherwise), so workers finish together."""
    fine = len(ABLATIONS) * grid.finetune  # fine-tuning epochs of an ablating run

    def cost(cs: tuple[Cell, int]) -> float:
        cell = cs[0]
        extra = cell.prune_finetune + 4 if cell.prune is not None else 0  # fine-tuning and 4 timed epochs
        return (cell.epochs + extra + (fine if cell.ablate else 0)) * _EPOCH_COST.get(cell.arch, 1.0)

    return sorted(todo, key=lambda cs: -cost(cs))


@contextlib.contextmanager
def _children_ignore_sigint():
    """Processes started meanwhile ignore SIGINT, which they inherit as ignored (a handled signal would be reset).

    A Ctrl-C reaches the whole process group: the parent alone decides (it terminates the
    workers, whose runs resume from their last epoch), where a worker still importing torch
    printed a KeyboardInterrupt traceback of its own. A Ctrl-C in the parent during these
    few milliseconds of process starts is lost.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_in_workers(
    doc: dict, todo: list[tuple[Cell, int]], runs_dir: Path, jobs: int, finished: Callable[[dict], None]
) -> None:
    """``run_one`` for each of ``todo`` in ``jobs`` spawned processes; ``finished`` gets each record as it comes."""
    ctx = get_context("spawn")  # no fork of a process whose torch thread pools already exist
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx, initializer=_init_worker) as ex:
        with _children_ignore_sigint():  # the processes start as the first runs are submitted
            pending = {ex.submit(run_one, doc, c.id, s, str(runs_dir)) for c, s in todo}
        try:
            while pending:
                complete, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in complete:
                    finished(f.result())
        except BaseException:
            # A kill or a failed run: stop the workers now (a run cut short resumes from its last
            # epoch's state), rather than waiting for their runs to finish on the way out.
            ex.shutdown(wait=False, cancel_futures=True)
            for proc in list((getattr(ex, "_processes", None) or {}).values()):
                proc.terminate()
            raise


def default_jobs() -> int:
    return max(1, min(2, os.cpu_count() or 1))
