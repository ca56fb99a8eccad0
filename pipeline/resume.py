"""Resumable training: the state after each complete epoch, kept beside ``--out`` until the run commits.

``ResumeStore.beside(out, config)`` keeps one file, ``<parent>/.<out-name>.resume/state.safetensors``:
the model's, optimizer's and gradient scaler's tensors and the RNG states as
safetensors tensors, everything else (epoch, loss history, optimizer and LR
scheduler settings, the run configuration and its hash) as JSON in the file's
metadata. Never pickle. One file replaced atomically per epoch, so a kill at any
moment leaves the previous epoch's state or the new one, never a mix.

A state is reused only when the hash of the run configuration (everything that
changes the training trajectory: data, model and its initial parameters, seed,
epochs, batch size, optimizer, learning rate, precision, world size; not the
compiled kernel generator, which computes the same kernels) equals the
stored one; otherwise the log says which settings differ, training starts at
epoch 1 and the old state is replaced after it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from export.atomic import write_bytes

__all__ = ["FORMAT", "MAX_STATE_BYTES", "ResumeStore", "config_hash", "pack", "tensor_digest", "unpack"]

FORMAT = "acl-deploy/resume/1"
MAX_STATE_BYTES = 8 << 30
"""A larger state file is not read (model + Adam's two moments of a 2 GiB checkpoint fit)."""


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes: identifies a model's initial parameters."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-dim: BN counters
    return h.hexdigest()[:16]


def pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A state-dict-like object as JSON, its tensors moved into ``tensors`` under ``prefix``-based names.

    Dicts keep their key types (optimizer states are keyed by int) and tuples stay
    tuples, so ``unpack`` rebuilds exactly what ``load_state_dict`` expects.
    """
    if isinstance(obj, torch.Tensor):
        # A copy: safetensors refuses tensors sharing memory, and later steps must not change the saved values.
        tensors[prefix] = obj.detach().to("cpu", copy=True).contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, pack(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [pack(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} at {prefix} in a resume state")


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unpack(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(unpack(v, tensors) for v in obj["__tuple__"])
        raise ValueError(f"unexpected object {sorted(obj)[:4]} in a resume state")
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


class ResumeStore:
    """The resume state of one run configuration, in ``folder``.

    Args:
        folder: where the state file lives (created on the first save).
        config: JSON-able settings that determine the training trajectory.
        reuse: False (``--no-resume``): never load, but still save, so that a later
            run can resume this one.
        log: progress messages.
    """

    FILE = "state.safetensors"

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        *,
        reuse: bool = True,
        log: Callable[[str], None] = lambda msg: None,
    ) -> None:
        self.folder = Path(folder)
        self.config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.key = config_hash(self.config)
        self.reuse = reuse
        self.log = log

    @classmethod
    def beside(cls, out: Path, config: dict[str, Any], **kw: Any) -> ResumeStore:
        out = Path(out).resolve()
        return cls(out.parent / f".{out.name}.resume", config, **kw)

    @property
    def path(self) -> Path:
        return self.folder / self.FILE

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        """The stored tensors and JSON state for this configuration, or None (the log says why)."""
        path = self.path
        if not path.is_file():
            return None
        if not self.reuse:
            self.log(f"      resume: --no-resume; starting at epoch 1 (the state in {self.folder} will be replaced)")
            return None
        size = path.stat().st_size
        if size > MAX_STATE_BYTES:
            self.log(f"      resume: ignoring {path}: {size} bytes, expected at most {MAX_STATE_BYTES}")
            return None
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
            stored_config = json.loads(meta["config"])
            if meta.get("key") != self.key:
                changed = sorted(
                    k for k in set(stored_config) | set(self.config) if stored_config.get(k) != self.config.get(k)
                )
                detail = ", ".join(f"{k}: {stored_config.get(k)} -> {self.config.get(k)}" for k in changed[:4])
                self.log(
                    f"      resume: ignoring the state in {self.folder}: it belongs to another configuration "
                    f"({detail or 'hash differs'}); starting at epoch 1"
                )
                return None
            tensors = load_file(str(path))
            state = json.loads(meta["state"])
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            self.log(f"      resume: ignoring unreadable state {path} ({e}); starting at epoch 1")
            return None
        return tensors, state

    def save(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
        """Replace the state file atomically; a full disk raises ``export.atomic.NoSpaceError``."""
        from safetensors.torch import save

        metadata = {
            "format": FORMAT,
            "key": self.key,
            "config": json.dumps(self.config, sort_keys=True),
            "state": json.dumps(state),
        }
        # Written by Python, as checkpoint.save: safetensors' own writer hides a full disk's errno.
        try:
            return write_bytes(self.path, save(tensors, metadata=metadata))
        except OSError:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: an earlier epoch's state stays, to resume from
            raise

    def clear(self) -> None:
        """Remove the state (after the run's outputs are committed)."""
        shutil.rmtree(self.folder, ignore_errors=True)
