"""What the holds tests share: money as the API writes it, and a call's cost worked out
here from docs/gateway.md rather than by `wallet.core.usage`."""

from __future__ import annotations

MICROS = 1_000_000
MODEL = "claude-sonnet-4"  # the shipped catalogue: 3.00 in, 0.30 cached in, 15.00 out /Mtok
PRICE_IN, PRICE_CACHED, PRICE_OUT = 3 * MICROS, 300_000, 15 * MICROS


def money(micros: int) -> str:
    """Micros as the API writes an amount: `1.234567`."""
    return f"{micros // MICROS}.{micros % MICROS:06d}"


def micros(text: str) -> int:
    """An amount the API wrote, in micros."""
    whole, _, fraction = text.partition(".")
    return int(whole) * MICROS + int(fraction.ljust(6, "0"))


def cost(input_tokens: int, cached: int, output: int) -> int:
    """What a call on MODEL costs: cached input at the cached price, rounded up to the
    next micro once (docs/gateway.md)."""
    numerator = (input_tokens - cached) * PRICE_IN + cached * PRICE_CACHED + output * PRICE_OUT
    return -(-numerator // MICROS)
