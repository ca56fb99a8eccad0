"""Architectures for the pipeline, and ``build``: a plain CNN turned into an AnaNN.

``build(arch, spec, layers=...)`` makes the plain network and replaces chosen
``nn.Conv2d`` layers with ACLs (``acl.convert``): ``layers="first"`` is the paper's
ACL-X, ``"all"`` its AnaNN-X, or a list of module names. Only spatial convolutions
(kernels at least 2x2) become ACLs: ``"all"`` and ``"first"`` leave 1x1, 1xk and kx1
ones plain (``skipped_layers`` names them) and a name choosing one is refused
(``acl.selection`` says why). ``spec=None`` (or ``"none"``) keeps the plain CNN.
``arch`` is one of three kinds:

- a built-in name, a key of ``ARCHS`` (``lenet``, ``resnet18_cifar``, ...); every
  factory takes ``num_classes`` and ``in_channels``;
- ``torchvision:<name>``: ``torchvision.models.<name>(weights=None,
  num_classes=...)``, imported only then; pretrained weights are never downloaded;
- ``package.module:factory``: **your own code**, imported with ``importlib`` and
  called (with ``num_classes``/``in_channels`` when its signature takes them). It
  must return an ``nn.Module``. Importing runs the module's top-level code, so pass
  only names you trust; ``pipeline.checkpoint.load`` never imports a factory named
  inside a checkpoint file unless the caller names it too.

Examples:
    >>> net = build("lenet", layers="first")
    >>> [name for name, _ in acl.acl_layers(net)]
    ['conv1']
    >>> build("lenet", None).conv1
    Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence

from torch import nn

import acl
from pipeline.archs import lenet as _lenet  # the module: binding the function would shadow it
from pipeline.archs.densenet import densenet121, densenet_cifar
from pipeline.archs.mobilenet import mobilenet_v2
from pipeline.archs.resnet import resnet18, resnet18_cifar, resnet34, resnet34_cifar, resnet50
from pipeline.archs.vgg import vgg11_bn
from pipeline.early_checks import (  # torch-free, so the CLI checks before importing torch: one message, two paths
    check_spec,
    layers_select_nothing,
    malformed_model,
    model_not_importable,
    torchvision_name_malformed,
    unknown_arch,
)

__all__ = [
    "ARCHS",
    "DEFAULT_SPEC",
    "TORCHVISION_PREFIX",
    "build",
    "check_spec",
    "convert",
    "create",
    "is_user_model",
    "load_factory",
    "parse_layers",
    "resolve",
    "skipped_layers",
]

DEFAULT_SPEC = "G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5"
"""exp3's arrangement in ratio form (Table 1; the AnaNN experiments use it for every ACL)."""

ARCHS: dict[str, Callable[..., nn.Module]] = {
    "lenet": _lenet.lenet,
    "cnn4": _lenet.cnn4,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet18_cifar": resnet18_cifar,
    "resnet34_cifar": resnet34_cifar,
    "mobilenet_v2": mobilenet_v2,
    "vgg11_bn": vgg11_bn,
    "densenet121": densenet121,
    "densenet_cifar": densenet_cifar,
}
"""Built-in factories ``f(*, num_classes, in_channels) -> nn.Module``."""

TORCHVISION_PREFIX = "torchvision:"

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

Layers = str | Sequence[str]


def is_user_model(arch: str) -> bool:
    """True when ``arch`` names user code (``package.module:factory``) rather than a built-in or torchvision model."""
    return ":" in arch and not arch.startswith(TORCHVISION_PREFIX)


def load_factory(target: str) -> Callable[..., nn.Module]:
    """Import ``package.module:factory`` and return the callable. This runs the module's code.

    ``factory`` may be a dotted attribute path (``module:Class.create``). The module
    is found on ``sys.path`` (which holds the working folder under ``python -m``).

    Raises:
        ValueError: malformed target, module not importable (or failing while it is
            imported), attribute missing, or not callable; the message names what
            was received and what was expected.
    """
    module_name, sep, attr = target.partition(":")
    if not sep or not _DOTTED.fullmatch(module_name) or not _DOTTED.fullmatch(attr):
        raise ValueError(malformed_model(target))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ValueError(model_not_importable(target, module_name, str(e))) from None
    except Exception as e:  # the user's module failed while running; report it on one line
        raise ValueError(f"model {target!r}: importing module {module_name!r} raised {type(e).__name__}: {e}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(
                f"model {target!r}: {module_name!r} has no attribute {attr!r}; expected a callable returning an nn.Module"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(
            f"model {target!r}: {attr!r} is a {type(obj).__name__}, expected a callable returning an nn.Module"
        )
    return obj


def _accepted_kwargs(factory: Callable, kwargs: dict[str, int]) -> dict[str, int]:
    # Pass num_classes/in_channels only where the signature takes them (or **kwargs):
    # a factory with a fixed head is still usable, and its output is checked by the pipeline.
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def _torchvision_factory(arch: str) -> Callable[..., nn.Module]:
    name = arch[len(TORCHVISION_PREFIX) :]
    if not name.isidentifier():
        raise ValueError(torchvision_name_malformed(arch))
    try:
        import torchvision  # lazily: optional, and its wheels often break against a CPU-only torch
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(
            f"--arch {arch}: torchvision is not importable here ({type(e).__name__}: {first}); "
            "use a built-in --arch or --model"
        ) from None
    models = torchvision.models
    known = models.list_models() if hasattr(models, "list_models") else None  # torchvision >= 0.14
    factory = getattr(models, name, None)
    if name.startswith("_") or not callable(factory) or (known is not None and name not in known):
        listed = f"; expected one of {', '.join(known)}" if known else ""
        raise ValueError(f"--arch {arch}: torchvision.models has no model {name!r}{listed}")
    return factory


def resolve(arch: str) -> Callable[..., nn.Module]:
    """The factory behind ``arch`` (imports torchvision or the user's module when named).

    Raises:
        ValueError: unknown name, torchvision not importable, or a bad user factory.
    """
    if not isinstance(arch, str) or not arch:
        raise ValueError(unknown_arch(arch))
    if arch in ARCHS:
        return ARCHS[arch]
    if arch.startswith(TORCHVISION_PREFIX):
        return _torchvision_factory(arch)
    if is_user_model(arch):
        return load_factory(arch)
    raise ValueError(unknown_arch(arch))


def create(arch: str, *, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The plain network ``arch`` (no ACL), for ``in_channels``-channel inputs and ``num_classes`` outputs.

    Raises:
        ValueError: as ``resolve``; a torchvision model asked for other than 3 input
            channels; a user factory that raises or does not return an nn.Module.
    """
    factory = resolve(arch)
    if arch in ARCHS:
        return factory(num_classes=num_classes, in_channels=in_channels)
    if arch.startswith(TORCHVISION_PREFIX):
        if in_channels != 3:
            # torchvision's constructors have no in_channels; patching the stem would rename nothing but
            # silently change a published architecture, so refuse and say why.
            raise ValueError(
                f"--arch {arch}: torchvision models take 3-channel inputs, the data have {in_channels}; "
                "use a built-in --arch (they take in_channels) or --model"
            )
        try:
            net = factory(weights=None, num_classes=num_classes)  # weights=None: never download
        except Exception as e:
            raise ValueError(
                f"--arch {arch}: torchvision.models.{arch[len(TORCHVISION_PREFIX) :]}(weights=None, "
                f"num_classes={num_classes}) raised {type(e).__name__}: {e}"
            ) from None
    else:
        kwargs = _accepted_kwargs(factory, {"num_classes": num_classes, "in_channels": in_channels})
        call = f"{arch}({', '.join(f'{k}={v}' for k, v in kwargs.items())})"
        try:
            net = factory(**kwargs)
        except Exception as e:  # the user's code failed; report it on one line
            raise ValueError(f"model {call} raised {type(e).__name__}: {e}") from None
        if not isinstance(net, nn.Module):
            raise ValueError(f"model {call} returned a {type(net).__name__}, expected an nn.Module")
    return net


def parse_layers(layers: Layers) -> str | tuple[str, ...]:
    """``"first"``, ``"all"``, or a tuple of module names from a comma-separated string or a sequence.

    Raises:
        ValueError: empty selection.

    Examples:
        >>> parse_layers("conv1, layer1.0.conv1")
        ('conv1', 'layer1.0.conv1')
        >>> parse_layers("all")
        'all'
    """
    if isinstance(layers, str):
        if layers.strip() in ("first", "all"):
            return layers.strip()
        names = tuple(n.strip() for n in layers.split(","))
        if any(names) and "" in names:  # conv1,,conv2: refused, not skipped (issue 18)
            raise ValueError(
                f"--layers {layers!r} has an empty item (item {names.index('') + 1}); "
                "expected 'first', 'all' or comma-separated module names"
            )
        names = tuple(n for n in names if n)
    else:
        names = tuple(layers)
    if not names:
        raise ValueError(layers_select_nothing(layers))
    return names


def build(
    arch: str,
    spec: str | None = DEFAULT_SPEC,
    *,
    layers: Layers = "all",
    in_channels: int = 1,
    num_classes: int = 10,
) -> nn.Module:
    """The network ``arch`` with the ``layers`` Conv2d's converted to ACLs with ``spec``.

    Args:
        arch: built-in name, ``torchvision:<name>``, or ``package.module:factory``
            (imports and runs that code; see the module docstring).
        spec: one arrangement spec for every converted layer (a ratio spec fits
            layers of any shape); ``None`` or ``"none"`` returns the plain CNN.
        layers: ``"first"`` (ACL-X: the first spatial convolution), ``"all"``
            (AnaNN-X: every spatial one), or module names as a sequence or a
            comma-separated string.
        in_channels: input image channels.
        num_classes: classifier outputs.

    Raises:
        ValueError: unknown arch, bad factory, unknown, non-Conv2d or 1-pixel-wide
            layer names, or a spec that does not fit a layer (named).
    """
    return convert(create(arch, in_channels=in_channels, num_classes=num_classes), spec, layers=layers)


def convert(net: nn.Module, spec: str | None, *, layers: Layers = "all", allow_pointwise: bool = False) -> nn.Module:
    """Replace the ``layers`` Conv2d's of ``net`` (in place) with ACLs initialised from them.

    The second half of ``build``, for a plain net that was given trained weights
    first (``--init-from``): ``AnalyticConv2d.from_conv`` copies each replaced
    convolution's kernels into the plain positions of its mosaic, and its bias.
    ``spec`` None or ``"none"`` returns ``net`` unchanged. ``allow_pointwise``
    converts 1-pixel-wide convolutions named in ``layers`` (``acl.convert``): only to
    rebuild a checkpoint made when ``"all"`` converted them.

    Raises:
        ValueError: empty selection, unknown, non-Conv2d or 1-pixel-wide layer
            names, or a spec that does not fit a layer (named).
    """
    if spec is None or spec == "none":
        return net
    selected = parse_layers(layers)
    chosen = selected if isinstance(selected, str) else list(selected)
    return acl.convert(net, spec, layers=chosen, inplace=True, allow_pointwise=allow_pointwise)


def skipped_layers(net: nn.Module, spec: str | None, *, layers: Layers = "all") -> dict[str, str]:
    """``{name: "hxw"}`` of the convolutions ``layers`` (``"all"``, ``"first"``) leaves plain for 1-pixel-wide kernels.

    As ``convert``'s arguments. Empty for module names (a 1-pixel-wide name is
    refused instead) and for a plain CNN (``spec`` None or ``"none"``: nothing is
    converted). Works before or after conversion (``acl.selection.skipped_convs``).

    Examples:
        >>> skipped_layers(create("resnet18_cifar", in_channels=3), DEFAULT_SPEC)
        {'layer2.0.downsample.0': '1x1', 'layer3.0.downsample.0': '1x1', 'layer4.0.downsample.0': '1x1'}
    """
    from acl.selection import skipped_convs

    if spec is None or spec == "none":
        return {}
    selected = parse_layers(layers)
    names = skipped_convs(net, selected if isinstance(selected, str) else list(selected))
    return {n: "x".join(str(s) for s in net.get_submodule(n).kernel_size) for n in names}
