"""Ctrl-C (or a caller's SIGTERM handler) survives code that swallows exceptions.

A Python signal handler raises its exception wherever the main thread happens to
be, and the exporter catches broadly: ``torch.onnx.export`` tries one capture
strategy after another under ``except Exception``. A signal that lands while
``torch.export`` imports ``torch._dynamo`` leaves that import half done, the
strategy's ``except torch._dynamo.exc.UserError`` clause then raises an
``AttributeError`` of its own, and the exporter reports a failed capture (a
``TorchExportError``, 120 lines) or, when the next strategy succeeds, nothing at
all: the interrupt was lost (issue 18). ``signals_kept()`` wraps the SIGINT and
SIGTERM handlers for the duration of a block, remembers the exception a handler
raised, and raises that exception again when the block ends, whatever the code
inside made of it.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

__all__ = ["signals_kept"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _recording(handler: Callable, raised: list[BaseException]) -> Callable:
    def record(signum, frame):
        try:
            handler(signum, frame)
        except BaseException as e:
            raised.append(e)
            raise

    return record


@contextlib.contextmanager
def signals_kept() -> Iterator[None]:
    """The first exception a SIGINT or SIGTERM handler raises inside the block leaves the block.

    It is raised where the signal arrived, as usual; if the code inside swallows it,
    or turns it into another exception, it is raised again at the end of the block.
    Handlers that raise nothing (``SIG_IGN``, a handler that only records) are
    left as they are. Only in the main thread, where Python runs signal handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[BaseException] = []
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s, handler in previous.items():
        if callable(handler):
            signal.signal(s, _recording(handler, raised))
    try:
        yield
    except BaseException as e:
        if raised and e is not raised[0]:
            raise raised[0] from None  # the interrupt caused whatever the code inside raised
        raise
    finally:
        for s, handler in previous.items():
            if handler is not None:  # None: installed outside Python, left untouched above
                signal.signal(s, handler)
    if raised:
        raise raised[0]
