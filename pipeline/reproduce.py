"""``python -m pipeline.reproduce``: the paper's experiments (sections 4.1-4.2) on the data shipped here.

Trains every cell of the grid (``pipeline.experiments.grid``) from several seeds and
writes, into ``--out``:

- ``grid.json``: the grid (what a resumed run must match);
- ``runs/<cell>-seed<seed>.json``: one record per finished run, written atomically;
- ``results.json``, ``results.md``: the AnaNN tests and Tables 1-3, ours (mean ± std
  over seeds) beside the paper's numbers;
- ``accuracy-vs-compact-factor.png``, ``ablation.png``.

Running the same command again after a kill continues the grid where it stopped
(finished runs are read back, a run cut short continues after its last epoch) and
gives the same ``results.json`` as an uninterrupted run. A non-empty ``--out`` is
refused unless its ``grid.json`` is this grid's.

``--finetune N`` also fine-tunes each of Table 3's ablated models for N epochs
(inside its run, before the run's record is written) and reports the fine-tuned
accuracies, losses and attribution beside the zero-shot ones. N is part of the grid.

``--cluster ADDRESS`` runs the grid's runs as tasks on an existing Dask distributed
cluster instead of local processes (``pipeline.experiments.cluster``); ``--out`` must then
be a folder every worker and this machine share. Resuming works the same way.

API: ``reproduce(grid, out, jobs=..., cluster=...)`` runs a ``Grid`` (``build_grid``) and writes
the outputs; ``main(argv)`` is the command line.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from deploy.cli import HelpFormatter
from pipeline.experiments.grid import ARCHS, FULL, QUICK, Grid, build_grid

__all__ = ["GRID_FILE", "main", "parser", "prepare_out", "reproduce"]

EXIT_USER_ERROR = 2
GRID_FILE = "grid.json"
GRID_FORMAT = "acl-deploy/reproduce-grid/1"
MAX_JOBS = 64
PAPERS = {"acl": "runs/reproduce", "explainfix": "runs/reproduce-explainfix", "recos": "runs/reproduce-recos"}
"""``--paper`` choices and their default ``--out``. ``acl`` and ``explainfix`` are grids of training runs (this
module's runner); another paper is ``pipeline.experiments.<name>.main(args)``."""
GRID_PAPERS = ("acl", "explainfix")
# Measured 2026-12-01 on digits, one thread, the shared 2-core machine: seconds per fine-tuning epoch.
FINETUNE_EPOCH_SECONDS = {"lenet": 0.5, "cnn4": 7.0}


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, ``error: <what>``, exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see --help)\n")


def _settings(s) -> str:
    return f"{s.seeds} seeds, {s.epochs['lenet']} epochs for LeNet cells and {s.epochs['cnn4']} for the 4-layer CNN's"


def _epochs(s) -> str:
    return " and ".join(f"{arch} {n}" for arch, n in s.epochs.items())


def parser() -> argparse.ArgumentParser:  # long: argument list, one add_argument per option
    p = _Parser(
        prog="python -m pipeline.reproduce",
        description=(
            "Reproduce the paper's experiments: LeNet vs AnaNN-LeNet and the 4-layer CNN vs its AnaNN "
            "(sec. 4.2), Table 1's arrangements exp1-exp7 as ratios with compact factor and accuracy, Table 2's "
            "orders, Table 3's ablation by Mean kernels (acl.ablate, no retraining; --finetune N also retrains "
            "each ablated model N epochs) with its attribution. Every "
            "cell is trained from several seeds (mean and std); the paper's numbers stand beside ours. "
            "Resumable: run the same command again after a kill."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--paper",
        choices=tuple(PAPERS),
        default="acl",
        help="acl: the ACL paper's experiments (the default, below); explainfix: ExplainFix's Sec. 4.1 (fixed "
        "spatial initialisations unchanged/ones/dct2/ghaar/psine vs learned, plain LeNet) and App. I (saliency "
        "sanity check: least vs random vs most salient kernels zeroed, on the learned LeNet and AnaNN-LeNet) and "
        "Table 3 / M.1 (ChannelPrune of the GHaar-fixed model: fraction of parameters pruned, accuracy, s/epoch "
        "pruned vs not); its --quick grid: 10 cells x 3 seeds of 6 epochs (LeNet pruned at 50 and 90 %%), a few "
        "minutes on 2 cores with digits, the full one adds the 4-layer CNN (5 seeds, both pruned at 50/80/90/99 %%). --sweep-arch and --finetune are the ACL paper's only; recos: Kuo's RECOS "
        "experiments on LeNet-5 (pipeline.experiments.recos)",
    )
    p.add_argument(
        "--data", default="digits", help="digits (scikit-learn's 8x8 digits at 32x32), mnist:DIR or cifar10:DIR"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (new, empty, or this grid's); default runs/reproduce[-PAPER]",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"the quick grid: {_settings(QUICK)}; Table 3 only by ablation, without its arrangements trained "
        f"from scratch (12 cells, 36 runs; about a minute on 2 cores with digits: 40-72 s, 2026-12-07). Without it: {_settings(FULL)}, "
        "with Table 3's exp9-14 and exp16-19 trained from scratch too (22 cells, 110 runs)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"seeds per cell, at least 3 (default: {QUICK.seeds} with --quick, else {FULL.seeds})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs for every cell (default: per arch: {_epochs(QUICK)} with --quick, {_epochs(FULL)} without)",
    )
    p.add_argument(
        "--sweep-arch", choices=ARCHS, default="lenet", help="the model of Tables 1-3 (every convolution an ACL)"
    )
    p.add_argument(
        "--jobs", type=int, default=None, help="runs in parallel processes, one thread each (default: min(2, cores))"
    )
    p.add_argument(
        "--cluster",
        default=None,
        metavar="ADDRESS",
        help="run the grid's runs as tasks on the Dask distributed scheduler at ADDRESS (e.g. tcp://HOST:8786; "
        "needs the cluster extra: pip install 'acl-deploy[cluster]') instead of --jobs local processes; --out "
        "must be a folder every worker and this machine share (records and resume state go there). A lost "
        "worker's run continues on another worker after its last epoch; a killed grid resumes as a local one",
    )
    p.add_argument("--limit", type=int, default=None, help="use only the first N training and test images (tests)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch size")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="N",
        help="after each of Table 3's zero-shot ablations (exp3's trained model with families replaced by Mean "
        "kernels), fine-tune a copy of the ablated model for N epochs (the grid's optimizer, --lr and "
        "--batch-size, a fresh optimizer, data order from the run's seed) and report its accuracy, loss and "
        "attribution beside the zero-shot ones; 0: off. Cost: 7 x N more epochs of exp3's model per seed (one "
        f"per ablation), about {FINETUNE_EPOCH_SECONDS['lenet']:g} s each for LeNet and "
        f"{FINETUNE_EPOCH_SECONDS['cnn4']:g} s for the 4-layer CNN on digits on one core: --quick --finetune 6 "
        f"adds 3 x 42 epochs, about {3 * 7 * 6 * FINETUNE_EPOCH_SECONDS['lenet']:.0f} s of CPU time. Part of the grid: an --out with another N is refused, not resumed",
    )
    return p


def _grid_diff(stored: dict[str, Any], new: dict[str, Any]) -> str:
    # an ACL grid's JSON leaves out its paper (Grid.to_json), so a missing one is "acl", not None
    stored, new = {"paper": "acl", **stored}, {"paper": "acl", **new}
    keys = sorted(k for k in set(stored) | set(new) if k != "cells" and stored.get(k) != new.get(k))
    parts = [f"{k}: {stored.get(k)} -> {new.get(k)}" for k in keys]
    old_cells = {c["id"]: c for c in stored.get("cells", []) if isinstance(c, dict) and "id" in c}
    new_cells = {c["id"]: c for c in new.get("cells", [])}
    changed = sorted(k for k in set(old_cells) | set(new_cells) if old_cells.get(k) != new_cells.get(k))
    if changed:
        parts.append(
            f"cells {', '.join(changed[:4])}{' ...' if len(changed) > 4 else ''}{_cells_diff(old_cells, new_cells, changed)}"
        )
    return "; ".join(parts) or "the grid differs"


def _cells_diff(old: dict[str, dict], new: dict[str, dict], changed: list[str]) -> str:
    """What differs in the changed cells, when it is one thing: `` (epochs: 6 -> 2)``, `` (added)``; else ``""``."""
    if all(k in new and k not in old for k in changed):
        return " (added)"
    if all(k in old and k not in new for k in changed):
        return " (removed)"
    if not all(k in old and k in new for k in changed):
        return ""
    moves = {(f, str(old[k].get(f)), str(new[k].get(f))) for k in changed for f in set(old[k]) | set(new[k])}
    moves = {m for m in moves if m[1] != m[2]}
    fields = {f for f, _, _ in moves}
    if len(moves) == 1:
        f, a, b = moves.pop()
        return f" ({f}: {a} -> {b})"
    return f" ({', '.join(sorted(fields))})" if len(fields) <= 3 else ""


def check_out(out: Path, grid: Grid) -> bool:
    """True when ``out`` holds an earlier run of ``grid`` to resume, False when it is new or empty; writes nothing.

    Raises:
        UserError: ``out`` is not a folder, or is not empty and not a run of this
            grid (its ``grid.json`` missing, unreadable or another grid's; the message says what differs).
    """
    from pipeline.errors import UserError

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder, expected a new or empty folder or an earlier run")
    if not (out.is_dir() and any(out.iterdir())):
        return False
    path = out / GRID_FILE
    try:
        stored = json.loads(path.read_text())
        if not isinstance(stored, dict) or stored.get("format") != GRID_FORMAT:
            raise ValueError("not a grid file of this tool")
    except (OSError, ValueError) as e:
        why = "has no grid.json" if not path.exists() else f"has an unreadable {GRID_FILE} ({e})"
        raise UserError(
            f"--out {out} is not empty and {why}, expected a new or empty folder or an earlier run of the same "
            "grid to resume"
        ) from None
    stored_grid = stored.get("grid")
    if isinstance(stored_grid, dict) and "finetune" not in stored_grid:
        stored_grid = {**stored_grid, "finetune": 0}  # written before --finetune existed: it meant 0
    if stored_grid != grid.to_json():
        raise UserError(
            f"--out {out} holds another grid ({_grid_diff(stored_grid or {}, grid.to_json())}), "
            "expected the same options to resume it, or a new --out"
        )
    return True


def prepare_out(out: Path, grid: Grid) -> bool:
    """Make ``out`` ready for ``grid``; True when it resumes an earlier run of the same grid.

    Raises:
        UserError: as ``check_out``.
    """
    from export.atomic import atomic_output

    if check_out(out, grid):
        return True
    doc = {"format": GRID_FORMAT, "key": grid.key, "grid": grid.to_json()}
    with atomic_output(Path(out) / GRID_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1) + "\n")
    return False


def reproduce(
    grid: Grid,
    out: Path,
    *,
    jobs: int = 1,
    progress: bool = True,
    max_runs: int | None = None,
    log=lambda msg: print(msg, file=sys.stderr, flush=True),
    cluster: str | None = None,
) -> dict[str, Any] | None:
    """Run ``grid`` into ``out`` (locked while it runs) and write the results; None when runs remain.

    ``max_runs`` stops after that many new runs (as a kill would); calling again resumes.
    ``cluster``: the address of a Dask scheduler whose workers run the runs instead of ``jobs``
    local processes (connected to, and ``out`` checked, before anything is written).

    Raises:
        UserError: ``out`` refused (``prepare_out``) or in use by another run; ``cluster``
            unreachable, Dask distributed missing, or ``out`` not shared with the workers.
    """
    if cluster is None:
        return _reproduce(grid, out, jobs, progress, max_runs, log, None)
    from pipeline.experiments.cluster import cluster_executor

    with cluster_executor(cluster, Path(out), log) as executor:
        return _reproduce(grid, out, jobs, progress, max_runs, log, executor)


def _reproduce(grid, out, jobs, progress, max_runs, log, executor) -> dict[str, Any] | None:
    from pipeline.experiments.runner import run_grid
    from pipeline.output_folder import OutputFolder

    if grid.paper == "explainfix":
        from pipeline.experiments.explainfix_tables import results, write_outputs
    else:
        from pipeline.experiments.tables import results, write_outputs

    began = time.perf_counter()
    folder = OutputFolder(Path(out), force=False, log=log)
    folder.lock()
    try:
        if prepare_out(out, grid):
            log(f"resume: {out} holds this grid ({GRID_FILE}); continuing it")
        records = run_grid(grid, out, jobs=jobs, progress=progress, max_runs=max_runs, log=log, executor=executor)
        if len(records) < len(grid.runs()):
            log(f"stopped with {len(records)} of {len(grid.runs())} runs recorded; run again to continue")
            return None
        doc = results(grid, records)
        write_outputs(doc, out, wall_seconds=time.perf_counter() - began)
        return doc
    finally:
        folder.unlock()


def _checked_grid(args: argparse.Namespace) -> Grid:
    """The grid the options describe, checked before torch is imported (a typo is reported at once).

    Raises:
        UserError: an option out of range, or a ``--data`` no loader takes.
    """
    from pipeline.early_checks import data_problem
    from pipeline.errors import UserError

    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        raise UserError(f"--jobs {args.jobs} is out of range, expected 1 to {MAX_JOBS}")
    if args.jobs is not None and args.cluster is not None:
        raise UserError(
            "--jobs and --cluster were both given, expected one of them (the cluster's workers run the runs)"
        )
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is not usable, expected a positive integer")
    if not (args.lr > 0 and args.lr < float("inf")):
        raise UserError(f"--lr {args.lr} is not usable, expected a positive finite number")
    problem = data_problem(args.data)
    if problem:
        raise UserError(problem)
    build, extra = _grid_builder(args)
    try:
        return build(
            args.data,
            quick=args.quick,
            seeds=args.seeds,
            epochs=args.epochs,
            limit=args.limit,
            batch_size=args.batch_size,
            lr=args.lr,
            **extra,
        )
    except ValueError as e:
        raise UserError(str(e)) from None


def _grid_builder(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The grid builder of ``--paper`` and the options only it takes; the ACL paper's options refused elsewhere."""
    from pipeline.errors import UserError

    if args.paper != "explainfix":
        return build_grid, {"sweep_arch": args.sweep_arch, "finetune": args.finetune}
    from pipeline.early_checks import in_memory_data_problem
    from pipeline.experiments.explainfix import build_explainfix_grid

    if args.finetune or args.sweep_arch != "lenet":
        raise UserError(
            "--finetune and --sweep-arch belong to the ACL paper's grid, expected them without --paper explainfix"
        )
    problem = in_memory_data_problem(args.data, args.paper)
    if problem:
        raise UserError(problem)
    return build_explainfix_grid, {}


def _no_space_line(e: OSError, out: Path) -> str:
    """A full disk is the machine's state, not a bug (as in pipeline.export): one line, not a worker's traceback."""
    from export.atomic import no_space_error

    return (
        f"error: {no_space_error(e, None if e.filename else out)}; finished runs are kept in {out}/runs: "
        "free some space and run the same command to continue"
    )


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.out = args.out or Path(PAPERS[args.paper])
    if args.paper not in GRID_PAPERS:
        if args.cluster is not None:
            print(
                f"error: --cluster runs grids of training runs, expected it with --paper "
                f"{' or '.join(GRID_PAPERS)}, not {args.paper}",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        return importlib.import_module(f"pipeline.experiments.{args.paper}").main(args)
    from pipeline.errors import UserError

    began = time.perf_counter()
    try:
        grid = _checked_grid(args)
        check_out(args.out, grid)  # before torch and the data load: a bad --out is one line at once
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    from pipeline.export import Terminated, _signals_raise  # torch-free

    try:
        with _signals_raise():  # torch and the data take seconds to load: a signal meanwhile is the same one line
            from pipeline.experiments.runner import default_jobs, load_data

            jobs = default_jobs() if args.jobs is None else args.jobs
            try:
                data = load_data(grid.data, grid.limit)  # bad data is reported now, not in a worker
            except ValueError as e:
                raise UserError(str(e)) from None
            print(f"data: {data.describe()}", file=sys.stderr)
            tuned = f", each ablation fine-tuned {grid.finetune} epoch(s)" if grid.finetune else ""
            where = f"the cluster at {args.cluster}" if args.cluster else f"{jobs} process(es)"
            print(f"grid: {len(grid.cells)} cells x {len(grid.seeds)} seeds{tuned}, {where}", file=sys.stderr)
            doc = reproduce(grid, args.out, jobs=jobs, cluster=args.cluster)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        from export.atomic import NO_SPACE_ERRNOS

        if e.errno not in NO_SPACE_ERRNOS:
            raise
        print(_no_space_line(e, args.out), file=sys.stderr)
        return EXIT_USER_ERROR
    except (Terminated, KeyboardInterrupt) as e:
        signum = getattr(e, "signum", 2)
        print(
            f"interrupted; finished runs are kept in {args.out}/runs: run the same command to continue", file=sys.stderr
        )
        return 128 + signum
    if doc is None:
        return 1
    print(f"wrote {args.out}/results.md ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
