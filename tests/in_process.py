"""A command line run in this process: ``run_main(capsys, argv)`` -> exit code, stdout, stderr.

A subprocess pays 3 to 5 s of imports (torch, onnx, scikit-learn) before the
first check; the bad-input tests assert on the code, the one ``error:`` line and
the files left, which ``main([...])`` gives the same. A handful of tests keep the
real entry point (``python -m ...``) for what only a process shows: the exit
status of the interpreter and the checks made before torch is imported
(tests/pipeline/test_cli_help.py, the ``subprocess`` cases of test_bad_inputs.py).
"""

from __future__ import annotations

import importlib

__all__ = ["run_main"]


def run_main(capsys, argv: list[str], module: str = "pipeline.export") -> tuple[int, str, str]:
    """``module.main(argv)``'s exit code (argparse's ``SystemExit`` included) and what it printed."""
    main = importlib.import_module(module if module != "deploy.tensorrt" else "deploy.tensorrt.__main__").main
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse and the import-free early checks leave through sys.exit
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err
