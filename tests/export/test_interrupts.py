"""``export.interrupts.signals_kept``: a signal handler's exception leaves the block whatever the code inside does."""

from __future__ import annotations

import signal

import pytest

from export.interrupts import signals_kept


class Stop(BaseException):
    pass


@pytest.fixture()
def raising_sigterm():
    """SIGTERM raises ``Stop``, like a command's handler; the previous handler comes back afterwards."""

    def handler(signum, frame):
        raise Stop(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    yield handler
    signal.signal(signal.SIGTERM, previous)


def _swallow_a_signal() -> str:
    """What a broad ``except`` in a library does with a signal arriving in its ``try``."""
    try:
        signal.raise_signal(signal.SIGTERM)
    except BaseException:
        return "carried on"
    return "not reached"


def test_a_swallowed_signal_is_raised_again_at_the_end_of_the_block(raising_sigterm):
    done = []
    with pytest.raises(Stop):
        with signals_kept():
            done.append(_swallow_a_signal())
            done.append("the rest of the block")
    assert done == ["carried on", "the rest of the block"]  # as before: only its end is new
    assert signal.getsignal(signal.SIGTERM) is raising_sigterm


def test_a_signal_turned_into_another_error_leaves_as_the_signal(raising_sigterm):
    """The exporter's way: its ``except`` clause raised an AttributeError, reported as a failed capture."""
    with pytest.raises(Stop) as e:
        with signals_kept():
            try:
                signal.raise_signal(signal.SIGTERM)
            except BaseException:
                raise RuntimeError("Failed to export the model with torch.export") from None
    assert e.value.args == (signal.SIGTERM,)
    assert signal.getsignal(signal.SIGTERM) is raising_sigterm


def test_a_signal_not_swallowed_passes_through_once(raising_sigterm):
    with pytest.raises(Stop):
        with signals_kept():
            signal.raise_signal(signal.SIGTERM)


def test_keyboard_interrupt_of_the_default_sigint_handler_is_kept():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_kept():
                try:
                    signal.raise_signal(signal.SIGINT)
                except BaseException:
                    pass
    finally:
        signal.signal(signal.SIGINT, previous)


def test_handlers_that_raise_nothing_and_blocks_without_signals_are_untouched():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda n, f: seen.append(n))
    try:
        with signals_kept():
            signal.raise_signal(signal.SIGTERM)
            value = "ran"
        assert value == "ran" and seen == [signal.SIGTERM]
        with pytest.raises(ValueError, match="its own error"), signals_kept():
            raise ValueError("its own error")
    finally:
        signal.signal(signal.SIGTERM, previous)
