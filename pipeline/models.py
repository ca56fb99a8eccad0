"""Compatibility alias: the architectures moved to ``pipeline.archs`` (one file per family).

``from pipeline.models import DEFAULT_SPEC, build`` keeps working; new code should
import from ``pipeline.archs``.
"""

from __future__ import annotations

from pipeline.archs import ARCHS, DEFAULT_SPEC, build
from pipeline.archs.lenet import CNN4, LeNet

__all__ = ["ARCHS", "CNN4", "DEFAULT_SPEC", "LeNet", "build"]
