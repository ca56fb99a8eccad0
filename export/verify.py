"""Self-verification of an export: the ONNX file, run in ONNX Runtime, against the source model.

``to_onnx(verify=True)`` (the default) calls ``verify_onnx`` on the model proto
before the file is written, like RepVGG's conversion check but asserting: a file
outside the fp32 tolerance (``export.compare.TOLERANCES``) raises
``ExportVerificationError`` with the max abs and rel error, and is never written.

The inputs are random (a fixed seed), not the all-zero example the exporter traced
with, so a graph that is only right on its example fails. A file whose AKPs are
graph inputs is also fed *moved* AKPs (``perturbed_akps``) and compared with a copy
of the model holding them: a live file must follow its AKPs, not only reproduce
the trained kernels.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import torch
from torch import nn

import acl
from export import INPUT_NAME
from export.compare import TOLERANCES, compare_outputs
from export.sessions import open_session

__all__ = ["ExportVerificationError", "akp_feed", "perturbed_akps", "verify_onnx"]

VERIFY_BATCH = 3
"""Inputs per check: not the exporter's example batch size, so the dynamic batch is exercised too."""


class ExportVerificationError(ValueError):
    """An exported file does not compute what its source model computes."""


def akp_feed(model: nn.Module) -> dict[str, np.ndarray]:
    """Every AKP of ``model`` by its ONNX name (``<layer>.akp<i>_<symbol>``), float32."""
    return {
        f"{n}.{k}": v.detach().float().cpu().numpy()
        for n, layer in acl.acl_layers(model)
        for k, v in layer.akps().items()
    }


def perturbed_akps(model: nn.Module, seed: int) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A copy of ``model`` with every AKP moved (5 % relative noise plus 0.05 absolute), and the new AKPs by ONNX name."""
    g = torch.Generator().manual_seed(seed + 1)
    moved = copy.deepcopy(model).eval()
    with torch.no_grad():
        for _, layer in acl.acl_layers(moved):
            for p in layer.akps().values():
                noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
                p.add_((0.05 * p.abs() * noise + 0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype)).to(p.device))
    return moved, akp_feed(moved)


def _torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out = model(torch.from_numpy(x))
    if not isinstance(out, torch.Tensor):
        raise ExportVerificationError(f"the model returned a {type(out).__name__}; verification expects one tensor")
    return out.float().numpy()


def verify_onnx(
    model: nn.Module,
    onnx_model: onnx.ModelProto | str | Path,
    input_shape: Sequence[int],
    *,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Run ``onnx_model`` in ONNX Runtime (CPU, default optimizations) against ``model``.

    Args:
        model: the source model (not modified: an eval-mode float32 CPU copy runs).
        onnx_model: the exported model, as a proto or a path.
        input_shape: ``(N, C, H, W)``; ``VERIFY_BATCH`` random inputs of ``(C, H, W)`` are used.
        seed: seeds the inputs and the moved AKPs.

    Returns:
        ``{check: compare_outputs(...)}`` for ``"default"`` and, when the file takes
        AKP inputs, ``"fed AKPs"``.

    Raises:
        ExportVerificationError: a check outside the fp32 tolerance (or non-finite).
    """
    proto = onnx_model if isinstance(onnx_model, onnx.ModelProto) else onnx.load(str(onnx_model))
    session = open_session(proto)
    # AKP inputs have initializers: ONNX Runtime lists them as overridable initializers, not inputs.
    inputs = {i.name for i in proto.graph.input}

    source = copy.deepcopy(model).eval().float().cpu()
    rng = np.random.default_rng(seed + 1234)
    x = rng.standard_normal((VERIFY_BATCH, *input_shape[1:])).astype(np.float32)
    checks = {"default": (source, {})}
    feed_names = inputs - {INPUT_NAME}
    if feed_names:
        moved, akps = perturbed_akps(source, seed)
        unknown = feed_names - set(akps)
        if unknown:
            raise ExportVerificationError(f"the file has inputs {sorted(unknown)} that are not AKPs of the model")
        checks["fed AKPs"] = (moved, {k: akps[k] for k in feed_names})

    tol = TOLERANCES["fp32"]
    results = {}
    for name, (reference, extra) in checks.items():
        got = session.run(None, {INPUT_NAME: x, **extra})[0]
        res = compare_outputs(_torch_out(reference, x), got, tol)
        results[name] = res
        if "error" in res:
            raise ExportVerificationError(f"export verification ({name}) failed: {res['error']}")
        if not res["elementwise_passed"]:
            raise ExportVerificationError(
                f"export verification ({name}) failed: ONNX Runtime differs from PyTorch by max abs "
                f"{res['max_abs_err']:.3g}, max rel {res['max_rel_err']:.3g} (fp32 tolerance atol {tol.atol:g} "
                f"or rtol {tol.rtol:g} per element); top-1 agreement {res['top1_agreement']:.3f} on "
                f"{VERIFY_BATCH} random inputs"
            )
    return results
