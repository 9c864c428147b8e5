"""Holds: credit reserved before a model call and settled exactly after it (pure).

A gateway places a hold for the worst case of a call, then captures what the call really
used, or voids it; a hold nobody settles expires. The money moves in the ledger
(docs/gateway.md, "Holds in the ledger"):

    hold      wallet:<person> -> held:<person>          the amount held
    capture   held:<person>   -> spent                   the cost, as far as the hold goes
              held:<person>   -> wallet:<person>         what the hold had left over
              wallet:<person> -> spent                   a cost above the hold, as far as
                                                         the wallet goes
              overrun         -> spent                   the rest, absorbed by the employer
    void, expiry  held:<person> -> wallet:<person>       the whole amount

So `held:<person>` always equals the sum of that person's open holds, and a wallet never
goes negative: an estimate that was too low costs the employer, never the engineer's
other credit beyond what they have. Everything here is arithmetic and validation: no
clock, database or Flask (the caller passes times in).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wallet.core.errors import Malformed, shown

OPEN, CAPTURED, VOIDED, EXPIRED = "open", "captured", "voided", "expired"
STATES = (OPEN, CAPTURED, VOIDED, EXPIRED)
DEFAULT_TTL = 600  # seconds
MAX_TTL = 3600
MAX_TOKENS = 10**9  # per count, per call
MAX_REFERENCE = 200
ID_RE = re.compile(r"hld_[A-Za-z0-9_-]{16,40}")


@dataclass(frozen=True, slots=True)
class Tokens:
    """What one call used (or may use): input (cached ones included) and output tokens."""

    input: int
    output: int
    cached_input: int = 0

    @property
    def uncached_input(self) -> int:
        return self.input - self.cached_input


@dataclass(frozen=True, slots=True)
class Settled:
    """How a capture splits: every micro of the cost and of the hold accounted for.

    `from_hold + released == held` and `from_hold + from_wallet + overrun == cost`.
    """

    cost: int
    from_hold: int
    released: int
    from_wallet: int
    overrun: int


def settle(*, held: int, cost: int, available: int) -> Settled:
    """Split a capture of `cost` against a hold of `held`, with `available` in the wallet.

    The hold pays first; a cost above it comes from the wallet as far as it goes, and the
    rest is an overrun the employer absorbs (the wallet never goes negative).
    """
    if held < 0 or cost < 0 or available < 0:
        raise ValueError("amounts are never negative")
    from_hold = min(cost, held)
    extra = cost - from_hold
    from_wallet = min(extra, available)
    return Settled(cost, from_hold, held - from_hold, from_wallet, extra - from_wallet)


def settle_within(*, held: int, cost: int) -> Settled | None:
    """The split of a capture whose cost the hold covers (`cost <= held`), which never
    involves the wallet, so it needs no balance; None for a cost above the hold (then
    `settle` with the wallet's balance)."""
    return settle(held=held, cost=cost, available=0) if cost <= held else None


def whole(value: object) -> int | None:
    """A JSON whole number as an int, else None. `84084.0` is the same JSON number as
    `84084` (JSON Schema's "integer" admits both), so an integral float counts; a
    fraction, a bool, a string or a float past 2^53 (no longer exact) does not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return None


def check_count(name: str, value: object) -> int:
    """A token count: a whole number 0..10^9 (not bool, fraction or string)."""
    number = whole(value)
    if number is None:
        raise Malformed(f"{name} must be a whole number (got {shown(value)})")
    value = number
    if value < 0:
        raise Malformed(f"{name} must not be negative (got {value})")
    if value > MAX_TOKENS:
        raise Malformed(f"{name} must be at most 10^9 per call (got {value})")
    return value


def worst_case(max_input: object, max_output: object) -> Tokens:
    """The most a call may use, as a gateway declares it before the call."""
    tokens = Tokens(check_count("max_input_tokens", max_input),
                    check_count("max_output_tokens", max_output))
    if tokens.input == 0 and tokens.output == 0:
        raise Malformed("max_input_tokens and max_output_tokens are both 0: nothing to hold")
    return tokens


def used(input_tokens: object, output_tokens: object, cached_input: object = 0) -> Tokens:
    """What a call used, as the gateway reports it after the call (zero is allowed: a
    call that produced nothing costs nothing). Cached input tokens are part of the
    input tokens, as providers count them."""
    tokens = Tokens(check_count("input_tokens", input_tokens),
                    check_count("output_tokens", output_tokens),
                    check_count("cached_input_tokens", cached_input))
    if tokens.cached_input > tokens.input:
        raise Malformed(f"cached_input_tokens ({tokens.cached_input}) cannot exceed"
                        f" input_tokens ({tokens.input}): cached tokens are part of the input")
    return tokens


def check_ttl(value: object) -> int:
    """Seconds a hold stays open: 1..3600, 600 when not given."""
    if value is None:
        return DEFAULT_TTL
    seconds = whole(value)
    if seconds is None or not 1 <= seconds <= MAX_TTL:
        raise Malformed(f"ttl_seconds must be a whole number of seconds from 1 to {MAX_TTL}"
                        f" (got {shown(value)})")
    return seconds


def check_reference(value: object) -> str:
    """The gateway's own reference for the call: printable ASCII (an id, not prose), at
    most 200 characters."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_REFERENCE or not (
            value.isascii() and value.isprintable()):
        raise Malformed(f"reference must be printable ASCII of at most {MAX_REFERENCE}"
                        " characters")
    return value


def check_id(value: str) -> str:
    """A hold id as the API shows it (`hld_…`); anything else is unknown, not malformed."""
    return value if ID_RE.fullmatch(value) else ""


def state_at(state: str, expires_at: int, now: int) -> str:
    """What a hold is at `now`: an open hold past its expiry is expired (even before the
    sweep that releases it has run)."""
    return EXPIRED if state == OPEN and now >= expires_at else state
