"""A parity row: one backend and export mode, how to make its runner, what to feed it and what to compare it to.

Made by ``pipeline.validate.backend_rows`` (and ``pipeline.trt_rows`` for TensorRT);
run by ``run_parity`` and ``run_latency``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Row"]


@dataclass
class Row:
    """One backend and export mode: how to make its runner, what to feed, what to compare to."""

    key: str
    make: Callable[[], Any] | None  # None: not available (reason) or failed to build (error)
    precision: str = "fp32"
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # inputs besides the image, every call
    reference: str = "source"  # "source" model, or "moved": the model holding the fed AKPs
    timed: bool = True
    reason: str | None = None
    error: str | None = None
