"""Training, single-process or DDP (``torchrun``), resumable after every epoch.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the same code joins the
process group (gloo), wraps the model in ``DistributedDataParallel`` and shards
each epoch with a ``DistributedSampler``; gradients are averaged across processes,
so every rank ends with identical parameters. ``--batch-size`` is per process.

Data: in-memory sets (digits, MNIST, CIFAR-10) are indexed one batch per call (one
gather, augmentation vectorised over the batch) in the main process by default;
lazily decoded sets (image folders) use ``min(4, cores)`` DataLoader workers,
persistent across epochs. Augmentation randomness is keyed by (seed, epoch, image)
(``pipeline.datasets.augment``), so the worker count never changes the result.

Optimizers (``OPTIMIZERS``):

- ``adam`` (default; lr 2e-3): Adam, constant learning rate, no weight decay: the
  paper's small AnaNNs on digits and MNIST.
- ``sgd`` (lr 0.1): SGD with Nesterov momentum 0.9, weight decay 5e-4 and a cosine
  schedule to zero over all steps: the usual ResNet-on-CIFAR recipe. Weight decay
  skips biases, normalisation parameters and AKPs: an AKP is a natural-unit
  quantity (an angle, a scale), and pulling it towards zero would change the
  kernel's family member, not regularise it.

Mixed precision (``--amp``): ``fp16`` (CUDA only; with a gradient scaler), ``bf16``
(CUDA, or CPU when asked: slower than float32 on CPUs without native bf16 units,
README "Benchmarks"), ``auto`` (bf16 on a CUDA device that supports it, else off),
``off``.

Compiled kernel generator (``compile_generator=True``, ``--compile-generator``): the
ACLs generate their kernels with ``acl.compile_generators`` while training (about
twice as cheap as eager generation); the first step compiles for some seconds
(inductor needs a C++ compiler), and there is no double backward through the
kernels meanwhile. The model is returned with the eager generator, also after an
exception. A model without ACLs trains as usual.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import math
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler, SequentialSampler

from pipeline.data import Dataset
from pipeline.datasets.augment import epoch_key
from pipeline.errors import UserError
from pipeline.resume import ResumeStore, pack, unpack

__all__ = [
    "AMP_MODES",
    "DEFAULT_LR",
    "OPTIMIZERS",
    "NoCompiler",
    "TrainResult",
    "TrainingDiverged",
    "accuracy",
    "check_options",
    "default_workers",
    "distributed_context",
    "evaluate",
    "resolve_amp",
    "settle_ranks",
    "train",
    "training_device",
]

OPTIMIZERS = ("adam", "sgd")
DEFAULT_LR = {"adam": 2e-3, "sgd": 0.1}
AMP_MODES = ("auto", "off", "bf16", "fp16")
SGD_MOMENTUM = 0.9
SGD_WEIGHT_DECAY = 5e-4
MAX_WORKERS = 64
MAX_BATCH_SIZE = 65_536
CHECK_EVERY = 10
"""Steps between checks of the running loss in a single process (each check waits for the device)."""


class TrainingDiverged(ValueError):
    """The loss, a gradient or a weight became NaN or infinite: the model is lost, nothing may be exported.

    The message names the epoch and the likely cause; the run stops before its
    outputs are written, and the state of the diverged epoch is never saved.
    """


class NoCompiler(UserError):
    """``compile_generator=True`` and torch.compile found no working C++ compiler at the first step.

    A ``UserError`` (the command's one line and exit code 2): the machine's state, not a bug. The message
    is ``pipeline.early_checks.no_compiler``'s, which the command and the job check before training.
    """


@dataclass
class TrainResult:
    epochs: int
    world_size: int
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0  # this process's training time (not the epochs restored from a resume state)
    resumed_from: int = 0  # epochs restored from a resume state
    images_per_second: float = 0.0  # all ranks together, over this process's epochs
    optimizer: str = "adam"
    lr: float = DEFAULT_LR["adam"]
    batch_size: int = 64
    amp: str = "off"  # as resolved: off, bf16 or fp16
    workers: int = 0
    device: str = "cpu"
    compile_generator: bool = False  # as resolved: False for a model without ACLs


@dataclass(frozen=True)
class DistributedContext:
    world_size: int
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_context() -> DistributedContext:
    """Join the process group when launched by ``torchrun``; otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(1, 0)
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        atexit.register(_leave_process_group)
    return DistributedContext(dist.get_world_size(), dist.get_rank())


def _leave_process_group() -> None:
    # Collected first, a DistributedDataParallel wrapper no longer holds the group, so destroying it
    # joins gloo's threads now, with the interpreter alive (see settle_ranks).
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def settle_ranks(timeout: float = 10.0) -> None:
    """A barrier after which gloo's worker threads hold no tensor of this process.

    A gloo worker drops a finished collective's tensors a moment after ``wait()`` returns, and
    dropping a tensor Python made needs the GIL. A rank that exits right after its last collective
    can reach interpreter teardown first; the worker then dies taking the GIL and the process aborts
    (SIGABRT, "terminate called without an active exception": gdb, 2026-12-07, ``~AsyncBarrierWork``
    in ``ProcessGroupGloo::runLoop``; 4 of 60 two-rank runs on a loaded machine). So the last
    collective is an all-reduce of a tensor held here, and this waits (sleeping, so the worker can
    take the GIL) until the worker has let go of it.
    """
    token = torch.zeros(1)
    dist.all_reduce(token)
    deadline = time.monotonic() + timeout
    while token._use_count() > 1 and time.monotonic() < deadline:
        time.sleep(0.001)


def check_options(*, batch_size: int, lr: float | None, optimizer: str, workers: int | None, amp: str) -> None:
    """Validate training options before anything is loaded.

    Raises:
        ValueError: one line naming the option, the value and what is expected.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size} is not usable, expected a positive integer")
    if batch_size > MAX_BATCH_SIZE:
        raise ValueError(f"--batch-size {batch_size} is out of range, expected 1 to {MAX_BATCH_SIZE}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"--optimizer {optimizer!r} is unknown, expected one of {', '.join(OPTIMIZERS)}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr {lr} is not usable, expected a positive finite number")
    if workers is not None and not 0 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers {workers} is out of range, expected 0 to {MAX_WORKERS}")
    if amp not in AMP_MODES:
        raise ValueError(f"--amp {amp!r} is unknown, expected one of {', '.join(AMP_MODES)}")


def default_workers(data: Dataset) -> int:
    """0 for in-memory sets (a batch is one gather), ``min(4, cores)`` for lazily decoded ones."""
    return 0 if data.in_memory else min(4, os.cpu_count() or 1)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp mode`` on ``device`` (None: float32).

    Raises:
        ValueError: fp16 without CUDA, bf16 on a CUDA device without it, unknown mode.
    """
    if mode not in AMP_MODES:
        raise ValueError(f"--amp {mode!r} is unknown, expected one of {', '.join(AMP_MODES)}")
    cuda = device.type == "cuda"
    if mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else None
    if mode == "fp16":
        if not cuda:
            raise ValueError("--amp fp16 needs a CUDA device and none is present, expected off or bf16 on the CPU")
        return torch.float16
    if cuda and not torch.cuda.is_bf16_supported():
        raise ValueError("--amp bf16: this CUDA device has no bfloat16 support, expected fp16 or off")
    return torch.bfloat16


def training_device() -> torch.device:
    """CUDA (this process's ``LOCAL_RANK`` device) when present, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


class EpochKeys(Sampler):
    """Tags every index (or batch of indices) of ``inner`` with the epoch's augmentation stream key."""

    def __init__(self, inner: Sampler, seed: int) -> None:
        self.inner = inner
        self.seed = seed
        self.key = epoch_key(seed, 0)

    def set_epoch(self, epoch: int) -> None:
        self.key = epoch_key(self.seed, epoch)
        sampler = getattr(self.inner, "sampler", self.inner)  # BatchSampler wraps the shuffling sampler
        sampler.set_epoch(epoch)

    def __iter__(self):
        key = self.key
        return ((key, item) for item in self.inner)

    def __len__(self) -> int:
        return len(self.inner)


def _train_loader(data: Dataset, batch_size: int, seed: int, ctx: DistributedContext, workers: int, pin: bool):
    # One shuffling rule for one process and many: DistributedSampler's permutation of
    # (seed + epoch) is a pure function of the epoch, so resuming needs no sampler state.
    base = DistributedSampler(data.train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    # BatchNorm cannot train on a batch of one: drop a last batch of exactly one image.
    drop_last = len(base) % batch_size == 1 and len(base) > 1
    common: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": pin,
        "persistent_workers": workers > 0,
        # The loader draws its worker base seed from this, not from the global RNG,
        # whose state is saved and restored for dropout and the like.
        "generator": torch.Generator().manual_seed(seed),
    }
    if data.in_memory:
        keyed = EpochKeys(BatchSampler(base, batch_size, drop_last), seed)
        return DataLoader(data.train_set, batch_size=None, sampler=keyed, **common), keyed
    keyed = EpochKeys(base, seed)
    return DataLoader(data.train_set, batch_size=batch_size, sampler=keyed, drop_last=drop_last, **common), keyed


def _eval_loader(data: Dataset, batch_size: int, workers: int) -> DataLoader:
    if data.in_memory:
        batches = BatchSampler(SequentialSampler(data.test_set), batch_size, False)
        return DataLoader(data.test_set, batch_size=None, sampler=batches)
    return DataLoader(data.test_set, batch_size=batch_size, num_workers=workers)


def _build_optimizer(model: nn.Module, name: str, lr: float, total_steps: int):
    if name == "adam":
        # Frozen parameters (--fix-spatial) are never handed to the optimizer.
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr), None
    import acl

    akps = {id(p) for _, layer in acl.acl_layers(model) for p in layer.akps().values()}
    decay, keep = [], []
    for p in model.parameters():
        if p.requires_grad:
            (keep if p.ndim <= 1 or id(p) in akps else decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": SGD_WEIGHT_DECAY}, {"params": keep, "weight_decay": 0.0}],
        lr=lr,
        momentum=SGD_MOMENTUM,
        nesterov=True,
    )
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total_steps))


def _capture(model, opt, sched, scaler, epoch: int, history: list[float]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    weights = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    state = {
        "epoch": epoch,
        "loss_history": history,
        "model": pack(weights, "model", tensors),
        "optimizer": pack(opt.state_dict(), "optimizer", tensors),
        "scheduler": pack(sched.state_dict(), "scheduler", tensors) if sched is not None else None,
        "scaler": pack(scaler.state_dict(), "scaler", tensors) if scaler is not None else None,
        "rng": pack(torch.get_rng_state(), "rng.torch", tensors),
        "rng_cuda": pack(torch.cuda.get_rng_state_all(), "rng.cuda", tensors) if torch.cuda.is_available() else None,
    }
    return tensors, state


def _restore(model, opt, sched, scaler, tensors, state) -> tuple[int, list[float]]:
    """Load a captured state; ``ValueError`` when it does not fit this model and optimizer."""
    try:
        full = model.state_dict()
        full.update(unpack(state["model"], tensors))
        model.load_state_dict(full, strict=True)
        opt.load_state_dict(unpack(state["optimizer"], tensors))
        if (sched is None) != (state["scheduler"] is None) or (scaler is None) != (state["scaler"] is None):
            raise ValueError("scheduler or gradient scaler presence differs")
        if sched is not None:
            sched.load_state_dict(unpack(state["scheduler"], tensors))
        if scaler is not None:
            scaler.load_state_dict(unpack(state["scaler"], tensors))
        rng = unpack(state["rng"], tensors)
        cuda_rng = unpack(state["rng_cuda"], tensors) if state.get("rng_cuda") else None
    except (KeyError, RuntimeError, TypeError) as e:
        raise ValueError(str(e).splitlines()[0]) from None
    torch.set_rng_state(rng)
    if cuda_rng is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_rng)
    return int(state["epoch"]), [float(v) for v in state["loss_history"]]


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float | None = None,
    seed: int = 0,
    progress: bool = True,
    optimizer: str = "adam",
    workers: int | None = None,
    amp: str = "off",
    compile_generator: bool = False,
    resume: ResumeStore | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place with cross-entropy; returns the loss history.

    Args:
        model: on the CPU; trained on CUDA when present, returned on the CPU in eval mode.
        data: ``train_set`` is iterated, ``normalize`` applied per batch.
        epochs: total epochs (including any restored from ``resume``).
        batch_size: per process.
        lr: learning rate; None: ``DEFAULT_LR[optimizer]``.
        seed: shuffling and augmentation seed (model initialisation is the caller's).
        progress: a tqdm bar on rank 0 when stderr is a terminal. Only the bar: the
            line per epoch (if ``log``) is written either way, above the bar when there is one.
        optimizer: ``adam`` or ``sgd`` (module docstring).
        workers: DataLoader workers; None: ``default_workers(data)``.
        amp: ``auto``, ``off``, ``bf16`` or ``fp16``.
        compile_generator: the ACLs' kernels from ``acl.compile_generators`` while training (module docstring).
        resume: where the state after each epoch is saved (rank 0) and, at the start, restored from (every rank).
        on_epoch_end: called with the number of completed epochs, after the state is saved.
        log: progress messages (rank 0).

    Raises:
        ValueError: bad options (``check_options``, ``resolve_amp``).
        TrainingDiverged: the loss, or a weight or buffer, became NaN or infinite (checked every
            ``CHECK_EVERY`` steps in one process, and after every epoch on every rank); the epoch is
            named, its state is never saved and the resume state is removed.
    """
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    check_options(batch_size=batch_size, lr=lr, optimizer=optimizer, workers=workers, amp=amp)
    loop, result = _prepare(model, data, epochs, batch_size, lr, seed, optimizer, workers, amp, resume)
    say = log if (log is not None and loop.ctx.is_main) else (lambda msg: None)
    loop.compile_generator = result.compile_generator = _compile_option(model, compile_generator, say)
    start, history = _start(loop, seed, say)
    result.resumed_from, result.loss_history = start, list(history)
    seen, result.seconds = _run_epochs(loop, start, history, progress, on_epoch_end, say)
    result.images_per_second = seen / result.seconds if seen and result.seconds > 0 else 0.0
    result.loss_history = history
    return result


def _prepare(
    model: nn.Module,
    data: Dataset,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    optimizer: str,
    workers: int | None,
    amp: str,
    resume: ResumeStore | None,
) -> tuple[_Loop, TrainResult]:
    """What ``train`` works with (the model moved to the training device), and its result so far."""
    ctx = distributed_context()
    device = training_device()
    amp_dtype = resolve_amp(amp, device)
    workers = default_workers(data) if workers is None else workers
    torch.manual_seed(seed)
    model.to(device)
    loader, keyed = _train_loader(data, batch_size, seed, ctx, workers, pin=device.type == "cuda")
    opt, sched = _build_optimizer(model, optimizer, lr, epochs * len(loader))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    loop = _Loop(model, data, ctx, device, loader, keyed, opt, sched, scaler, amp_dtype, epochs, lr, resume)
    result = TrainResult(
        epochs=epochs,
        world_size=ctx.world_size,
        optimizer=optimizer,
        lr=lr,
        batch_size=batch_size,
        amp={None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype],
        workers=workers,
        device=str(device),
    )
    return loop, result


def _run_epochs(
    loop: _Loop, start: int, history: list[float], progress: bool, on_epoch_end, say: Callable[[str], None]
) -> tuple[int, float]:
    """Train from epoch ``start`` to the end, saving the state after each; ``(images seen, seconds)``."""
    loop.net = _parallel(loop, start)
    bar = _progress_bar(loop, start, progress)
    begin, seen = time.perf_counter(), 0
    loop.net.train()
    with _compiled_generators(loop.model, loop.compile_generator):
        for epoch in range(start, loop.epochs):
            seen += _epoch(loop, epoch, bar, history, say)
            if loop.resume is not None and loop.ctx.is_main:
                loop.resume.save(*_capture(loop.model, loop.opt, loop.sched, loop.scaler, epoch + 1, history))
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1)
    bar.close()
    loop.loader = None  # stops persistent workers now, not at garbage collection
    loop.model.eval().cpu()
    if loop.ctx.world_size > 1:
        loop.net = loop.model  # the DistributedDataParallel wrapper (and its hold on the group) goes now
        settle_ranks()
    return seen, time.perf_counter() - begin


def _compile_option(model: nn.Module, asked: bool, say: Callable[[str], None]) -> bool:
    """Whether the epochs use the compiled kernel generator: asked for, and the model has ACLs (else said)."""
    if not asked:
        return False
    import acl

    n = len(acl.acl_layers(model))
    if n == 0:
        say("      compiled kernel generator: the model has no ACL, nothing to compile (trained as usual)")
    else:
        say(f"      compiled kernel generator for {n} ACL(s): the first step compiles (some seconds)")
    return n > 0


@contextlib.contextmanager
def _compiled_generators(model: nn.Module, enabled: bool):
    """``acl.compile_generators(model)`` while the block runs; the eager generator again after it, however it ends."""
    if not enabled:
        yield
        return
    import acl

    acl.compile_generators(model)
    try:
        yield
    except RuntimeError as e:
        if not _no_compiler(e):
            raise
        from pipeline.early_checks import cxx_compiler, no_compiler

        raise NoCompiler(no_compiler(cxx_compiler())) from None
    finally:
        acl.compile_generators(model, enabled=False)


def _no_compiler(e: BaseException) -> bool:
    """Whether inductor's "no working C++ compiler" is in ``e``'s chain (dynamo wraps it in its own errors)."""
    from torch._inductor.exc import InvalidCxxCompiler

    seen: BaseException | None = e
    for _ in range(16):  # a chain is short; a cycle (possible in principle) must not hang
        if seen is None or isinstance(seen, InvalidCxxCompiler):
            return seen is not None
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class _Loop:
    """What one call of ``train`` works with, shared by its steps."""

    model: nn.Module
    data: Dataset
    ctx: DistributedContext
    device: torch.device
    loader: DataLoader | None
    keyed: EpochKeys
    opt: torch.optim.Optimizer
    sched: Any
    scaler: Any
    amp_dtype: torch.dtype | None
    epochs: int
    lr: float
    resume: ResumeStore | None
    net: nn.Module | None = None  # the model, or its DistributedDataParallel wrapper
    compile_generator: bool = False  # the ACLs' kernels from acl.compile_generators during the epochs
    loss_fn: nn.Module = field(default_factory=nn.CrossEntropyLoss)

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def _start(loop: _Loop, seed: int, say: Callable[[str], None]) -> tuple[int, list[float]]:
    """The epoch to start from and the loss history so far: restored from the resume state when it fits."""
    start, history = 0, []
    loaded = loop.resume.load() if loop.resume is not None else None
    if loaded is not None:
        try:
            start, history = _restore(loop.model, loop.opt, loop.sched, loop.scaler, *loaded)
            say(f"      resume: continuing after epoch {start} of {loop.epochs} (state in {loop.resume.folder})")
        except ValueError as e:
            say(f"      resume: ignoring the state in {loop.resume.folder}: it does not fit this model ({e})")
            torch.manual_seed(seed)
            start, history = 0, []
    return start, history


def _parallel(loop: _Loop, start: int) -> nn.Module:
    """The model under DistributedDataParallel when there are several processes, after they agree on ``start``."""
    if loop.ctx.world_size <= 1:
        return loop.model
    # Every rank read the same file; a rank that saw another epoch would deadlock later.
    agree = torch.tensor([start, -start])
    dist.all_reduce(agree, op=dist.ReduceOp.MAX)
    if int(agree[0]) != -int(agree[1]):
        raise RuntimeError(f"ranks disagree on the resume epoch (rank {loop.ctx.rank}: {start})")
    device = loop.device
    device_ids = [device.index] if device.index is not None else None
    return nn.parallel.DistributedDataParallel(loop.model, device_ids=device_ids)


def _progress_bar(loop: _Loop, start: int, progress: bool):
    from tqdm import tqdm

    keyed, ctx = loop.keyed, loop.ctx
    per_epoch = len(keyed.inner.sampler if loop.data.in_memory else keyed.inner) * ctx.world_size
    return tqdm(
        total=max(0, loop.epochs - start) * per_epoch,
        desc="train",
        unit="img",
        # None: tqdm turns itself off when stderr is not a terminal (CI logs).
        disable=None if (progress and ctx.is_main) else True,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _epoch(loop: _Loop, epoch: int, bar, history: list[float], say: Callable[[str], None]) -> int:
    """One epoch on every rank; appends its mean loss to ``history``; returns the images all ranks saw."""
    loop.keyed.set_epoch(epoch)
    t0 = time.perf_counter()
    total = torch.zeros((), dtype=torch.float64, device=loop.device)
    count, world = 0, loop.ctx.world_size
    for step, (xb, yb) in enumerate(loop.loader):
        loss = _step(loop, xb, yb)
        total += loss.detach().double() * len(xb)
        count += len(xb)
        # One process only: under DDP a rank that stopped alone would leave the others waiting in all_reduce.
        if world == 1 and step % CHECK_EVERY == CHECK_EVERY - 1 and not torch.isfinite(total):
            _diverged(epoch, loop.epochs, f"the loss became {float(total)} by step {step + 1}", loop.lr, loop.resume)
        bar.update(len(xb) * world)
        if not bar.disable and (step % 10 == 0 or step == len(loop.loader) - 1):
            bar.set_postfix(epoch=f"{epoch + 1}/{loop.epochs}", loss=f"{float(total) / count:.4f}")
    sums = torch.stack([total.cpu(), torch.tensor(float(count), dtype=torch.float64)])
    if world > 1:
        dist.all_reduce(sums)
    _check_finite(loop, epoch, sums)
    history.append(float(sums[0] / sums[1]))
    rate = int(sums[1]) / (time.perf_counter() - t0)
    with _above(bar):
        say(f"      epoch {epoch + 1}/{loop.epochs}: loss {history[-1]:.4f}, {rate:.0f} images/s")
    return int(sums[1])


def _step(loop: _Loop, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
    """One optimiser step on a batch; returns its mean loss."""
    xb = loop.data.normalize(xb.to(loop.device, non_blocking=True))
    yb = yb.to(loop.device, non_blocking=True)
    loop.opt.zero_grad(set_to_none=True)
    with loop.autocast():
        loss = loop.loss_fn(loop.net(xb), yb)
    if loop.scaler is not None:
        loop.scaler.scale(loss).backward()
        loop.scaler.step(loop.opt)
        loop.scaler.update()
    else:
        loss.backward()
        loop.opt.step()
    if loop.sched is not None:
        loop.sched.step()
    return loss


def _check_finite(loop: _Loop, epoch: int, sums: torch.Tensor) -> None:
    """After an epoch, on every rank: the summed loss and every weight and buffer must be finite."""
    resume = loop.resume if loop.ctx.is_main else None
    # Losses are non-negative, so one non-finite step leaves the epoch's sum non-finite on every rank.
    if not torch.isfinite(sums[0]):
        _diverged(epoch, loop.epochs, f"the loss became {float(sums[0])}", loop.lr, resume)
    bad = _non_finite(loop.model)
    if bad:
        _diverged(epoch, loop.epochs, f"{bad} became NaN or infinite", loop.lr, resume)


def _above(bar):
    """Lines printed inside this context go above a shown bar instead of through it."""
    return contextlib.nullcontext() if bar.disable else bar.external_write_mode(file=sys.stderr)


def _non_finite(model: nn.Module) -> str | None:
    """The first parameter or buffer holding a NaN or infinity (a gradient that was one has reached the weights)."""
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def _diverged(epoch: int, epochs: int, what: str, lr: float, resume: ResumeStore | None):
    # An earlier epoch's state would only diverge again under the same command: nothing is kept.
    if resume is not None:
        resume.clear()
    raise TrainingDiverged(
        f"training diverged in epoch {epoch + 1} of {epochs}: {what}; likely causes: a learning rate too high "
        f"for this model (--lr {lr:g}) or degenerate data (constant or corrupt images); nothing was written, "
        "expected a finite loss and finite weights"
    )


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, *, batch_size: int = 256, workers: int | None = None) -> float:
    """Top-1 accuracy of ``model`` (on the CPU) on the whole test split."""
    was_training = model.training
    model.eval()
    workers = default_workers(data) if workers is None else workers
    correct = total = 0
    for xb, yb in _eval_loader(data, batch_size, workers):
        correct += int((model(data.normalize(xb)).argmax(1) == yb).sum())
        total += len(yb)
    model.train(was_training)
    return correct / max(total, 1)


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy on standardised tensors (e.g. ``Dataset.x_test``)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(x)
