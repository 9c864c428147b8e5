"""Money: the only parser of amounts (docs/protocol.md §1 "Amounts")."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.core.errors import AmountInvalid
from wallet.core.money import (
    MAX_MICROS,
    Money,
    format_amount,
    format_display,
    parse_amount,
    parse_currency,
    parse_money_json,
)


@pytest.mark.parametrize(("text", "micros"), [
    ("1", 1_000_000),
    ("1250.50", 1_250_500_000),
    ("0.000001", 1),
    ("0.5", 500_000),
    ("1000000000000", MAX_MICROS),
    ("999999999999.999999", MAX_MICROS - 1),
])
def test_parses_plain_decimals_exactly(text: str, micros: int) -> None:
    assert parse_amount(text) == micros


@pytest.mark.parametrize("bad", [
    "-1", "-0.01", "0", "0.0", "0.000000", "1e3", "1E3", "1.5e2", "1.1234567", "01",
    "1,000.00", " 1", "1 ", "+1", ".5", "5.", "NaN", "Infinity", "inf", "0x10", "",
    "1000000000000.000001", "10000000000000", "١٢٣", "1_000",
])
def test_refuses_everything_else(bad: str) -> None:
    with pytest.raises(AmountInvalid) as exc:
        parse_amount(bad)
    assert exc.value.code == "amount_invalid"


@pytest.mark.parametrize("bad", [1, 1.5, None, True, [], {"value": "1"}, b"1"])
def test_refuses_non_strings(bad: object) -> None:
    with pytest.raises(AmountInvalid):
        parse_amount(bad)


def test_formats_two_to_six_fraction_digits() -> None:
    assert format_amount(1_250_500_000) == "1250.50"
    assert format_amount(1) == "0.000001"
    assert format_amount(12_500_000_000) == "12500.00"
    assert format_amount(-1_500_000) == "-1.50"
    assert format_display(12_500_000_000) == "12,500.00 USD"
    assert format_display(-1_234_567_890_000, "EUR") == "-1,234,567.89 EUR"


@given(st.integers(min_value=1, max_value=MAX_MICROS))
def test_format_then_parse_round_trips(micros: int) -> None:
    assert parse_amount(format_amount(micros)) == micros


def test_currency_and_wire_form() -> None:
    assert parse_currency("EUR") == "EUR"
    for bad in ("usd", "US", "USDX", 840, None):
        with pytest.raises(AmountInvalid):
            parse_currency(bad)
    assert parse_money_json({"value": "1250.00", "currency": "USD"}) == Money(1_250_000_000)
    assert Money(1_250_000_000).as_json() == {"value": "1250.00", "currency": "USD"}
    for bad in ({"value": 1250, "currency": "USD"}, {"value": "1"}, "1250.00",
                {"value": "1", "currency": "USD", "extra": 1}, {"value": 1e3, "currency": "USD"}):
        with pytest.raises(AmountInvalid):
            parse_money_json(bad)
