"""Latency of a runner: warm-up, then enough timed runs for stable percentiles, and signs of a loaded machine.

Besides the percentiles, every measurement records what says whether its figures
can be trusted on a shared machine: the standard deviation, the slowest run, how
many runs were *far outliers* (slower than the third quartile plus three
interquartile ranges, Tukey's outer fence: preemption, page faults, another
process on the cores) and the 1-minute load average read when timing ended.
``LatencyStats.loaded`` turns those into one flag that the report prints as a note.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["LOADED_OUTLIER_SHARE", "LatencyStats", "measure_latency"]

LOADED_OUTLIER_SHARE = 0.02
"""Far outliers above this share of the timed runs mark a measurement as disturbed.

An undisturbed CPU run of a fixed-size inference has almost none: its times are
one narrow peak. A few percent mean the runner lost the cores now and then.
"""


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
    std_ms: float = 0.0  # population standard deviation of the timed runs
    max_ms: float = 0.0
    outliers: int = 0  # runs slower than Q3 + 3 * IQR
    load_avg: float | None = None  # 1-minute load average when timing ended; None where the OS has none
    cores: int = 0  # logical CPUs (os.cpu_count), to read load_avg against

    @property
    def outlier_share(self) -> float:
        return self.outliers / self.iterations if self.iterations else 0.0

    @property
    def loaded(self) -> bool:
        """The machine was busy: many far outliers, or more runnable processes than cores.

        The load average counts this process too, which uses at most every core,
        so a value above the core count means other work competed for the cores.
        """
        busy = self.load_avg is not None and self.cores > 0 and self.load_avg > self.cores
        return busy or self.outlier_share > LOADED_OUTLIER_SHARE

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outlier_share"] = self.outlier_share
        d["loaded"] = self.loaded
        return d


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on every OS
        return None


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
    load = _load_average()
    ms = np.asarray(times) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    q1, q3 = np.percentile(ms, [25, 75])
    return LatencyStats(
        batch_size=batch,
        iterations=len(times),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        mean_ms=float(ms.mean()),
        min_ms=float(ms.min()),
        throughput=float(batch * len(times) / (ms.sum() / 1e3)),
        std_ms=float(ms.std()),
        max_ms=float(ms.max()),
        outliers=int((ms > q3 + 3 * (q3 - q1)).sum()),
        load_avg=load,
        cores=os.cpu_count() or 0,
    )
