"""Property test of spec parsing: any string is either refused with a ValueError or round-trips canonically."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acl.spec import ECHO_LIMIT, Spec, parse_spec

SYMBOLS = ["G", "Lg", "Lt", "Tf", "Ts", "M", "P"]
CHARS = "GLgtTfsMP_{}()xX×.eE-+ \t0123456789"
"""Every character of the grammar, so that random strings come close to specs."""
LAYERS = [(1, 1, 1), (1, 6, 1), (3, 4, 1), (2, 3, 2), (4, 5, 2), (6, 16, 1)]


def well_formed(rng: random.Random, ci: int, co: int, groups: int) -> str:
    """A spec that fits the layer: counts summing to its total, or the same shares written as ratios."""
    total = ci // groups * co
    n = rng.randint(1, 5)
    cuts = sorted(rng.randint(0, total) for _ in range(n - 1))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, total])]
    syms = [rng.choice(SYMBOLS) for _ in range(n)]
    sep = rng.choice(["", "_"])
    if rng.random() < 0.5:
        body = " ".join(f"{s}{sep}{c}" for s, c in zip(syms, counts))
    else:
        body = "".join(f"{s}{sep}{float(Fraction(c, total))!r}" for s, c in zip(syms, counts))
    return rng.choice(["", f"({ci}x{co})", f"( {ci} × {co} ) "]) + body


_rng = random.Random(0)
WELL = [(well_formed(_rng, *lay), *lay) for lay in LAYERS for _ in range(40)]
"""Drawn once: Hypothesis then spends its time on the parser, not on building specs."""


def _mutate(args) -> tuple[str, int, int, int]:
    (text, ci, co, groups), at, insert, cut = args
    return text[:at] + insert + text[at + cut :], ci, co, groups


CASES = st.one_of(
    st.tuples(st.text(alphabet=CHARS, max_size=24), st.sampled_from(LAYERS)).map(lambda t: (t[0], *t[1])),
    st.tuples(st.text(max_size=12), st.sampled_from(LAYERS)).map(lambda t: (t[0], *t[1])),
    st.sampled_from(WELL),
    # near misses of the grammar: a well-formed spec with a few characters inserted or cut
    st.tuples(st.sampled_from(WELL), st.integers(0, 60), st.text(alphabet=CHARS, max_size=2), st.integers(0, 2)).map(
        _mutate
    ),
)


def refused_with_a_message_or_round_trips(case) -> None:
    text, ci, co, groups = case
    try:
        spec = parse_spec(text, ci, co, groups=groups)
    except ValueError as e:
        message = str(e)
        assert message.startswith("bad arrangement spec ") and "expected" in message, message
        # the spec is quoted clipped, so a message stays short whatever the input
        assert len(message) < ECHO_LIMIT + 400, message
        return
    assert isinstance(spec, Spec)
    assert sum(n for _, n in spec.segments) == spec.total == ci // groups * co
    assert all(n > 0 and sym in SYMBOLS for sym, n in spec.segments)
    canonical = str(spec)
    again = parse_spec(canonical, ci, co, groups=groups)
    assert again == spec and str(again) == canonical


# The same cases every run (derandomize): the parser's lines are reached the same way each time.
@settings(
    max_examples=1_000, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(CASES)
def test_every_string_is_refused_with_a_message_or_round_trips(case):
    refused_with_a_message_or_round_trips(case)


@pytest.mark.slow  # ten times the cases above, drawn afresh each run
@settings(max_examples=10_000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(CASES)
def test_ten_thousand_fresh_strings_are_refused_with_a_message_or_round_trip(case):
    refused_with_a_message_or_round_trips(case)


def test_well_formed_specs_are_accepted():
    # The property above would pass vacuously if every string were refused.
    for text, ci, co, groups in WELL:
        spec = parse_spec(text, ci, co, groups=groups)
        assert spec.total == ci // groups * co, text


def test_huge_numbers_are_refused_fast():
    import time

    for text in ("G1e-999999999P1.0", "P" + "9" * 100_000, "(" + "9" * 5000 + "x1)P1", "G0." + "0" * 5000 + "1P1.0"):
        start = time.perf_counter()
        try:
            parse_spec(text, 3, 4)
        except ValueError as e:
            assert len(str(e)) < ECHO_LIMIT + 400
        else:
            raise AssertionError(f"accepted {text[:20]!r}")
        assert time.perf_counter() - start < 0.5, text[:20]
