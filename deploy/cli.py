"""Command-line conventions shared by this project's CLIs (``deploy.tensorrt``, ``pipeline.export``).

A user error is one line on stderr, ``error: <what>, expected <what>``, and exit
code 2, with no usage dump and no traceback; echoed input is cut short. ``--help``
states each default once (``HelpFormatter``).

Not a command itself: ``python -m deploy.cli`` lists the commands (``COMMANDS``)
and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["COMMANDS", "EXIT_USER_ERROR", "ArgumentParser", "HelpFormatter", "clip", "show_default"]

EXIT_USER_ERROR = 2
ECHO_LIMIT = 120
"""Characters of user input quoted back in an error message."""
COMMANDS = {
    "python -m pipeline.export": "the whole job: train or load, export, run, validate, report",
    "python -m pipeline.reproduce": "the paper's experiments",
    "python -m deploy.tensorrt check FILE.onnx ...": "TensorRT parser problems, without TensorRT",
    "python -m export.test_data FILE.onnx [FOLDER]": "replay a file's test data in ONNX Runtime",
}
"""This project's commands, for ``python -m deploy.cli`` (which is not one of them)."""


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


def show_default(value: object) -> str:
    """A default as it is typed on the command line: ``(1, 8, 64)`` -> ``1,8,64``."""
    if isinstance(value, (tuple, list)):
        return ",".join(map(show_default, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` where a help text does not state its default already.

    Nothing is appended for a default of None or False (an option left out, a flag
    off): where None stands for a computed value, the help text says which.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # `is`, not `in`: a default of 0 equals False and must be shown.
        if (
            "(default" in text
            or any(default is v for v in (None, False, argparse.SUPPRESS))
            or not action.option_strings
        ):
            return text
        return f"{text} (default: {show_default(default).replace('%', '%%')})"


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.cli``: says that this is no command and which commands there are; exit 2."""
    listing = "\n".join(f"  {cmd:48} {what}" for cmd, what in COMMANDS.items())
    p = ArgumentParser(
        prog="python -m deploy.cli",
        description="Command-line conventions shared by this project's commands; not a command itself.",
        epilog=f"commands:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.parse_args(argv)  # --help prints the list and exits 0; anything else is refused there
    print(
        f"error: deploy.cli is not a command, expected one of: {'; '.join(COMMANDS)} (each has --help)",
        file=sys.stderr,
    )
    return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
