"""``python -m pipeline.export`` with a signal sent to itself at a chosen point, for the kill and lock tests.

``python tests/pipeline/kill_job.py CLI-ARGS...`` runs ``pipeline.export.main`` with
the CLI arguments; the environment chooses where it stops:

- ``KILL_POINT``: ``train`` (after the first epoch's resume state is saved),
  ``export`` (after the ONNX files are in the staging folder), one of
  ``EXPORT_POINTS`` inside the export stage (while the exporter imports
  ``torch._dynamo``, while ``torch.export`` captures the graph (``-lost``: and the
  capture turns the signal into an error, as the exporter once did) or runs the
  model's forward, while ``torch.onnx`` translates or optimizes it, when ONNX
  Runtime returns from a verification run, between two ONNX file writes),
  ``commit-backup`` (just after the earlier run was moved aside),
  ``commit-swap`` (just before the staging folder is moved in), or ``wait`` (after
  the ONNX files are written, create ``$KILL_SYNC/ready`` and wait for
  ``$KILL_SYNC/go``: the run holds its lock meanwhile).
- ``KILL_SIGNAL``: ``TERM`` (default), ``INT`` or ``KILL``.

Exits with ``main``'s code, or ``NOT_REACHED`` when the point was never reached; a
SIGKILL ends it at that point.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
NOT_REACHED = 99
"""Exit code when ``KILL_POINT`` was never reached (a library version that no longer imports or calls it there)."""


def _out(argv: list[str]) -> Path:
    return Path(argv[argv.index("--out") + 1]).resolve()


_FIRED: list[int] = []


def _fire() -> None:
    _FIRED.append(1)
    os.kill(os.getpid(), getattr(signal, f"SIG{os.environ.get('KILL_SIGNAL', 'TERM')}"))


_IN_EXPORT: list[bool] = []


def _fire_once_inside(owner, name: str, *, after: bool = False) -> None:
    """``owner.name`` sends the signal at its first call inside ``export_files``: before, or after it returns."""
    real = getattr(owner, name)

    def patched(*a, **k):
        due = _IN_EXPORT and not _FIRED
        if due and not after:
            _fire()
        result = real(*a, **k)
        if due and after:
            _fire()
        return result

    setattr(owner, name, patched)


def _fire_as_error_inside(owner, name: str) -> None:
    """``owner.name`` sends the signal at its first call inside ``export_files`` and turns it into an ``Exception``.

    What ``torch.onnx``'s capture did when the signal had left ``torch._dynamo``
    half imported: its ``except torch._dynamo.exc.UserError`` clause raised an
    AttributeError, the strategy counted as failed, and the next one succeeded.
    """
    real = getattr(owner, name)

    def patched(*a, **k):
        if _IN_EXPORT and not _FIRED:
            try:
                _fire()
            except BaseException as e:
                raise AttributeError("module 'torch._dynamo' has no attribute 'exc'") from e
        return real(*a, **k)

    setattr(owner, name, patched)


class _FireOnImport:
    """A meta path finder that sends the signal when ``module`` is first looked for inside ``export_files``.

    The exporter imports some 800 modules on its first call (``torch._dynamo``
    among them); a signal in the middle of one of those imports is the one the
    exporter used to turn into a traceback.
    """

    def __init__(self, module: str) -> None:
        self.module = module

    def find_spec(self, name, path=None, target=None):
        if name == self.module and _IN_EXPORT and not _FIRED:
            _fire()
        return None  # the import itself is left to the real finders


IMPORT_POINTS = {"export-import-dynamo": "torch._dynamo.eval_frame"}  # a TorchExportError, exit 1, before the fix
EXPORT_POINTS = (
    *IMPORT_POINTS,
    "export-capture",
    "export-capture-lost",
    "export-trace",
    "export-translate",
    "export-optimize",
    "export-verify",
    "export-save",
)


def _patch_export_stage(point: str) -> None:
    """Points inside ``export.export_files``: imports, torch.onnx, ONNX Runtime and file writes."""
    import export

    if point in IMPORT_POINTS:
        assert IMPORT_POINTS[point] not in sys.modules, f"{IMPORT_POINTS[point]} is imported before the export"
        sys.meta_path.insert(0, _FireOnImport(IMPORT_POINTS[point]))
    elif point == "export-capture-lost":
        import torch.export

        _fire_as_error_inside(torch.export, "export")
    else:
        _patch_export_call(point)
    real_export = export.export_files

    def export_files(*a, **k):
        _IN_EXPORT.append(True)
        try:
            return real_export(*a, **k)
        finally:
            _IN_EXPORT.clear()

    export.export_files = export_files


def _patch_export_call(point: str) -> None:
    import onnxruntime
    import torch.export
    import torch.nn.functional as F
    from torch.onnx._internal.exporter import _core, _onnx_program

    from export import passes

    owner, name, after = {
        "export-capture": (torch.export, "export", False),
        # a convolution of the model's forward, as torch.export runs it on fake tensors
        "export-trace": (F, "conv2d", False),
        "export-translate": (_core, "_exported_program_to_onnx_program", False),
        "export-optimize": (_onnx_program.ONNXProgram, "optimize", False),
        "export-verify": (onnxruntime.InferenceSession, "run", True),
        "export-save": (passes, "save", True),  # one ONNX file written, the others not yet
    }[point]
    _fire_once_inside(owner, name, after=after)


def _patch(point: str, out: Path) -> None:
    import export
    import pipeline.train as T

    if point in EXPORT_POINTS:
        _patch_export_stage(point)
    elif point == "train":
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
    point = os.environ.get("KILL_POINT", "none")
    _patch(point, _out(argv))
    code = cli(argv)
    if point not in ("none", "wait") and not _FIRED:
        print(f"kill_job: KILL_POINT {point} was never reached, so no signal was sent", file=sys.stderr)
        return NOT_REACHED
    return code


if __name__ == "__main__":
    sys.exit(main())
