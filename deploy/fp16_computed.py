"""What an ONNX Runtime session really computed in FP16, read from its own profile.

An FP16 file does not make a runtime compute in FP16: ONNX Runtime's CPU provider
has no FP16 kernel for many ops (Conv and Gemm among them), so it casts their
FP16 inputs and weights to FP32, computes in FP32, and drops the cast pair
around them (``InsertedPrecisionFreeCast``), so an FP16 overflow of such an op's
output never happens on the CPU. The session's profile lists every kernel run
with its input and output types; ``computed_precision`` counts them.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MOVES_DATA", "computed_precision"]

# Kernels that move or convert data without arithmetic: not counted.
MOVES_DATA = frozenset(
    {
        "Cast",
        "ReorderInput",
        "ReorderOutput",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Identity",
        "Shape",
        "MemcpyFromHost",
        "MemcpyToHost",
    }
)


def computed_precision(
    path: str | Path, providers: Sequence[Any], feed: Mapping[str, np.ndarray], *, threads: int | None = None
) -> dict[str, Any]:
    """Kernels one run of ``path`` executed, by precision: ``{"fp16": {op: n}, "fp32": {op: n}, "opaque": {...}}``.

    ``opaque``: kernels of another provider that runs a whole subgraph (TensorRT),
    whose inner precision ONNX Runtime's profile does not show.
    """
    from export.sessions import open_session

    with tempfile.TemporaryDirectory() as tmp:
        sess = open_session(
            path,
            providers=list(providers),
            threads=threads,
            enable_profiling=True,
            profile_file_prefix=str(Path(tmp) / "profile"),
        )
        sess.run(None, dict(feed))
        events = json.loads(Path(sess.end_profiling()).read_text())
    return _count(events)


def _count(events: list[dict[str, Any]]) -> dict[str, Any]:
    counts: dict[str, Counter] = {"fp16": Counter(), "fp32": Counter(), "opaque": Counter()}
    for e in events:
        args = e.get("args") or {}
        op = args.get("op_name")
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or op in MOVES_DATA or not op:
            continue
        if "Tensorrt" in str(args.get("provider", "")):
            counts["opaque"][op] += 1
            continue
        types = {t for io in ("input_type_shape", "output_type_shape") for d in args.get(io, []) for t in d}
        if "float16" in types:
            counts["fp16"][op] += 1
        elif "float" in types:
            counts["fp32"][op] += 1
    return {k: dict(sorted(v.items())) for k, v in counts.items()}
