"""What compute costs: model prices, the cost of a usage record, what a balance buys.

Prices are integer micros per 1,000,000 tokens (docs/grants.md, "Spending"). A usage
record costs

    cost = ceil((input_tokens * input_per_mtok + output_tokens * output_per_mtok) / 1,000,000)

micros, in integer arithmetic only: rounded UP to the next micro, so a gateway can never
consume more than it paid for by splitting calls into small pieces. Pure: no clock,
database, file or Flask (the shipped catalogue is read by `wallet.actions.usage`).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from wallet.core.errors import AmountInvalid, Malformed, shown
from wallet.core.holds import Tokens, whole
from wallet.core.money import MAX_MICROS, format_amount, parse_amount

TOKENS_PER_PRICE_UNIT = 1_000_000  # prices are per million tokens
MAX_TOKENS = 10**12  # per record, input and output each
MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")
_PRICE_KEYS = frozenset({"input", "output", "as_of", "source"})
_OPTIONAL_PRICE_KEYS = frozenset({"cached_input"})
ROUNDING = "up to the next micro"  # the one rounding rule, recorded with every capture


@dataclass(frozen=True, slots=True)
class Price:
    """One model's price: micros per million input and output tokens."""

    model: str
    input_per_mtok: int
    output_per_mtok: int
    currency: str
    as_of: date
    source: str
    custom: bool  # set by the organisation (False: the shipped default)
    cached_input_per_mtok: int | None = None  # None: cached input costs as much as input

    def snapshot(self) -> dict[str, str]:
        """The price as stored with a usage record and shown in API answers."""
        shown = {"model": self.model, "input_per_mtok": format_amount(self.input_per_mtok),
                 "output_per_mtok": format_amount(self.output_per_mtok),
                 "currency": self.currency, "as_of": self.as_of.isoformat(),
                 "source": self.source}
        if self.cached_input_per_mtok is not None:
            shown["cached_input_per_mtok"] = format_amount(self.cached_input_per_mtok)
        return shown

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, str]) -> Price:
        """The price a snapshot recorded (a hold prices its capture with it)."""
        cached = snapshot.get("cached_input_per_mtok")
        return cls(model=snapshot["model"], input_per_mtok=parse_amount(snapshot["input_per_mtok"]),
                   output_per_mtok=parse_amount(snapshot["output_per_mtok"]),
                   currency=snapshot["currency"], as_of=date.fromisoformat(snapshot["as_of"]),
                   source=snapshot["source"], custom=False,
                   cached_input_per_mtok=None if cached is None else parse_amount(cached))


def usage_cost(input_tokens: int, output_tokens: int, input_per_mtok: int,
               output_per_mtok: int) -> int:
    """Return the cost in micros, rounded up to the next whole micro (integers only)."""
    numerator = input_tokens * input_per_mtok + output_tokens * output_per_mtok
    return -(-numerator // TOKENS_PER_PRICE_UNIT)


def cost_at(price: Price, input_tokens: int, output_tokens: int) -> int:
    """Return what the tokens cost at `price`, or raise `AmountInvalid` past 10^12 units."""
    cost = usage_cost(input_tokens, output_tokens, price.input_per_mtok, price.output_per_mtok)
    if cost > MAX_MICROS:
        raise AmountInvalid("this usage would cost more than 10^12 units")
    return cost


def call_cost(price: Price, tokens: Tokens) -> int:
    """What one call's tokens cost at `price`: cached input tokens at the cached price
    (the input price when the catalogue has none), rounded up to the next micro once."""
    cached = (price.input_per_mtok if price.cached_input_per_mtok is None
              else price.cached_input_per_mtok)
    numerator = (tokens.uncached_input * price.input_per_mtok + tokens.cached_input * cached
                 + tokens.output * price.output_per_mtok)
    cost = -(-numerator // TOKENS_PER_PRICE_UNIT)
    if cost > MAX_MICROS:
        raise AmountInvalid("this call would cost more than 10^12 units")
    return cost


def check_tokens(input_tokens: object, output_tokens: object) -> tuple[int, int]:
    """Validate token counts: whole numbers (not bool, fraction or string; 5.0 is 5, as in
    JSON), 0..10^12, not both 0."""
    counts = []
    for name, given in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        value = whole(given)
        if value is None:
            raise Malformed(f"{name} must be a whole number (got {shown(given)})")
        if value < 0:
            raise Malformed(f"{name} must not be negative (got {value})")
        if value > MAX_TOKENS:
            raise Malformed(f"{name} must be at most 10^12 per record (got {value})")
        counts.append(value)
    if counts == [0, 0]:
        raise Malformed("input_tokens and output_tokens are both 0: nothing to record")
    return counts[0], counts[1]


def check_model(model: object) -> str:
    """Validate a model name (1-100 of letters, digits and . _ : / @ + -)."""
    if not isinstance(model, str) or MODEL_RE.fullmatch(model) is None:
        raise Malformed(f"model must be a name such as gpt-4o (got {shown(model)})")
    return model


def tokens_for(micros: int, per_mtok: int) -> int:
    """How many whole tokens `micros` buys at `per_mtok` micros per million (rounded down)."""
    if micros <= 0:
        return 0
    return micros * TOKENS_PER_PRICE_UNIT // per_mtok


def format_tokens(count: int) -> str:
    """A token count for people: `12,345`, `950 thousand`, `4.2 million`, `1.3 billion`."""
    for size, word in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million")):
        if count >= size:
            tenths = count * 10 // size
            whole, tenth = divmod(tenths, 10)
            return f"{whole:,}.{tenth} {word}" if tenth else f"{whole:,} {word}"
    if count >= 10_000:
        return f"{count // 1000:,} thousand"
    return f"{count:,}"


def parse_catalogue(doc: Any) -> tuple[Price, ...]:
    """Parse a catalogue document (`{"currency", "models": {model: {...}}}`) strictly."""
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        raise Malformed('a price catalogue is an object with "currency" and "models"')
    currency = doc.get("currency", "USD")
    entries = []
    for model, item in sorted(doc["models"].items()):
        if (not isinstance(item, dict) or not set(item) >= _PRICE_KEYS
                or set(item) - _PRICE_KEYS - _OPTIONAL_PRICE_KEYS):
            raise Malformed(f"price of {model}: needs exactly input, output, as_of, source"
                            " (and optionally cached_input)")
        cached = item.get("cached_input")
        entries.append(Price(
            model=check_model(model), input_per_mtok=parse_amount(item["input"]),
            output_per_mtok=parse_amount(item["output"]), currency=currency,
            as_of=_day(model, item["as_of"]), source=str(item["source"]), custom=False,
            cached_input_per_mtok=None if cached is None else parse_amount(cached)))
    return tuple(entries)


def _day(model: str, value: object) -> date:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value)
    raise Malformed(f"price of {model}: as_of {shown(value)} is not a date written YYYY-MM-DD")
