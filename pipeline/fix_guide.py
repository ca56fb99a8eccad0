"""``--fix-guide CKPT``: GuidedSteer's guide, the spatial kernels of a trained checkpoint of the same architecture.

Read by the project's checkpoint loader (``pipeline.checkpoint.load``: safetensors,
or ``torch.load(weights_only=True)``; never unpickled), which rebuilds the guide
network from the file's own metadata, so a guide may be plain or an AnaNN (an ACL's
kernels are its generated ones) and may have been trained on other data (other
channels or classes: only kernel shapes must agree). Each spatial layer of the
model needs a layer of the same name and kernel shape in the guide
(``acl.guided.guide_problem``); the stage checks that before fixing anything.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import UserError

__all__ = ["read_guide"]


def read_guide(path: Path, *, arch: str, model: str | None = None) -> dict:
    """``{layer: kernels}`` of every spatial convolution of the checkpoint at ``path``, a trained ``arch``.

    Args:
        path: the guide checkpoint.
        arch: the job's architecture (or its ``--model`` factory's name).
        model: the job's ``--model`` factory, when it has one (a file never names code to import).

    Raises:
        UserError: a missing, corrupt or unsafe file (the loader's message); another architecture.
    """
    import torch
    from torch import nn

    from acl import AnalyticConv2d
    from acl.fixing import is_spatial_kernel
    from pipeline import checkpoint

    try:
        net, meta = checkpoint.load(path, model=model)
    except UserError as e:
        raise UserError(f"--fix-guide: {e}") from None
    saved = meta.get("model") or meta.get("arch")
    if saved != arch:
        raise UserError(
            f"--fix-guide {path} is a {saved!r} model, expected a trained {arch!r} checkpoint (the same architecture)"
        )
    with torch.no_grad():
        return {
            name: m.weight.detach().clone()
            for name, m in net.named_modules()
            if isinstance(m, (nn.Conv2d, AnalyticConv2d)) and is_spatial_kernel(m)
        }
