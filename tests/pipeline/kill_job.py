"""``python -m pipeline.export`` with a signal sent to itself at a chosen point, for the kill and lock tests.

``python tests/pipeline/kill_job.py CLI-ARGS...`` runs ``pipeline.export.main`` with
the CLI arguments; the environment chooses where it stops:

- ``KILL_POINT``: ``train`` (after the first epoch's resume state is saved),
  ``export`` (after the ONNX files are in the staging folder), ``commit-backup``
  (just after the earlier run was moved aside), ``commit-swap`` (just before the
  staging folder is moved in), or ``wait`` (after the ONNX files are written,
  create ``$KILL_SYNC/ready`` and wait for ``$KILL_SYNC/go``: the run holds its lock
  meanwhile).
- ``KILL_SIGNAL``: ``TERM`` (default), ``INT`` or ``KILL``.

Exits with ``main``'s code; a SIGKILL ends it at that point.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def _out(argv: list[str]) -> Path:
    return Path(argv[argv.index("--out") + 1]).resolve()


def _fire() -> None:
    os.kill(os.getpid(), getattr(signal, f"SIG{os.environ.get('KILL_SIGNAL', 'TERM')}"))


def _patch(point: str, out: Path) -> None:
    import export
    import pipeline.train as T

    if point == "train":
        real_train = T.train

        def train(*a, **k):
            def hook(done: int) -> None:
                if done == 1:
                    _fire()

            return real_train(*a, **{**k, "on_epoch_end": hook})

        T.train = train
    elif point in ("export", "wait"):
        real_export = export.export_files

        def export_files(*a, **k):
            paths = real_export(*a, **k)
            if point == "export":
                _fire()
            else:
                sync = Path(os.environ["KILL_SYNC"])
                (sync / "ready").write_text(str(os.getpid()))
                deadline = time.monotonic() + 300
                while not (sync / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return paths

        export.export_files = export_files
    elif point in ("commit-backup", "commit-swap"):
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            src, dst = Path(src), Path(dst)
            swap = ".staging-" in src.name and dst.resolve() == out
            if point == "commit-swap" and swap:
                _fire()
            real_replace(src, dst, *a, **k)
            if point == "commit-backup" and src.resolve() == out and ".previous-" in dst.name:
                _fire()

        os.replace = replace
    elif point != "none":
        raise SystemExit(f"unknown KILL_POINT {point!r}")


def main() -> int:
    from pipeline.export import main as cli

    argv = sys.argv[1:]
    _patch(os.environ.get("KILL_POINT", "none"), _out(argv))
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
