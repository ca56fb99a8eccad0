"""Analytic Convolutional Layers (ACL): kernels, arrangement specs, layers, conversion.

Paper: Cui et al., "Analytic Convolutional Layer: A Step To Analytic Neural Network".

>>> import torch, acl
>>> layer = acl.AnalyticConv2d(3, 64, 7, spec="(3x64)G30Lg15Lt15Tf36P96")
>>> round(acl.compact_factor(layer.spec, 3, 64, 7), 4)
0.4726
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use (PEP 562): ``acl.families`` and ``acl.spec`` need no PyTorch,
# so reading the family registry (as ``export`` does for ONNX files) never imports it.
_HOME = {
    "AnalyticConv2d": "acl.analytic_conv",
    "FAMILIES": "acl.families",
    "FitReport": "acl.fitting",
    "FixSummary": "acl.fixing",
    "PruneResult": "acl.pruning",
    "Saliency": "acl.saliency",
    "Spec": "acl.spec",
    "Spectrum": "acl.steering",
    "ablate": "acl.ablation",
    "acl_layers": "acl.conversion",
    "akp_summary": "acl.interpret",
    "attribution": "acl.ablation",
    "bake": "acl.conversion",
    "best_family": "acl.fitting",
    "channel_prune": "acl.pruning",
    "compact_factor": "acl.spec",
    "compile_generators": "acl.compiled_training",
    "convert": "acl.conversion",
    "display_order": "acl.steering",
    "explainsteer": "acl.steering",
    "family_energy": "acl.interpret",
    "fill_zero": "acl.pruning",
    "fit": "acl.fitting",
    "fix_spatial": "acl.fixing",
    "fixed_kernels": "acl.fixed_families",
    "from_conv": "acl.conversion",
    "generate": "acl.kernels",
    "guided_steer": "acl.guided",
    "init_akps": "acl.kernels",
    "is_spatial": "acl.selection",
    "kernel_macs": "acl.pruning_rank",
    "kernel_params": "acl.pruning_rank",
    "kernel_saliency": "acl.saliency",
    "model_spectra": "acl.steering",
    "parse_spec": "acl.spec",
    "rank_inputs": "acl.pruning_rank",
    "zero_kernels": "acl.saliency",
    "zero_masks": "acl.pruning",
}
__all__ = sorted(_HOME)
# ``acl.fit``, ``acl.ablate`` and ``acl.explainsteer`` are functions: their modules are named otherwise, since importing
# a submodule binds its name on the package and would shadow a function of the same name.
_SUBMODULES = (
    "ablation",
    "analytic_conv",
    "channel_graph",
    "compiled_kernels",
    "compiled_training",
    "conversion",
    "families",
    "fitting",
    "fixed_families",
    "fixing",
    "guided",
    "interpret",
    "kernels",
    "pruning",
    "pruning_modules",
    "pruning_plan",
    "recos",
    "saliency",
    "selection",
    "spec",
    "steering",
)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"acl.{name}")
    raise AttributeError(f"module 'acl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*__all__, *_SUBMODULES]
