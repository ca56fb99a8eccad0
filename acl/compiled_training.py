"""``compile_generators(model)``: train a model's ACLs with the compiled generator (issue 24).

Sets ``compile_generator`` on every ``AnalyticConv2d`` of ``model`` and hooks
``model``'s forward: before it runs, the weights of all its ACLs that will be
generated for autograd are generated together (``acl.compiled_kernels.compiled_mosaics``:
one compiled call per spec and kernel size for the whole model, not one per
layer: 14 against 20 ms forward+backward for AnaNN-ResNet-18's analytic kernels),
and each layer's ``weight`` returns its share during that forward. After the forward
(also when it raises) the shares are dropped: the next forward generates afresh
from the AKPs of that moment. A layer called outside ``model``'s forward (a
submodule on its own, activation checkpointing's recomputation) or under saved-tensor
hooks (inside a non-reentrant checkpoint region, whose first pass must save what its
recomputation saves) generates its own weight, compiled too.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from acl.analytic_conv import AnalyticConv2d

__all__ = ["compile_generators"]

_HOOKS = "_acl_compiled_generation_hooks"


def compile_generators(model: nn.Module, enabled: bool = True) -> int:
    """Generate the kernels of ``model``'s ACLs with compiled graphs while training; returns how many ACLs.

    Eval mode without gradients, tracing and export are unchanged (eager, and the
    eval-mode cache). The first training step compiles (seconds per spec and kernel
    size; inductor needs a C++ compiler). No double backward through the generated
    weights while enabled. ``enabled=False`` restores the eager generator.

    Examples:
        >>> import torch, acl
        >>> net = torch.nn.Sequential(acl.AnalyticConv2d(3, 8, 3, spec="Lg0.5P0.5"), torch.nn.ReLU())
        >>> acl.compile_generators(net), net[0].compile_generator
        (1, True)
        >>> acl.compile_generators(net, enabled=False), net[0].compile_generator
        (1, False)
    """
    layers = [m for m in model.modules() if isinstance(m, AnalyticConv2d)]
    for layer in layers:
        layer.compile_generator = enabled
        layer._pregenerated = None
    for handle in model.__dict__.pop(_HOOKS, ()):
        handle.remove()
    if enabled and layers:
        hooks = (model.register_forward_pre_hook(_pregenerate), model.register_forward_hook(_release, always_call=True))
        model.__dict__[_HOOKS] = hooks  # not a module attribute: never in state_dict or repr
    return len(layers)


def _pregenerate(model: nn.Module, args: Any) -> None:
    from acl.compiled_kernels import compiled_mosaics

    layers = [m for m in model.modules() if isinstance(m, AnalyticConv2d) and m._weight_source() == "compiled"]
    if not layers:
        return
    weights = compiled_mosaics([(m._symbols, m.kernel_size, m._segment_tensors()) for m in layers])
    for m, w in zip(layers, weights):
        m._pregenerated = w.view(m.out_channels, m.in_channels // m.groups, *m.kernel_size)


def _release(model: nn.Module, args: Any, output: Any) -> None:
    for m in model.modules():
        if isinstance(m, AnalyticConv2d):
            m._pregenerated = None
