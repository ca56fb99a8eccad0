"""Latency of a runner: warm-up, then enough timed runs for stable percentiles."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["LatencyStats", "measure_latency"]


@dataclass(frozen=True)
class LatencyStats:
    """Host wall-clock latency of ``infer`` for one batch size."""

    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    throughput: float  # samples per second over the timed runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_latency(
    runner: Any,
    feed: Mapping[str, np.ndarray],
    *,
    warmup: int = 10,
    min_iters: int = 200,
    min_seconds: float = 1.0,
    max_iters: int = 20000,
    max_seconds: float = 10.0,
) -> LatencyStats:
    """Time ``runner.infer(feed)`` (an active runner) with ``time.perf_counter``.

    After ``warmup`` untimed runs, runs until both ``min_iters`` runs and
    ``min_seconds`` have passed (so p99 rests on at least ``min_iters`` samples),
    and stops at ``max_iters`` runs or ``max_seconds``, whichever comes first.
    Inputs are checked once, before timing.
    """
    batch = int(next(iter(feed.values())).shape[0])
    runner.infer(feed)  # checks the inputs once
    for _ in range(warmup):
        runner.infer(feed, check_inputs=False)
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        runner.infer(feed, check_inputs=False)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        elapsed = t1 - start
        if (len(times) >= min_iters and elapsed >= min_seconds) or len(times) >= max_iters or elapsed >= max_seconds:
            break
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return LatencyStats(
        batch_size=batch,
        iterations=len(times),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        throughput=float(batch * len(times) / (ms.sum() / 1e3)),
    )
