"""Command-line conventions shared by this project's CLIs (``deploy.tensorrt``, ``pipeline.export``).

A user error is one line on stderr, ``error: <what>, expected <what>``, and exit
code 2, with no usage dump and no traceback; echoed input is cut short.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["EXIT_USER_ERROR", "ArgumentParser", "clip"]

EXIT_USER_ERROR = 2
ECHO_LIMIT = 120
"""Characters of user input quoted back in an error message."""


def clip(text: object, limit: int = ECHO_LIMIT) -> str:
    """``repr`` of user input, cut to ``limit`` characters with the full length stated.

    Examples:
        >>> clip("abc")
        "'abc'"
        >>> clip("x" * 500, limit=10)
        "'xxxxxxxx... (502 characters)"
    """
    r = repr(text)
    return r if len(r) <= limit else f"{r[: limit - 1]}... ({len(r)} characters)"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with one-line errors: ``error: <message>, expected ... --help``, exit 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        if len(message) > 4 * ECHO_LIMIT:
            message = message[: 4 * ECHO_LIMIT] + f"... ({len(message)} characters)"
        # argparse's own messages say what is wrong; the line also says where the right form is given.
        print(f"error: {message}, expected the arguments described by {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
