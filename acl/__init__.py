"""Analytic Convolutional Layers (ACL): kernels, arrangement specs, layers, conversion.

Paper: Cui et al., "Analytic Convolutional Layer: A Step To Analytic Neural Network".

>>> import torch, acl
>>> layer = acl.AnalyticConv2d(3, 64, 7, spec="(3x64)G30Lg15Lt15Tf36P96")
>>> round(acl.compact_factor(layer.spec, 3, 64, 7), 4)
0.4726
"""

from acl import kernels
from acl.analytic_conv import AnalyticConv2d, init_akps
from acl.convert import acl_layers, bake, convert
from acl.kernels import FAMILIES, generate
from acl.spec import Spec, compact_factor, parse_spec

__all__ = [
    "FAMILIES",
    "AnalyticConv2d",
    "Spec",
    "acl_layers",
    "bake",
    "compact_factor",
    "convert",
    "generate",
    "init_akps",
    "kernels",
    "parse_spec",
]
