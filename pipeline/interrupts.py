"""SIGINT and SIGTERM during a job: an exception that unwinds the job, and a record that no library can lose.

The handler raises ``Terminated`` where the signal arrives, so every ``finally``
and cleanup on the way out runs. A library may still catch it by accident (the
ONNX exporter did, see ``export.interrupts``), so the handler also records the
signal: ``raise_if_interrupted()`` raises it again where the job must not go on
(before its outputs are committed), and whatever leaves ``signals_raise()`` after
a signal (a normal return, or another exception that the interrupt caused) leaves
as ``Terminated``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["Terminated", "raise_if_interrupted", "received", "signals_raise"]

_received: list[int] = []
"""Signals that reached the handler of the active ``signals_raise()``, in order (empty outside one)."""


class Terminated(BaseException):
    """SIGTERM or SIGINT as an exception, so that every ``finally`` and cleanup on the way out runs.

    A ``BaseException``, like ``KeyboardInterrupt``: an ``except Exception`` must not swallow it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def received() -> int | None:
    """The first signal received under the active ``signals_raise()``, or None."""
    return _received[0] if _received else None


def raise_if_interrupted() -> None:
    """Raise ``Terminated`` again if a signal arrived: its first exception may have been swallowed."""
    if _received:
        raise Terminated(_received[0])


def _handler(signum: int, _frame) -> None:
    first = not _received
    _received.append(signum)
    if first:  # later ones are only recorded while the run cleans up
        raise Terminated(signum)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """The first SIGTERM or SIGINT raises ``Terminated``; nothing leaves the block as if it had not come.

    Outside the main thread (where Python cannot install handlers) the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, _handler)
    try:
        yield
        raise_if_interrupted()  # swallowed on the way, and the block ran to its end
    except Terminated:
        raise
    except BaseException as e:
        if _received:  # a library turned the interrupt into an error of its own
            raise Terminated(_received[0]) from e
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _received.clear()
