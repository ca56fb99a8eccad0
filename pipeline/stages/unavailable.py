"""The *Not available here* section: every backend, mode and server that could not run here, each reason once.

A section without a stage: it reads across the parity, latency and serving results.
"""

from __future__ import annotations

from typing import Any

from pipeline import report as rep


def markdown(report: dict[str, Any]) -> list[str]:
    return rep.not_available_section(rep.not_available(report))
