"""Checkpoints: safetensors (tensors only, never pickle) with the run's metadata.

``model.safetensors`` holds the state dict's tensors (AKPs in natural units, plain
kernels, the rest of the network) and string metadata:

=====================  ======================================================
key                    value
=====================  ======================================================
format                 ``acl-deploy/1``
arch                   architecture name (``lenet``...)
spec                   the spec given at build time (``none`` for a plain CNN)
layers                 JSON ``{layer: canonical spec}`` of every ACL
mean, std, image_size  input preprocessing
num_classes            classes of the classifier
=====================  ======================================================

A ``.pt`` file is also accepted; it is read with ``torch.load(weights_only=True)``
and must hold ``{"state_dict": ..., "meta": {...}}`` with the same metadata, or a
bare state dict (arch and spec then come from the command line).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

import acl
from export.atomic import atomic_output
from pipeline.errors import UserError
from pipeline.models import build

__all__ = ["FORMAT", "MAX_CHECKPOINT_BYTES", "load", "save"]

FORMAT = "acl-deploy/1"
MAX_CHECKPOINT_BYTES = 2 << 30
"""Larger files are refused before reading (2 GiB: far above any model this tool trains)."""


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def save(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model``'s tensors and ``meta`` to ``path`` (safetensors), atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    layers = {name: str(layer.spec) for name, layer in acl.acl_layers(model)}
    metadata = {"format": FORMAT, "layers": json.dumps(layers), **{k: str(v) for k, v in meta.items()}}
    with atomic_output(path) as tmp:
        save_file(_tensors(model), str(tmp), metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise UserError(f"checkpoint is not a file: {path}")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise UserError(f"checkpoint {path} is {size} bytes; refusing to read more than {MAX_CHECKPOINT_BYTES}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(f"checkpoint {path} is corrupt or not a safetensors file ({e})") from None
        return tensors, meta
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad file; all mean the same here
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"checkpoint {path} is corrupt or not a weights-only PyTorch file ({first})") from None
        if isinstance(obj, dict) and "state_dict" in obj:
            sd, meta = obj["state_dict"], {str(k): str(v) for k, v in dict(obj.get("meta", {})).items()}
        elif isinstance(obj, dict):
            sd, meta = obj, {}
        else:
            raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict")
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        return tensors, meta
    raise UserError(f"checkpoint {path} has suffix {path.suffix!r}; expected .safetensors, .pt or .pth")


def load(path: str | Path, *, arch: str | None = None, spec: str | None = None) -> tuple[nn.Module, dict[str, str]]:
    """Rebuild the model a checkpoint was saved from, and check it.

    ``arch``/``spec`` (from the command line) must agree with the checkpoint's own
    metadata when both are known; when the checkpoint has none, they are required.

    Raises:
        UserError: missing, oversized or corrupt file; arch or spec disagreeing with
            the checkpoint; tensors not matching the architecture; non-finite values.
    """
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format", FORMAT) != FORMAT:
        raise UserError(f"checkpoint {path} has format {meta['format']!r}; expected {FORMAT!r}")
    saved_arch, saved_spec = meta.get("arch"), meta.get("spec")
    if arch and saved_arch and arch != saved_arch:
        raise UserError(f"checkpoint {path} is a {saved_arch!r} model, but --arch {arch} was given")
    if spec and saved_spec and spec != saved_spec:
        raise UserError(f"checkpoint {path} was trained with --spec {saved_spec}, but --spec {spec} was given")
    arch = arch or saved_arch
    spec = spec or saved_spec
    if not arch or not spec:
        raise UserError(f"checkpoint {path} does not record its architecture; pass --arch and --spec")
    num_classes = int(meta.get("num_classes", 10))
    try:
        model = build(arch, None if spec == "none" else spec, num_classes=num_classes)
    except ValueError as e:
        raise UserError(str(e)) from None

    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"checkpoint {path} has non-finite values (NaN or Inf) in {', '.join(sorted(bad))}")
    expected = _tensors(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
        if wrong:
            shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:4]]
            parts.append(f"shape mismatch {'; '.join(shapes)}")
        raise UserError(f"checkpoint {path} does not match --arch {arch} --spec {spec}: {'; '.join(parts)}")
    saved_layers = json.loads(meta["layers"]) if meta.get("layers") else None
    built_layers = {name: str(layer.spec) for name, layer in acl.acl_layers(model)}
    if saved_layers is not None and saved_layers != built_layers:
        raise UserError(f"checkpoint {path} layer specs {saved_layers} do not match the model's {built_layers}")
    state = {**tensors, **{f"{n}._extra_state": layer.get_extra_state() for n, layer in acl.acl_layers(model)}}
    model.load_state_dict(state, strict=True)
    meta = {**meta, "arch": arch, "spec": spec}
    for key in ("mean", "std"):
        try:
            ok = key not in meta or math.isfinite(float(meta[key]))
        except ValueError:
            ok = False
        if not ok:
            raise UserError(f"checkpoint {path} has a bad {key} in its metadata: {meta[key]!r}")
    return model.eval(), meta
