"""A command run with a signal sent to itself while it imports torch: the window before its handlers existed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import os, signal, sys
from {module} import main  # torch-free, like argument checking


class FireOnTorch:  # the signal while the command imports torch, seconds on a loaded machine
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not FireOnTorch.fired:
            FireOnTorch.fired = True
            os.kill(os.getpid(), signal.SIG{sig})
        return None


sys.meta_path.insert(0, FireOnTorch())
sys.exit(main({argv!r}))
"""


def run_signalled_on_torch_import(module: str, argv: list[str], sig: str) -> subprocess.CompletedProcess:
    """``module``'s ``main(argv)`` in a fresh interpreter, sent SIG``sig`` when it first imports torch."""
    script = _SCRIPT.format(module=module, sig=sig, argv=list(argv))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
