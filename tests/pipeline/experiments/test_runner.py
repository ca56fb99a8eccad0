"""``pipeline.experiments.runner``: worker processes and signals."""

from __future__ import annotations

import signal
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context


def _sigint_disposition() -> str:
    return str(signal.getsignal(signal.SIGINT))


def test_workers_leave_sigint_to_the_parent():
    """A Ctrl-C reaches every process of the group: workers still importing torch printed tracebacks of their own."""
    from pipeline.experiments.runner import _children_ignore_sigint

    before = signal.getsignal(signal.SIGINT)
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
        with _children_ignore_sigint():
            ignored = ex.submit(_sigint_disposition)
        assert ignored.result() == str(signal.SIG_IGN)
    assert signal.getsignal(signal.SIGINT) is before, "the parent's own handler is back"
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
        assert ex.submit(_sigint_disposition).result() != str(signal.SIG_IGN), "without it a worker takes Ctrl-C"
