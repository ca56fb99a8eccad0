"""``pipeline.interrupts``: after a SIGINT or SIGTERM nothing leaves ``signals_raise()`` as if it had not come."""

from __future__ import annotations

import signal

import pytest

from pipeline.interrupts import Terminated, raise_if_interrupted, received, signals_raise


def _library_that_swallows(sig: int) -> str:
    try:
        signal.raise_signal(sig)
    except BaseException:  # what a broad except in a library does with the handler's exception
        return "carried on"
    return "not reached"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_signal_leaves_the_block_as_terminated(sig):
    done = []
    with pytest.raises(Terminated) as e:
        with signals_raise():
            done.append(_library_that_swallows(sig))
            assert received() == sig
            done.append("the job went on")
    assert e.value.signum == sig and done == ["carried on", "the job went on"]
    assert received() is None, "the record ends with the block"


def test_raise_if_interrupted_raises_a_swallowed_signal_where_the_job_must_stop():
    with pytest.raises(Terminated), signals_raise():
        raise_if_interrupted()  # nothing came: nothing raised
        _library_that_swallows(signal.SIGTERM)
        raise_if_interrupted()
        pytest.fail("raise_if_interrupted() let the job go on after a signal")


def test_an_error_caused_by_the_signal_leaves_as_terminated():
    with pytest.raises(Terminated) as e, signals_raise():
        try:
            signal.raise_signal(signal.SIGINT)
        except BaseException:
            raise RuntimeError("Failed to export the model with torch.export") from None
    assert e.value.signum == signal.SIGINT


def test_without_a_signal_errors_and_results_pass_unchanged_and_handlers_come_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(ValueError, match="its own"), signals_raise():
        raise ValueError("its own")
    with signals_raise():
        value = "ran"
    assert value == "ran"
    assert {s: signal.getsignal(s) for s in before} == before


def test_later_signals_are_only_recorded_while_the_first_unwinds():
    with pytest.raises(Terminated) as e, signals_raise():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:  # cleanup on the way out is not interrupted by a second signal
            signal.raise_signal(signal.SIGINT)
    assert e.value.signum == signal.SIGTERM
