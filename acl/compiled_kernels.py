"""The mosaic generator compiled with ``torch.compile``: opt-in, for training (issue 24).

``compiled_mosaic`` returns what ``acl.kernels.unchecked_mosaic`` returns, from the
same registry formulas, evaluated by one compiled graph per run of analytic
segments (and its compiled backward) instead of ~100 eager operations and their
backward. ``AnalyticConv2d`` uses it while ``compile_generator`` is set
(``acl.compile_generators(model)``); the default stays eager.

Why transposed: compiled as they are, the formulas' ``[n, hw]`` banks give
inductor an inner loop of ``hw`` (9 at 3x3), which it leaves scalar (measured
slower than eager). Evaluated sample-major (AKP rows ``[p, n]``, kernels
``[hw, n]``) every loop runs along the bank and is vectorised; the AKPs go in and
the kernels come out through a blocked transposing copy (``blocked_transpose``,
4x faster than ``.t().contiguous()`` on a ``[9, 131072]`` bank), whose backward
is the same copy the other way, so the compiled backward receives contiguous
gradients (a strided one is copied element by element by its wrapper first).

Limits, documented in docs/acl.md: no double backward (AOT autograd has none); the
first call per run of spec symbols and kernel size compiles (seconds; inductor
needs a C++ compiler); bank sizes are dynamic, so one graph serves every layer of
that spec and size.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from acl.families import FAMILIES
from acl.kernels import _banks, unchecked_mosaic

__all__ = ["blocked_transpose", "compiled_mosaic", "compiled_mosaics"]

_BLOCK = 64  # columns per block: a block's rows and columns stay in L1 while it is copied


def _transpose_into(x: Tensor, out: Tensor) -> Tensor:
    """``out[:] = x.t()`` for ``x`` ``[rows, cols]`` (any strides, unit stride along ``cols``), ``out`` contiguous."""
    rows, cols = x.shape
    b = math.gcd(cols, _BLOCK)
    # a copy from the 3-d permuted view goes block by block; x.t().contiguous() strides over all of x
    out.view(cols // b, b, rows).copy_(x.reshape(rows, cols // b, b).permute(1, 2, 0))
    return out


def _transpose_copy(x: Tensor) -> Tensor:
    # Always a fresh tensor: .contiguous() would keep a size-1 view's odd strides, which
    # DistributedDataParallel then reports as a gradient layout mismatch.
    return _transpose_into(x, x.new_empty(x.shape[1], x.shape[0]))


class _BlockedTransposes(torch.autograd.Function):
    """``blocked_transpose`` of several tensors in one autograd node (a run's AKP banks)."""

    @staticmethod
    def forward(ctx, *xs: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        return tuple(_transpose_copy(x) for x in xs)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        return _BlockedTransposes.apply(*grads)  # differentiable: double backward of the copy itself works


class _Assemble(torch.autograd.Function):
    """Kernels ``[N, hw]`` from banks ``[n, hw]`` and, ``transposed``, ``[hw, n]``: one copy each way."""

    @staticmethod
    def forward(ctx, transposed: tuple[bool, ...], *banks: Tensor) -> Tensor:  # type: ignore[override]
        counts = [b.shape[1] if t else b.shape[0] for b, t in zip(banks, transposed)]
        hw = banks[0].shape[0] if transposed[0] else banks[0].shape[1]
        out = banks[0].new_empty(sum(counts), hw)
        for bank, t, rows in zip(banks, transposed, out.split(counts)):
            if t:
                _transpose_into(bank, rows)
            else:
                rows.copy_(bank)
        ctx.transposed, ctx.counts = transposed, counts
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple:  # type: ignore[override]
        parts = grad.split(ctx.counts)
        return (None, *(_transpose_copy(g) if t else g for g, t in zip(parts, ctx.transposed)))


def blocked_transpose(x: Tensor) -> Tensor:
    """``x.t().contiguous()`` of a 2-d tensor, copied in blocks, forward and backward.

    Shape:
        - x: :math:`(R, C)`
        - Output: :math:`(C, R)`, contiguous

    Examples:
        >>> x = torch.arange(6.0).view(2, 3)
        >>> torch.equal(blocked_transpose(x), x.t())
        True
    """
    return _BlockedTransposes.apply(x)[0]


def _sample_major(symbols: tuple[str, ...], kernel_size: tuple[int, int], rows: list[Tensor]) -> list[Tensor]:
    return _banks(symbols, kernel_size, rows, 0)


_COMPILED: dict[tuple, Callable[..., list[Tensor]]] = {}


_PARALLEL_FROM = 1 << 17  # kernel values: below, one thread (an OpenMP region per loop costs more than it saves)


def _compiled(symbols: tuple[str, ...], kernel_size: tuple[int, int], parallel: bool) -> Callable[..., list[Tensor]]:
    """``_sample_major`` compiled for one run of symbols, one kernel size, serial or parallel loops.

    Each key gets its own copy of the function's code object, hence its own
    torch.compile cache: a model with many specs and sizes never reaches dynamo's
    per-function recompile limit (8, beyond which it would run eagerly).
    """
    key = (symbols, kernel_size, parallel)
    if key not in _COMPILED:
        code = _sample_major.__code__.replace(co_name=f"_sample_major_{len(_COMPILED)}")
        # the bank sizes are dynamic: inductor would decide serial or parallel loops once, from the
        # first call's size; dynamic_threads makes every loop parallel, threads 1 none
        options = {"cpp.dynamic_threads": True} if parallel else {"cpp.threads": 1}
        _COMPILED[key] = torch.compile(types.FunctionType(code, _sample_major.__globals__), options=options)
    return _COMPILED[key]


class _Run(NamedTuple):
    """A maximal run of consecutive segments with AKPs in one mosaic: generated together."""

    job: int  # which mosaic
    first: int  # its first segment
    symbols: tuple[str, ...]
    akps: list[Tensor]


def compiled_mosaics(jobs: Sequence[tuple[Sequence[str], tuple[int, int], Sequence[Tensor]]]) -> list[Tensor]:
    """``unchecked_mosaic`` of several mosaics at once: one compiled call per run of symbols and kernel size.

    The AKP banks of every run with the same symbols, kernel size, dtype and
    device (all layers of one spec and size, typically) are concatenated and
    generated by one compiled graph; each mosaic is then assembled from its share
    and its Plain, Mean and fixed segments by one copy.

    Args:
        jobs: ``(symbols, kernel_size, akps)`` per mosaic, as for ``unchecked_mosaic``.

    Returns:
        Each mosaic's kernels, ``[sum n, h*w]``.
    """
    banks: list[list[Tensor | None]] = [[None] * len(sym) for sym, _, _ in jobs]
    groups: dict[tuple, list[_Run]] = {}
    for j, (symbols, kernel_size, akps) in enumerate(jobs):
        for run in _runs(j, symbols, akps):
            a = run.akps[0]
            groups.setdefault((run.symbols, kernel_size, a.dtype, a.device), []).append(run)
    for (symbols, kernel_size, _, _), runs in groups.items():
        _generate_group(symbols, kernel_size, runs, banks)
    out = []
    for (symbols, kernel_size, akps), parts in zip(jobs, banks):
        transposed = tuple(p is not None for p in parts)
        flat = [p if p is not None else _stored(s, kernel_size, a) for s, a, p in zip(symbols, akps, parts)]
        out.append(_Assemble.apply(transposed, *flat))
    return out


def _runs(job: int, symbols: Sequence[str], akps: Sequence[Tensor]) -> list[_Run]:
    runs: list[_Run] = []
    for i, (sym, a) in enumerate(zip(symbols, akps)):
        if not FAMILIES[sym].akps:  # Plain, fixed, Mean: no AKPs, nothing to compile
            continue
        if runs and runs[-1].first + len(runs[-1].symbols) == i:  # extends the last run
            last = runs.pop()
            runs.append(_Run(job, last.first, (*last.symbols, sym), [*last.akps, a]))
        else:
            runs.append(_Run(job, i, (sym,), [a]))
    return runs


def _generate_group(symbols: tuple[str, ...], kernel_size: tuple[int, int], runs: list[_Run], banks: list) -> None:
    banks_in = [runs[0].akps[k] if len(runs) == 1 else torch.cat([r.akps[k] for r in runs]) for k in range(len(symbols))]
    rows = list(_BlockedTransposes.apply(*banks_in))
    for r in rows:
        torch._dynamo.maybe_mark_dynamic(r, 1)  # one graph for every bank size
    parallel = sum(r.shape[1] for r in rows) * kernel_size[0] * kernel_size[1] >= _PARALLEL_FROM
    generated = _compiled(symbols, kernel_size, parallel)(symbols, kernel_size, rows)
    for k, bank in enumerate(generated):
        for run, share in zip(runs, bank.split([r.akps[k].shape[0] for r in runs], 1)):
            banks[run.job][run.first + k] = share


def _stored(symbol: str, kernel_size: tuple[int, int], a: Tensor) -> Tensor:
    """A segment without AKPs, kernel-major ``[n, h*w]``: Plain and fixed kernels as they are, Mean generated."""
    return unchecked_mosaic([symbol], kernel_size, [a]).view(a.shape[0], -1)


def compiled_mosaic(symbols: Sequence[str], kernel_size: tuple[int, int], akps: Sequence[Tensor]) -> Tensor:
    """``unchecked_mosaic`` by compiled graphs (``compiled_mosaics`` of one mosaic).

    Shape:
        - Output: :math:`(\\sum n, h, w)`, equal to ``unchecked_mosaic``'s to float rounding.

    Examples:
        >>> from acl.kernels import unchecked_mosaic
        >>> akps = [torch.ones(2, 1), torch.zeros(1, 9)]
        >>> k = compiled_mosaic(["Lg", "P"], (3, 3), akps)
        >>> k.shape, bool((k - unchecked_mosaic(["Lg", "P"], (3, 3), akps)).abs().max() < 1e-6)
        (torch.Size([3, 3, 3]), True)
    """
    return compiled_mosaics([(symbols, kernel_size, akps)])[0].view(-1, *kernel_size)
