"""Command-line conventions of the ``export`` commands (``python -m export.test_data``, ``python -m export.akp_inputs``).

A user error is one line on stderr, ``error: <what is wrong>, expected <what>``,
exit code 2, no usage dump, no traceback and nothing written: the convention of
``deploy.cli`` and ``pipeline.export``, which ``export`` cannot import (packages
depend one way: acl <- export <- deploy <- pipeline).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import onnx

__all__ = ["EXIT_USER_ERROR", "ArgumentParser", "UserError", "load_model", "run"]

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input; the message reads ``<what is wrong>, expected <what>``."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are ``UserError``s (one line, exit 2 through ``run``), not a usage dump."""

    def error(self, message: str) -> NoReturn:
        if len(message) > 400:  # argparse quotes the bad value: a huge argument is not echoed back whole
            message = f"{message[:400]}... ({len(message)} characters)"
        raise UserError(f"{message}, expected the arguments described by {self.prog} --help")


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """``main(argv)`` (default ``sys.argv[1:]``), with a ``UserError`` printed as one line and exit code 2."""
    try:
        return main(list(sys.argv[1:] if argv is None else argv))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR


def load_model(path: str | Path, expected: str) -> onnx.ModelProto:
    """The ONNX model at ``path``, checked; ``UserError`` (saying ``expected``) when it is missing or not ONNX."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p} {'is a folder' if p.is_dir() else 'does not exist'}, expected {expected}")
    try:
        model = onnx.load(str(p))
        # Protobuf parses many byte strings (an empty file among them) as some ModelProto.
        onnx.checker.check_model(model)
    except Exception as e:  # DecodeError, ValidationError, ...: all mean "not a usable ONNX file"
        why = str(e).strip().splitlines()[0] if str(e).strip() else ""
        why = f"{type(e).__name__}: {why[:100]}{'...' if len(why) > 100 else ''}" if why else type(e).__name__
        raise UserError(f"{p} is not a valid ONNX model ({why}), expected {expected}") from None
    return model
