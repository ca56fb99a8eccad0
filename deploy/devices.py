"""Which accelerator devices this machine has, asked without importing any CUDA library."""

from __future__ import annotations

import shutil
import subprocess

__all__ = ["cuda_device_present"]


def cuda_device_present() -> tuple[bool, str]:
    """Whether a CUDA device is visible, by ``nvidia-smi`` (no CUDA library import)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "no CUDA device (nvidia-smi not found)"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"no CUDA device (nvidia-smi failed: {e})"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, "no CUDA device (nvidia-smi lists none)"
    return True, out.stdout.strip().splitlines()[0]
