"""The stage contract: what the user asked for (``JobConfig``), what earlier stages made (``RunContext``), what a stage returns (``StageResult``).

A stage is a module of ``pipeline.stages`` that defines

- ``NAME``: its key under ``report.json``'s ``"stages"``;
- ``run(ctx: RunContext) -> StageResult``;
- optionally ``TITLE`` (its numbered console line; a stage without one runs silently),
  ``check(cfg: JobConfig)`` (raises ``UserError`` on options it cannot use; the
  runner calls every check before the first stage runs, and again before the
  staging folder is opened, because training may take hours and folders change),
  ``markdown(report) -> list[str]`` (its ``report.md`` lines, from ``report.json``
  alone) and ``EVERY_RANK = True`` (runs on every DDP process; such stages come
  first, the other processes stop before the first stage without it).

A module with ``markdown`` and no ``run`` adds a report section and does no work.
Values for later stages go on typed ``RunContext`` fields; report content goes in
``StageResult.sections``. An exception is not a status: it propagates, the staging
folder is discarded and ``--out`` stays as it was.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, get_args

__all__ = ["DEFAULT_BATCH_SIZES", "JobConfig", "RunContext", "StageResult", "Status"]

DEFAULT_BATCH_SIZES = (1, 8, 64)

Status = Literal["ok", "failed", "not-available"]
"""``failed``: a check did not hold (the report is still written, the job exits 1).
``not-available``: the stage could not do its work here, or was not asked to; ``reason`` says which."""


@dataclass
class JobConfig:
    out: Path = Path("runs/default")
    checkpoint: Path | None = None
    spec: str | None = None  # None: the checkpoint's, or archs.DEFAULT_SPEC when training
    data: str = "digits"  # or "mnist:DIR", "cifar10:DIR", "folder:DIR[:SIZE]" (pipeline.datasets)
    arch: str | None = None  # None: the checkpoint's, or "lenet" when training; or torchvision:<name>
    model: str | None = None  # instead of arch: your package.module:factory (imported and run)
    layers: str | None = None  # None: the checkpoint's, or "all" when training; "first" or comma-separated names
    init_from: Path | None = None  # a trained plain checkpoint of the same arch, loaded before conversion
    epochs: int = 15
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    backends: tuple[str, ...] | None = None  # None: every backend of deploy.backends
    force: bool = False
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    latency_seconds: float = 1.0  # minimum timed seconds per backend and batch size
    batch_size: int = 64  # training batch size, per process
    lr: float | None = None  # None: pipeline.train.DEFAULT_LR[optimizer]
    optimizer: str = "adam"  # or "sgd": Nesterov momentum, weight decay, cosine schedule (ResNets on CIFAR)
    workers: int | None = None  # DataLoader workers; None: 0 for in-memory data, min(4, cores) for image folders
    amp: str = "auto"  # auto (bf16 on a CUDA device that has it, else off), off, bf16, fp16
    compile_generator: bool = False  # ACL kernels by the torch.compile'd generator while training (pipeline.train)
    resume: bool = True  # continue an interrupted run with the same configuration (False: --no-resume)
    triton_repo: Path | None = None  # also write a Triton model repository there (pipeline.serving)
    serve_test: bool = False  # serve it with a real Triton server: parity and a load test (serve environment)
    fix_spatial: str = "none"  # ExplainFix: set and freeze spatial filters before training (pipeline.fix_args)
    fix_guide: Path | None = None  # guidedsteer's guide: a trained checkpoint of the same architecture
    int8: bool = False  # also the INT8 Q/DQ file, accuracy-controlled (pipeline.stages.int8)
    int8_calibration: int | None = None  # None: 256, or half the training split when smaller
    int8_method: str = "minmax"  # or "entropy", "percentile"
    int8_max_drop: float = 1.0  # percentage points of top-1 accuracy
    prune: float | None = None  # ExplainFix ChannelPrune: % of spatial kernels zeroed (pipeline.prune_args)
    prune_finetune: int = 0  # fine-tuning epochs after pruning
    prune_rank: str = "saliency"  # how kernels rank: the paper's saliency, or saliency-per-flop (acl.pruning_rank)
    prune_align: int = 1  # pruned convolutions keep a multiple of this many channels (acl.pruning_align)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


@dataclass
class StageResult:
    status: Status = "ok"
    reason: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)
    """``report.json`` key -> value; each key has one owner."""
    files: dict[str, str] = field(default_factory=dict)
    """Name -> path relative to the staging folder, for every file or folder the stage wrote there."""
    checks: dict[str, bool | None] = field(default_factory=dict)
    """Verdict rows: ``True`` passed, ``False`` failed, ``None`` not available here."""
    reasons: dict[str, str] = field(default_factory=dict)
    """Why a failed check failed, where its name alone does not say (the verdict's ``reasons``)."""
    warnings: list[str] = field(default_factory=list)
    """What passed but a person should know (the verdict's ``warnings``, the report's headline)."""

    def __post_init__(self) -> None:
        if self.status not in get_args(Status):
            raise ValueError(f"stage status {self.status!r}, expected one of {', '.join(get_args(Status))}")
        if self.status != "ok" and not self.reason:
            raise ValueError(f"a {self.status} stage needs a reason")


@dataclass
class RunContext:
    """One run's shared state. The runner owns the bookkeeping fields; each stage fills the fields it documents."""

    cfg: JobConfig
    log: Callable[[str], None]
    is_main: bool = True  # rank 0 (or no DDP): the process that writes --out
    staging: Path | None = None  # set by the runner before the first rank-0 stage
    threads: int = 1  # preflight: PyTorch and ONNX Runtime threads
    # model: the source model (eval mode), its data and how it came to be
    model: Any = None
    data: Any = None  # pipeline.datasets.Dataset
    arch: str = ""
    spec: str = ""
    layers: str = "all"
    trained: Any = None  # pipeline.train.TrainResult; None for a loaded checkpoint
    initial: dict[str, Any] | None = None  # kernels before training (None: unknown)
    store: Any = None  # pipeline.resume.ResumeStore, cleared by the runner once the outputs are in place
    onnx: dict[str, Path] = field(default_factory=dict)  # export: {"static" | "live" | "live-akp": file}
    rows: list[Any] = field(default_factory=list)  # parity: pipeline.validate rows, timed again by latency
    parity: dict[str, Any] = field(default_factory=dict)  # parity; the serve test adds its server's row
    latency: dict[str, Any] = field(default_factory=dict)  # latency; its ORT curve sets Triton's batching
    int8_path: Path | None = None  # int8: model.static-int8.onnx, only when its accuracy check passed
    saliency: Any = None  # saliency: acl.Saliency of the trained model, ExplainSteer's weights
    # runner bookkeeping
    plan: tuple[Any, ...] = ()  # the stage modules, in order
    sections: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    results: dict[str, StageResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    report: dict[str, Any] | None = None  # the report stage's
    # Outputs outside --out (an external --triton-repo): (put in place, drop), run at commit or on the way out,
    # so an interrupted or failed run leaves them as they were, as it leaves --out.
    pending: list[tuple[Callable[[], None], Callable[[], None]]] = field(default_factory=list)

    @property
    def x_test(self):
        """The test images as a NumPy array: parity, latency and replay inputs."""
        return self.data.x_test.numpy()
