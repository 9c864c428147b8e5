"""Money in integer micros: the only place amounts are parsed and formatted.

docs/protocol.md §1 "Amounts": inside, an amount is an integer of micros (1/1,000,000 of
the unit); on the wire and in files it is a decimal string with at most six fraction
digits plus an ISO 4217 currency. Floats never enter: a float, an exponent, a sign, a zero
amount or anything over 10^12 units is `amount_invalid`.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from wallet.core.errors import AmountInvalid, shown

MICROS_PER_UNIT = 1_000_000
MAX_UNITS = 10**12
MAX_MICROS = MAX_UNITS * MICROS_PER_UNIT
DEFAULT_CURRENCY = "USD"

# Plain decimal: no sign, no exponent, no spaces, no leading zeros (except "0.x"),
# one to six fraction digits after an optional point.
_AMOUNT_RE = re.compile(r"(0|[1-9][0-9]{0,12})(?:\.([0-9]{1,6}))?")
_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_WIRE_KEYS = frozenset({"value", "currency"})


class Money(NamedTuple):
    """An exact amount of one currency (a NamedTuple: immutable and cheap to build)."""

    micros: int
    currency: str = DEFAULT_CURRENCY

    def __str__(self) -> str:
        return f"{format_amount(self.micros)} {self.currency}"

    def as_json(self) -> dict[str, str]:
        """Return the wire form `{"value": "1250.00", "currency": "USD"}`."""
        return {"value": format_amount(self.micros), "currency": self.currency}


def parse_amount(text: object) -> int:
    """Parse a positive decimal string into micros, or raise `AmountInvalid`."""
    if not isinstance(text, str):
        raise AmountInvalid("amount must be a decimal string such as \"1250.00\"")
    match = _AMOUNT_RE.fullmatch(text)
    if match is None:
        raise AmountInvalid(
            f"amount {shown(text)} is not a plain decimal with at most six fraction digits"
        )
    whole, fraction = match.group(1), match.group(2) or ""
    micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(6, "0") or "0")
    if micros <= 0:
        raise AmountInvalid("amount must be greater than zero")
    if micros > MAX_MICROS:
        raise AmountInvalid("amount must not exceed 1,000,000,000,000 units")
    return micros


def parse_currency(code: object) -> str:
    """Check an ISO 4217 alphabetic code (three upper-case letters)."""
    if not isinstance(code, str) or _CURRENCY_RE.fullmatch(code) is None:
        raise AmountInvalid(f"currency {shown(code)} is not an ISO 4217 code such as USD")
    return code


def parse_money(value: object, currency: object = DEFAULT_CURRENCY) -> Money:
    """Parse an amount string and a currency code into `Money`."""
    return Money(parse_amount(value), parse_currency(currency))


def parse_money_json(obj: object) -> Money:
    """Parse the wire form `{"value": "…", "currency": "…"}` strictly."""
    if not isinstance(obj, dict) or obj.keys() != _WIRE_KEYS:
        raise AmountInvalid('amount must be an object {"value": "…", "currency": "…"}')
    return parse_money(obj["value"], obj["currency"])


def format_amount(micros: int) -> str:
    """Format micros as a decimal string with two to six fraction digits."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def format_display(micros: int, currency: str = DEFAULT_CURRENCY) -> str:
    """Format for people: thousands separators, e.g. `12,500.00 USD`."""
    text = format_amount(micros)
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}.{fraction} {currency}"
