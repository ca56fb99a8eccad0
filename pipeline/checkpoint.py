"""Checkpoints: safetensors (tensors only, never pickle) with the run's metadata.

``model.safetensors`` holds the state dict's tensors (AKPs in natural units, plain
kernels, the rest of the network) and string metadata:

=====================  ======================================================
key                    value
=====================  ======================================================
format                 ``acl-deploy/1``
arch                   architecture: a built-in name (``lenet``...) or ``torchvision:<name>``
model                  instead of arch: your ``package.module:factory`` (``--model``)
spec                   the spec given at build time (``none`` for a plain CNN)
convert_layers         the ``--layers`` choice: ``all``, ``first`` or comma-separated names
layers                 JSON ``{layer: canonical spec}`` of every ACL: what ``load`` rebuilds
in_channels            input image channels
mean, std              per-channel standardisation (0..1 scale): a number for one channel, a JSON list
image_size             input side in pixels
num_classes            classes of the classifier
=====================  ======================================================

A ``.pt`` file is also accepted; it is read with ``torch.load(weights_only=True)``
and must hold ``{"state_dict": ..., "meta": {...}}`` with the same metadata, or a
bare state dict (arch and spec then come from the command line).

Checkpoints without ``convert_layers`` or ``in_channels`` (older runs) were built
with ``all`` and 1 channel.

``load`` converts exactly the layers the ``layers`` entry names (or, in a file
without it, the layers whose ACL parameters it holds), not what ``convert_layers``
means today: before 1-pixel-wide convolutions were left plain, ``all`` converted
them too, and such a file still loads as it was trained (its 1x1 ACLs included).
A spec saved with a grouped layer's channels, ``(16x16)`` for a depthwise 16->16
convolution, matches the kernel-bank form ``(1x16)`` shown since.

A checkpoint of a ``--model`` network is rebuilt only when the caller names the
same factory again (``load(..., model=...)``, the ``--model`` flag): loading a file
never imports code named inside it.

``read_init``/``apply_init`` serve ``--init-from``: the weights of a trained *plain*
network (no ACL) of the same architecture, loaded before conversion so that the
ACLs start from the convolutions they replace.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

import acl
from export.atomic import write_bytes
from pipeline import archs
from pipeline.datasets.base import format_channels, parse_channels
from pipeline.early_checks import arch_and_model_problem
from pipeline.errors import UserError

__all__ = ["FORMAT", "MAX_CHECKPOINT_BYTES", "apply_init", "load", "norm", "read_init", "save"]

FORMAT = "acl-deploy/1"
MAX_CHECKPOINT_BYTES = 2 << 30
"""Larger files are refused before reading (2 GiB: far above any model this tool trains)."""


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}


def _meta_text(value: Any) -> str:
    # Per-channel values (mean, std): one channel stays a plain number, as older checkpoints have it.
    if isinstance(value, (list, tuple)):
        return format_channels(value)
    return str(value)


def norm(meta: dict[str, str]) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """The per-channel (mean, std) a checkpoint's inputs were standardised with, or None if it has none."""
    if "mean" not in meta or "std" not in meta:
        return None
    return parse_channels(meta["mean"]), parse_channels(meta["std"])


def save(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> Path:
    """Write ``model``'s tensors and ``meta`` to ``path`` (safetensors), atomically.

    Raises:
        export.atomic.NoSpaceError: the file system is full (the message says how much the file needs).
    """
    from safetensors.torch import save

    layers = {name: str(layer.spec) for name, layer in acl.acl_layers(model)}
    metadata = {"format": FORMAT, "layers": json.dumps(layers), **{k: _meta_text(v) for k, v in meta.items()}}
    # Serialised in memory and written by Python: safetensors' own writer reports a full disk as a
    # SafetensorError without the errno, and the size is known before the first byte is written.
    return write_bytes(path, save(_tensors(model), metadata=metadata))


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}, expected an existing .safetensors or .pt file")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file, expected a .safetensors or .pt file")
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise UserError(
            f"checkpoint {path} is {size} bytes; refusing to read more than {MAX_CHECKPOINT_BYTES}, expected a "
            "smaller file"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise UserError(
                f"checkpoint {path} is corrupt or not a safetensors file ({_first_line(e)}), "
                "expected a checkpoint written by this tool"
            ) from None
        return tensors, meta
    if path.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad file; all mean the same here
            raise UserError(
                f"checkpoint {path} is corrupt or not a weights-only PyTorch file ({_first_line(e)}), "
                "expected a state dict saved with torch.save"
            ) from None
        if isinstance(obj, dict) and "state_dict" in obj:
            sd, meta = obj["state_dict"], {str(k): str(v) for k, v in dict(obj.get("meta", {})).items()}
        elif isinstance(obj, dict):
            sd, meta = obj, {}
        else:
            raise UserError(f"checkpoint {path} holds a {type(obj).__name__}, expected a state dict")
        tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
        return tensors, meta
    raise UserError(f"checkpoint {path} has suffix {path.suffix!r}, expected .safetensors, .pt or .pth")


def _first_line(e: BaseException, limit: int = 160) -> str:
    """An exception's first line, cut short: library messages run to paragraphs."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


META_LIMITS = {"num_classes": 100_000, "in_channels": 4096, "image_size": 4096}
"""Upper bounds of the integer metadata: a model is built from them before its tensors are compared."""


def _int_meta(path: Path, meta: dict[str, str], key: str, default: int) -> int:
    hi = META_LIMITS[key]
    try:
        value = int(meta.get(key, default))
    except (TypeError, ValueError):
        value = 0
    if not 1 <= value <= hi:
        raise UserError(
            f"checkpoint {path} has a bad {key} in its metadata: {str(meta[key])[:40]!r}, expected an integer 1 to {hi}"
        )
    return value


def load(
    path: str | Path,
    *,
    arch: str | None = None,
    spec: str | None = None,
    model: str | None = None,
    layers: str | None = None,
) -> tuple[nn.Module, dict[str, str]]:
    """Rebuild the model a checkpoint was saved from, and check it.

    ``arch``/``model``/``spec``/``layers`` (from the command line) must agree with
    the checkpoint's own metadata when both are known; when the checkpoint has none,
    the architecture and spec are required. A checkpoint of your own network
    (``package.module:factory``) needs ``model`` naming that factory: the file alone
    never makes this function import code.

    Returns:
        The model in eval mode, and the metadata with ``arch`` (or ``model``),
        ``spec``, ``convert_layers`` and ``in_channels`` filled in.

    Raises:
        UserError: missing, oversized or corrupt file; arch, model, spec or layers
            disagreeing with the checkpoint; a factory named only by the file;
            tensors not matching the architecture; non-finite values.
    """
    path = Path(path)
    tensors, meta = _read(path)
    if meta.get("format", FORMAT) != FORMAT:
        raise UserError(f"checkpoint {path} has format {meta['format'][:40]!r}, expected {FORMAT!r}")
    name, flag, spec = _identity(path, meta, arch=arch, model=model, spec=spec)
    layers_choice = _layers_choice(path, meta, layers)
    num_classes = _int_meta(path, meta, "num_classes", 10)
    in_channels = _int_meta(path, meta, "in_channels", 1)
    image_size = _int_meta(path, meta, "image_size", 32) if "image_size" in meta else None
    _check_norm_meta(path, meta)
    saved_layers = _saved_layers(path, meta)
    converted = list(saved_layers) if saved_layers else _acl_modules(tensors)
    try:
        net = archs.create(name, in_channels=in_channels, num_classes=num_classes)
        # The names the file records, 1x1 ones included: what "all" meant when it was written.
        net = archs.convert(net, spec, layers=converted or layers_choice, allow_pointwise=bool(converted))
    except ValueError as e:
        raise UserError(str(e)) from None
    net = _pruned(path, meta, net)
    _check_tensors(path, tensors, net, f"{flag} {name} --spec {spec}")
    if saved_layers is not None and not _same_specs(saved_layers, net):
        built_layers = {n: str(layer.spec) for n, layer in acl.acl_layers(net)}
        raise UserError(
            f"checkpoint {path} layer specs {str(saved_layers)[:200]} do not match the model's, expected {built_layers}"
        )
    state = {**tensors, **{f"{n}._extra_state": layer.get_extra_state() for n, layer in acl.acl_layers(net)}}
    net.load_state_dict(state, strict=True)
    return net.eval(), _filled_meta(meta, name, spec, layers_choice, in_channels, image_size)


def _filled_meta(
    meta: dict[str, str], name: str, spec: str, layers_choice: str, in_channels: int, image_size: int | None
) -> dict[str, str]:
    """``meta`` with what ``load`` settled: ``arch`` (or ``model``), ``spec``, ``convert_layers``, ``in_channels``..."""
    return {
        **meta,
        "model" if archs.is_user_model(name) else "arch": name,
        "spec": spec,
        "convert_layers": layers_choice,
        "in_channels": str(in_channels),
        **({"image_size": str(image_size)} if image_size is not None else {}),
    }


def _pruned(path: Path, meta: dict[str, str], net: nn.Module) -> nn.Module:
    """``net`` with the layers a pruned checkpoint rebuilt smaller (its ``pruned`` entry) in their recorded shapes."""
    if "pruned" not in meta:
        return net
    from pipeline.pruned_shapes import apply

    try:
        record = json.loads(meta["pruned"])
    except ValueError:
        raise UserError(f"checkpoint {path} has a malformed pruned entry, expected JSON of layer shapes") from None
    return apply(net, record, path)


def _identity(
    path: Path, meta: dict[str, str], *, arch: str | None, model: str | None, spec: str | None
) -> tuple[str, str, str]:
    """The model's name, the flag that names it, and its spec: the caller's when they agree with the file's."""
    both = arch_and_model_problem(arch, model)
    if both:
        raise UserError(both)
    given, flag = (model, "--model") if model else (arch, "--arch")
    saved = meta.get("model") or meta.get("arch")
    saved_spec = meta.get("spec")
    if given and saved and given != saved:
        raise UserError(f"checkpoint {path} is a {saved!r} model, but {flag} {given} was given, expected {saved}")
    if spec and saved_spec and spec != saved_spec:
        raise UserError(
            f"checkpoint {path} was trained with --spec {saved_spec}, but --spec {spec} was given, expected the same"
        )
    name = given or saved
    spec = spec or saved_spec
    if not name or not spec:
        raise UserError(
            f"checkpoint {path} does not record its architecture; pass --arch and --spec (or --model), expected "
            "them to name it"
        )
    if archs.is_user_model(name) and not model:
        # The name came from the file (or from --arch): importing it would run code the user never asked for.
        raise UserError(
            f"checkpoint {path} was built by your code {name!r}; pass --model {name} to import and run it "
            "(loading a checkpoint never imports code named inside it)"
        )
    return name, flag, spec


def _layers_choice(path: Path, meta: dict[str, str], layers: str | None) -> str:
    """The file's ``--layers`` choice (``all`` in older files), which ``layers``, when given, must equal."""
    saved = meta.get("convert_layers", "all")
    try:
        if layers and archs.parse_layers(layers) != archs.parse_layers(saved):
            raise UserError(
                f"checkpoint {path} was built with --layers {saved}, but --layers {layers} was given, expected the same"
            )
    except ValueError as e:
        raise UserError(str(e)) from None
    return saved


def _check_norm_meta(path: Path, meta: dict[str, str]) -> None:
    for key in ("mean", "std"):
        try:
            values = parse_channels(meta[key]) if key in meta else (1.0,)
        except (TypeError, ValueError):
            values = ()
        if not values or (key == "std" and min(values) <= 0):
            raise UserError(
                f"checkpoint {path} has a bad {key} in its metadata: {str(meta[key])[:40]!r}, "
                f"expected a finite number or a JSON list of them{' (each > 0)' if key == 'std' else ''}"
            )


def _saved_layers(path: Path, meta: dict[str, str]) -> dict[str, Any] | None:
    """The ``layers`` entry, ``{layer: spec}``; None in a file without it."""
    try:
        saved = json.loads(meta["layers"]) if meta.get("layers") else None
    except ValueError:
        saved = ""
    if saved is not None and not isinstance(saved, dict):
        raise UserError(
            f"checkpoint {path} has bad layers in its metadata: {str(meta['layers'])[:40]!r}, "
            "expected a JSON object of layer specs"
        )
    return saved


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], net: nn.Module, model: str) -> None:
    """The file's tensors are finite and are exactly ``net``'s, by name and shape; ``model`` names it in errors."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(
            f"checkpoint {path} has non-finite values (NaN or Inf) in {', '.join(sorted(bad)[:6])}, "
            "expected finite weights"
        )
    parts = _mismatch(_tensors(net), tensors)
    if parts:
        raise UserError(
            f"checkpoint {path} does not match {model}: {'; '.join(parts)}, expected the tensors of that model"
        )


def _mismatch(
    expected: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], *, optional: tuple[str, ...] = ()
) -> list[str]:
    """Why ``tensors`` cannot load strictly where ``expected`` are (missing, unexpected, mis-shaped); [] when they can.

    ``optional``: name endings of expected tensors that may be absent.
    """
    missing = sorted(k for k in set(expected) - set(tensors) if not k.endswith(optional))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(expected[k].shape) != tuple(tensors[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:6])}{' ...' if len(unexpected) > 6 else ''}")
    if wrong:
        shapes = [f"{k} {tuple(tensors[k].shape)} vs {tuple(expected[k].shape)}" for k in wrong[:4]]
        parts.append(f"shape mismatch {'; '.join(shapes)}")
    return parts


_ACL_PARAM = re.compile(r"(^|\.)(akp\d+_[A-Za-z]+|plain\d+|fixed\d+_[A-Za-z]+)$")


def _acl_modules(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the modules whose ACL parameters ``tensors`` holds (a file without a ``layers`` entry)."""
    names = [_ACL_PARAM.sub("", k) for k in tensors if _ACL_PARAM.search(k)]
    return list(dict.fromkeys(n for n in names if n))


def _same_specs(saved: dict[str, Any], net: nn.Module) -> bool:
    """Whether the recorded ``{layer: spec}`` are ``net``'s ACLs and specs, compared parsed (older prefixes match)."""
    layers = dict(acl.acl_layers(net))
    if set(saved) != set(layers):
        return False
    for name, text in saved.items():
        layer = layers[name]
        try:
            spec = acl.parse_spec(text, layer.in_channels, layer.out_channels, groups=layer.groups)
        except (TypeError, ValueError):
            return False
        if spec != layer.spec:
            return False
    return True


def read_init(path: str | Path, *, arch: str) -> dict[str, torch.Tensor]:
    """The tensors of ``--init-from PATH``: a trained *plain* checkpoint of ``arch``.

    Same formats and size bound as ``load`` (safetensors, or a weights-only ``.pt``
    holding a state dict). Metadata, when present, must say plain (``spec`` none)
    and, when it names one, the same architecture.

    Raises:
        UserError: missing, oversized or corrupt file; an ACL checkpoint; another
            architecture; non-finite values.
    """
    path = Path(path)
    try:
        tensors, meta = _read(path)
    except UserError as e:
        raise UserError(f"--init-from: {e}") from None
    acl_keys = sorted(k for k in tensors if _ACL_PARAM.search(k))
    spec = meta.get("spec", "none")
    if acl_keys or spec != "none":
        what = f"spec {spec}" if spec != "none" else f"ACL parameters {', '.join(acl_keys[:3])}"
        raise UserError(
            f"--init-from {path} is an ACL checkpoint ({what}); expected a plain (non-ACL) checkpoint "
            "of the same architecture, e.g. one trained with --spec none"
        )
    saved = meta.get("model") or meta.get("arch")
    if saved and saved != arch:
        raise UserError(f"--init-from {path} is a {saved!r} model, expected a plain {arch!r} checkpoint")
    bad = sorted(k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if bad:
        raise UserError(
            f"--init-from {path} has non-finite values (NaN or Inf) in {', '.join(bad[:6])}, expected finite weights"
        )
    return tensors


def apply_init(net: nn.Module, tensors: dict[str, torch.Tensor], *, path: str | Path, arch: str) -> nn.Module:
    """Load ``read_init``'s tensors into the plain ``net`` (strict: same names and shapes).

    BatchNorm's ``num_batches_tracked`` counters may be absent (older torchvision
    files lack them); they then stay zero.

    Raises:
        UserError: names missing, unexpected and mis-shaped tensors.
    """
    expected = _tensors(net)
    parts = _mismatch(expected, tensors, optional=("num_batches_tracked",))
    if parts:
        raise UserError(
            f"--init-from {path} does not match a plain {arch}: {'; '.join(parts)}; expected a checkpoint of the "
            "same architecture, input channels and number of classes"
        )
    net.load_state_dict({**expected, **tensors}, strict=True)
    return net
