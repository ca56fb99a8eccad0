"""Kernel arrangement specs (eqs. 9-10) and the compact factor (eq. 25).

Grammar (whitespace between tokens is ignored)::

    spec    := [ "(" Ci ("x" | "X" | "×") Co ")" ] token+
    token   := symbol [ "_" ] ( number | "{" number "}" )
    symbol  := G | Lg | Lt | Tf | Ts | M | P | D | H | S | O | U

*Count form*: every number is a whole count (``(3x64)G30Lg15Lt15Tf36P96``); the
counts must sum to ``Ci/groups * Co``. *Ratio form*: every number is written with a
decimal point or exponent (``G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5``); the ratios
must sum to 1 within ``RATIO_SUM_TOLERANCE`` (the paper prints 4-digit ratios that
sum to 0.9999). ``P1`` is a count, ``P1.0`` a ratio; mixing the two is an error.

Ratios become counts by the largest-remainder rule: ratios are normalised to sum
to 1, each family gets ``floor(r * total)`` kernels, and the kernels still missing
go one each to the largest fractional parts, ties to the earlier token. The counts
are whole and sum exactly to the total; exp3's ratio on 3x64 gives exp3's counts.

The prefix states the kernel bank: ``Ci`` is the input channels *each kernel
sees* (``in_channels / groups``), so the product of the two numbers is the number
of kernels: a depthwise 16->16 convolution (``groups=16``) is ``(1x16)``, its 16
kernels. The layer's own ``(in_channels x out_channels)`` is also accepted as a
prefix (specs written before the prefix showed the bank, and how a layer is
usually described).

``D``, ``H``, ``S``, ``O`` and ``U`` are ExplainFix's fixed families (DCT2, GHaar,
Psine, Ones, random Unchanged; ``acl.fixed_kernels``): they take a count or ratio
like any other token and nothing else. A token giving one a parameter, such as
GHaar's frequency (``H{f=2}``, ``H(2)``), is refused by name: a fixed family has no
learnable parameter (``P`` is the family whose kernels are learned).

Order is kept (Table 2: order matters) and a family may appear more than once.
Tokens whose count is 0 (explicit, or from rounding a ratio on a small layer)
contribute no kernels and are dropped from the canonical form.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

from acl.families import FAMILIES, family, pair

__all__ = ["RATIO_SUM_TOLERANCE", "Spec", "compact_factor", "parse_spec"]

RATIO_SUM_TOLERANCE = 1e-3

# At most 9 digits per channel count: int() of a longer digit string is slow, and no layer is that wide.
_PREFIX = re.compile(r"\s*\(\s*(\d{1,9})\s*[xX×]\s*(\d{1,9})\s*\)")
MAX_NUMBER_CHARS = 40
"""Longer counts or ratios are refused: no layer needs them, and ``Fraction``/``int`` of a huge string is slow."""
MAX_EXPONENT = 30
"""Ratios like ``1e-999999999`` are refused before ``Fraction`` expands them to a billion-digit integer."""
ECHO_LIMIT = 120
"""Characters of a spec quoted back in an error message."""
_EXPONENT = re.compile(r"[eE]\s*[-+]?\s*(\d+)")
_SYMBOLS = sorted(FAMILIES, key=len, reverse=True)  # two-letter symbols first
_TOKEN = re.compile(
    r"\s*(?P<sym>"
    + "|".join(_SYMBOLS)
    + r")_?(?:\{(?P<braced>[^}]*)\}|(?P<num>[-+]?[0-9]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?))"
)


@dataclass(frozen=True)
class Spec:
    """A parsed arrangement: ordered ``(symbol, count)`` segments over a kernel grid.

    The k-th kernel of the spec is ``weight.reshape(-1, h, w)[k]`` of the layer,
    i.e. the kernels fill the ``[Co, Ci/groups]`` grid output-channel major.

    Attributes:
        segments: ``(symbol, count)`` pairs in order, counts > 0.
        in_channels: the layer's ``Ci`` (before dividing by groups).
        out_channels: the layer's ``Co``.
        groups: the layer's ``groups``.

    Examples:
        >>> s = parse_spec("G0.15625Lg0.078125Lt0.078125Tf0.1875P0.5", 3, 64)
        >>> str(s)
        '(3x64)G30Lg15Lt15Tf36P96'
        >>> s.total, s.counts()["P"]
        (192, 96)
    """

    segments: tuple[tuple[str, int], ...]
    in_channels: int
    out_channels: int
    groups: int = 1

    @property
    def total(self) -> int:
        """Number of kernels: ``Ci/groups * Co``."""
        return self.in_channels // self.groups * self.out_channels

    def counts(self) -> dict[str, int]:
        """Kernels per family, summed over repeated tokens."""
        out: dict[str, int] = {}
        for sym, n in self.segments:
            out[sym] = out.get(sym, 0) + n
        return out

    def offsets(self) -> Iterator[tuple[str, int, int]]:
        """``(symbol, start, stop)`` of every segment in the flattened kernel grid."""
        start = 0
        for sym, n in self.segments:
            yield sym, start, start + n
            start += n

    def kinds(self) -> list[str]:
        """Family symbol of every kernel, in mosaic order."""
        return [sym for sym, n in self.segments for _ in range(n)]

    def __str__(self) -> str:
        # The prefix is the kernel bank (Ci/groups x Co): its product is the kernel count, also for grouped convs.
        body = "".join(f"{sym}{n}" for sym, n in self.segments)
        return f"({self.in_channels // self.groups}x{self.out_channels}){body}"


def _clip(text: str) -> str:
    """``repr(text)``, cut to ``ECHO_LIMIT`` characters with the full length stated (a 100 kB spec is not echoed)."""
    r = repr(text)
    return r if len(r) <= ECHO_LIMIT else f"{r[: ECHO_LIMIT - 1]}... ({len(text)} characters)"


def _fail(text: str, what: str, total: int | None = None) -> ValueError:
    tail = f" (expected kernels in total: {total})" if total is not None else ""
    return ValueError(f"bad arrangement spec {_clip(text)}: {what}{tail}")


def _tokens(text: str, body: str, offset: int, total: int) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        m = _TOKEN.match(body, pos)
        if m is None or m.end() == pos:
            bad = body[pos:].strip().split()[0][:12]
            raise _fail(
                text,
                f"unknown or malformed token at {bad!r} (position {offset + pos}), "
                f"expected a family symbol ({', '.join(FAMILIES)}) followed by a count or ratio",
                total,
            )
        num = m.group("braced") if m.group("braced") is not None else m.group("num")
        token = m.group(0).strip()
        _refuse_fixed_parameter(text, m.group("sym"), num, body[m.end() :], total)
        if num is None or num.strip() == "" or num.strip() in {"+", "-", "."}:
            raise _fail(text, f"token {token[:12]!r} has no count or ratio, expected a number after it", total)
        num = num.strip()
        if len(num) > MAX_NUMBER_CHARS:
            raise _fail(
                text,
                f"token {m.group('sym')}{num[:12]}... has a {len(num)}-character number, expected at most "
                f"{MAX_NUMBER_CHARS}",
                total,
            )
        tokens.append((m.group("sym"), num))
        pos = m.end()
    if not tokens:
        raise _fail(
            text, f"no kernel tokens, expected family symbols ({', '.join(FAMILIES)}) with counts or ratios", total
        )
    return tokens


def _refuse_fixed_parameter(text: str, sym: str, num: str | None, rest: str, total: int) -> None:
    """A fixed family's token carrying anything but a count or ratio (``H{f=2}``, ``D(8)``): refused by name."""
    fam = FAMILIES[sym]
    if not fam.fixed:
        return
    braced = num is not None and not re.fullmatch(r"\s*[-+]?[0-9]*\.?[0-9]*(?:[eE][-+]?[0-9]+)?\s*", num)
    if braced or (not num and rest[:1] in ("(", "[", "{")):
        given = f"{{{num}}}" if braced else rest[: rest.find({"(": ")", "[": "]", "{": "}"}[rest[0]]) + 1 or 12]
        raise _fail(
            text,
            f"token {sym}{given} gives fixed family {sym} ({fam.name}) a parameter, which would make it learnable; "
            f"expected only a count or ratio such as {sym}8 or {sym}0.25 (P for learned kernels)",
            total,
        )


def _largest_remainder(ratios: Sequence[Fraction], total: int) -> list[int]:
    s = sum(ratios)
    shares = [r / s * total for r in ratios]
    counts = [math.floor(x) for x in shares]
    missing = total - sum(counts)
    # Stable sort: equal remainders go to the earlier token.
    order = sorted(range(len(shares)), key=lambda i: -(shares[i] - counts[i]))
    for i in order[:missing]:
        counts[i] += 1
    return counts


def parse_spec(text: str | Spec, in_channels: int, out_channels: int, *, groups: int = 1) -> Spec:
    """Parse an arrangement spec for a layer with the given channels.

    Args:
        text: count or ratio form, with or without the ``(CixCo)`` prefix, or a
            ``Spec`` (checked against the channels and returned).
        in_channels: the layer's ``Ci``.
        out_channels: the layer's ``Co``.
        groups: the layer's ``groups``; the spec covers ``Ci/groups * Co`` kernels and
            a prefix states the kernel bank ``(Ci/groups x Co)`` or the layer's ``(Ci x Co)``.

    Returns:
        The parsed ``Spec``; ``str()`` of it is the canonical count form.

    Raises:
        ValueError: unknown symbol, malformed or negative count, mixed count and
            ratio tokens, counts not summing to the kernel total, ratios not summing
            to 1, or a prefix that disagrees with the layer. The message names the
            offending token and the expected total.

    Examples:
        >>> str(parse_spec("(3x64)G30Lg15Lt15Tf36P96", 3, 64))
        '(3x64)G30Lg15Lt15Tf36P96'
        >>> str(parse_spec("G0.1562Lg0.0781Lt0.0781Tf0.1875P0.5", 6, 16))
        '(6x16)G15Lg8Lt7Tf18P48'
        >>> parse_spec("G30Lg15Lt15Tf36P95", 3, 64)
        Traceback (most recent call last):
        ...
        ValueError: bad arrangement spec 'G30Lg15Lt15Tf36P95': counts sum to 191 (expected kernels in total: 192)
    """
    total = _kernel_total(in_channels, out_channels, groups)
    if isinstance(text, Spec):
        return _checked_against_layer(text, in_channels, out_channels, groups)
    if not isinstance(text, str):
        raise TypeError(f"spec must be a string or Spec, got {type(text).__name__}")

    body, offset = _split_prefix(text, in_channels, out_channels, groups, total)
    tokens = _tokens(text, body, offset, total)
    if _is_ratio_form(text, tokens, total):
        counts = _largest_remainder(_ratios(text, tokens, total), total)
    else:
        counts = _counts(text, tokens, total)
    segments = tuple((sym, n) for (sym, _), n in zip(tokens, counts) if n > 0)
    return Spec(segments, in_channels, out_channels, groups)


def _kernel_total(in_channels: int, out_channels: int, groups: int) -> int:
    """``Ci/groups * Co``, the number of kernels the spec must cover; refuses impossible layers."""
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if in_channels % groups:
        raise ValueError(f"in_channels ({in_channels}) must be divisible by groups ({groups})")
    return in_channels // groups * out_channels


def _checked_against_layer(spec: Spec, in_channels: int, out_channels: int, groups: int) -> Spec:
    if (spec.in_channels, spec.out_channels, spec.groups) != (in_channels, out_channels, groups):
        raise ValueError(
            f"spec {spec} was parsed for ({spec.in_channels}x{spec.out_channels}, groups={spec.groups}), "
            f"not for this layer ({in_channels}x{out_channels}, groups={groups})"
        )
    return spec


def _split_prefix(text: str, in_channels: int, out_channels: int, groups: int, total: int) -> tuple[str, int]:
    """The spec without its ``(CixCo)`` prefix, and where that rest starts in ``text`` (for error positions).

    The prefix is the kernel bank ``(Ci/groups x Co)``, or the layer's ``(Ci x Co)`` as shown before.
    """
    m = _PREFIX.match(text)
    if m:
        ci, co = int(m.group(1)), int(m.group(2))
        bank = (in_channels // groups, out_channels)
        if (ci, co) not in (bank, (in_channels, out_channels)):
            layer = f" or ({in_channels}x{out_channels})" if groups > 1 else ""
            raise _fail(
                text,
                f"prefix {m.group(0).strip()!r} disagrees with the layer: expected ({bank[0]}x{bank[1]}){layer}",
                total,
            )
        return text[m.end() :], m.end()
    if text.lstrip().startswith("("):
        raise _fail(text, "malformed prefix, expected '(CixCo)' such as '(3x64)'", total)
    return text, 0


def _is_ratio_form(text: str, tokens: list[tuple[str, str]], total: int) -> bool:
    """True for ratio form, False for count form; mixing the two is refused."""
    is_ratio = [any(c in num for c in ".eE") for _, num in tokens]
    if any(is_ratio) and not all(is_ratio):
        sym, num = tokens[is_ratio.index(not is_ratio[0])]
        raise _fail(
            text,
            f"token {sym}{num!r} mixes count and ratio forms, expected every number as a count "
            "(P96) or every number as a ratio (P0.5)",
            total,
        )
    return all(is_ratio)


def _ratios(text: str, tokens: list[tuple[str, str]], total: int) -> list[Fraction]:
    ratios = [_ratio(text, sym, num, total) for sym, num in tokens]
    s = sum(ratios)
    if abs(float(s) - 1) > RATIO_SUM_TOLERANCE:
        raise _fail(text, f"ratios sum to {float(s):g}, expected 1 (within {RATIO_SUM_TOLERANCE:g})", total)
    return ratios


def _ratio(text: str, sym: str, num: str, total: int) -> Fraction:
    exp = _EXPONENT.search(num)
    if exp and int(exp.group(1)) > MAX_EXPONENT:
        raise _fail(text, f"token {sym}{num} has an exponent beyond {MAX_EXPONENT}, expected a ratio 0..1", total)
    try:
        r = Fraction(num)
    except (ValueError, ZeroDivisionError):
        raise _fail(text, f"token {sym}{num} has a malformed ratio, expected a number such as 0.25", total) from None
    if r < 0:
        raise _fail(text, f"token {sym}{num} has a negative ratio, expected a ratio 0..1", total)
    return r


def _counts(text: str, tokens: list[tuple[str, str]], total: int) -> list[int]:
    counts = []
    for sym, num in tokens:
        if not re.fullmatch(r"[+]?\d+", num):
            raise _fail(text, f"token {sym}{num} has a negative or malformed count, expected a whole number", total)
        counts.append(int(num))
    if sum(counts) != total:
        hint = "; write ratios with a decimal point, e.g. P1.0" if sum(counts) == 1 else ""
        raise _fail(text, f"counts sum to {sum(counts)}{hint}", total)
    return counts


def compact_factor(
    spec: str | Spec,
    in_channels: int,
    out_channels: int,
    kernel_size: int | Sequence[int],
    *,
    groups: int = 1,
) -> float:
    r"""Share of a conv layer's learnable kernel parameters an ACL saves (eq. 25).

    :math:`1 - \frac{\sum_i p_i k_i + n h w}{C_o C_i h w}`, with ``p_i`` AKPs per
    kernel of family ``i``, ``k_i`` its count and ``n`` the Plain count; bias excluded.
    With groups, ``C_i`` is ``in_channels / groups``. Mean and the fixed families
    (``D``, ``H``, ``S``, ``O``, ``U``) have ``p_i = 0``: their kernels are stored or
    computed, never learned, so a spec of fixed families only has factor 1. The
    deployed convolution is full-size either way: the factor counts what is learned,
    not what is stored or computed at inference.

    Examples:
        >>> round(compact_factor("(3x64)G30Lg15Lt15Tf36P96", 3, 64, 7), 4)
        0.4726
        >>> compact_factor("P192", 3, 64, 7), compact_factor("M192", 3, 64, 7), compact_factor("D96P96", 3, 64, 7)
        (0.0, 1.0, 0.5)
    """
    parsed = parse_spec(spec, in_channels, out_channels, groups=groups)
    h, w = pair(kernel_size)
    learnable = sum(family(sym).num_akps((h, w)) * n for sym, n in parsed.segments)
    return 1 - learnable / (parsed.total * h * w)
