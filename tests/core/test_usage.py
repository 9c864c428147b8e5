"""What compute costs (wallet/core/usage.py): known answers worked by hand, no fixtures."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.core.errors import AmountInvalid, Malformed
from wallet.core.money import MAX_MICROS
from wallet.core.usage import (
    MAX_TOKENS,
    Price,
    check_model,
    check_tokens,
    cost_at,
    format_tokens,
    parse_catalogue,
    tokens_for,
    usage_cost,
)

UNIT = 1_000_000  # micros


def price(input_per_mtok: int, output_per_mtok: int) -> Price:
    return Price("m", input_per_mtok, output_per_mtok, "USD", date(2025, 6, 1), "test", False)


# -- the cost rule -------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens_in", "tokens_out", "price_in", "price_out", "micros"), [
    # 1 token at 3.00 per million = 3 micros exactly.
    (1, 0, 3_000_000, 15_000_000, 3),
    # 1 token at 0.15 per million = 0.15 micros: rounded up to 1.
    (1, 0, 150_000, 600_000, 1),
    # 7 x 0.15 = 1.05 micros: rounded up to 2.
    (7, 0, 150_000, 600_000, 2),
    # 1M input at 2.50 + 1M output at 10.00 = 12.50 units.
    (1_000_000, 1_000_000, 2_500_000, 10_000_000, 12_500_000),
    # 333,333 x 3.00 / 1M = 999,999 micros exactly: no rounding.
    (333_333, 0, 3_000_000, 15_000_000, 999_999),
    # 1 output token at 0.000001 per million = 10^-12 units: still one whole micro.
    (0, 1, 1, 1, 1),
    # 1,234 in at 0.80 + 567 out at 4.00 = 987.2 + 2268 = 3,255.2 micros: 3,256.
    (1_234, 567, 800_000, 4_000_000, 3_256),
    # 10^12 tokens each at 15.00 / 75.00: 15,000,000 + 75,000,000 units, exact.
    (10**12, 10**12, 15_000_000, 75_000_000, 90_000_000 * UNIT),
    # The rounding is of the SUM: 1 in at 0.5 micros + 1 out at 0.5 micros = 1 micro, not 2.
    (1, 1, 500_000, 500_000, 1),
    # 1,000,001 tokens at 1.00 per million = 1,000,001 micros: exact, one past a whole unit.
    (1_000_001, 0, UNIT, UNIT, 1_000_001),
])
def test_usage_cost_rounds_up_to_the_micro(tokens_in: int, tokens_out: int, price_in: int,
                                           price_out: int, micros: int) -> None:
    assert usage_cost(tokens_in, tokens_out, price_in, price_out) == micros
    assert cost_at(price(price_in, price_out), tokens_in, tokens_out) == micros


@given(st.integers(0, MAX_TOKENS), st.integers(0, MAX_TOKENS),
       st.integers(1, 10**9), st.integers(1, 10**9))
def test_the_cost_is_the_smallest_whole_micro_not_below_the_exact_price(
        tokens_in: int, tokens_out: int, price_in: int, price_out: int) -> None:
    exact = tokens_in * price_in + tokens_out * price_out  # in 10^-6 micros
    cost = usage_cost(tokens_in, tokens_out, price_in, price_out)
    assert cost * UNIT >= exact > (cost - 1) * UNIT or cost == exact == 0


def test_a_cost_over_the_money_limit_is_refused() -> None:
    # 10^12 input tokens at 1,000,001.00 per million: 1,000,001,000,000 units.
    expensive = price(1_000_001 * UNIT, UNIT)
    assert usage_cost(MAX_TOKENS, 0, expensive.input_per_mtok, 0) == MAX_MICROS + 10**12
    with pytest.raises(AmountInvalid, match="more than 10"):
        cost_at(expensive, MAX_TOKENS, 0)
    assert cost_at(price(UNIT * 10**6, UNIT), MAX_TOKENS, 0) == MAX_MICROS  # exactly the limit


# -- checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("tokens_in", "tokens_out"), [
    (True, 1), (1, False), (1.5, 1), (1, 2.5), (2.0**60, 1), ("10", 1), (None, 1), (-1, 5), (5, -1),
    (0, 0), (10**12 + 1, 0), (0, 10**12 + 1),
])
def test_token_counts_are_checked(tokens_in: object, tokens_out: object) -> None:
    with pytest.raises(Malformed):
        check_tokens(tokens_in, tokens_out)


def test_an_integral_float_is_the_same_json_number() -> None:
    """JSON has one number type: 1000.0 is 1000 (as JSON Schema's "integer" says)."""
    assert check_tokens(1000.0, 2) == (1000, 2)


def test_token_counts_at_the_bounds_pass() -> None:
    assert check_tokens(0, 1) == (0, 1)
    assert check_tokens(MAX_TOKENS, MAX_TOKENS) == (MAX_TOKENS, MAX_TOKENS)


@pytest.mark.parametrize("model", ["gpt-4o", "claude-sonnet-4", "org/model:v1@2025+x",
                                   "a" * 100])
def test_model_names_that_pass(model: str) -> None:
    assert check_model(model) == model


@pytest.mark.parametrize("model", ["", "-gpt", "gpt 4o", "a" * 101, "gpt\x00", None, 4])
def test_model_names_that_are_refused_quote_what_was_sent(model: object) -> None:
    with pytest.raises(Malformed, match="model must be a name such as gpt-4o"):
        check_model(model)


# -- what a balance buys, in words -----------------------------------------------------------


def test_tokens_for_rounds_down_to_whole_tokens() -> None:
    assert tokens_for(12_500 * UNIT, 3 * UNIT) == 4_166_666_666  # 4,166,666,666.67
    assert tokens_for(1, 3 * UNIT) == 0  # a micro buys a third of a token: none
    assert tokens_for(3, 3 * UNIT) == 1
    assert tokens_for(0, 3 * UNIT) == 0
    assert tokens_for(-5, 3 * UNIT) == 0


@pytest.mark.parametrize(("count", "words"), [
    (0, "0"), (9_999, "9,999"), (10_000, "10 thousand"), (12_345, "12 thousand"),
    (999_999, "999 thousand"), (1_000_000, "1 million"), (2_000_000, "2 million"),
    (4_250_000, "4.2 million"), (4_166_666_666, "4.1 billion"),
    (1_300_000_000_000, "1.3 trillion"), (1_234_000_000_000_000, "1,234 trillion"),
])
def test_format_tokens(count: int, words: str) -> None:
    assert format_tokens(count) == words


# -- the catalogue ---------------------------------------------------------------------------


def _doc(**item: object) -> dict[str, object]:
    entry = {"input": "3.00", "output": "15.00", "as_of": "2025-06-01", "source": "vendor"}
    return {"currency": "USD", "models": {"claude-sonnet-4": {**entry, **item}}}


def test_a_catalogue_parses_into_exact_prices_sorted_by_model() -> None:
    doc = _doc()
    doc["models"]["a-model"] = {"input": "0.000001", "output": "1", "as_of": "2024-02-29",  # type: ignore[index]
                                "source": "x"}
    assert parse_catalogue(doc) == (
        Price("a-model", 1, UNIT, "USD", date(2024, 2, 29), "x", False),
        Price("claude-sonnet-4", 3 * UNIT, 15 * UNIT, "USD", date(2025, 6, 1), "vendor", False),
    )
    assert parse_catalogue(doc)[1].snapshot() == {
        "model": "claude-sonnet-4", "input_per_mtok": "3.00", "output_per_mtok": "15.00",
        "currency": "USD", "as_of": "2025-06-01", "source": "vendor"}


@pytest.mark.parametrize("doc", [
    None, [], {"currency": "USD"}, {"models": []},
    {"models": {"m": "3.00"}},
    _doc(extra="x"),
    {"models": {"m": {"input": "3.00", "output": "15.00", "as_of": "2025-06-01"}}},
    {"models": {"bad name": {"input": "1", "output": "1", "as_of": "2025-06-01",
                             "source": ""}}},
])
def test_a_malformed_catalogue_is_refused(doc: object) -> None:
    with pytest.raises(Malformed):
        parse_catalogue(doc)


@pytest.mark.parametrize("amount", ["3", "-1", "1e3", 3, "0"])
def test_a_catalogue_price_goes_through_the_one_amount_parser(amount: object) -> None:
    if amount == "3":
        assert parse_catalogue(_doc(input=amount))[0].input_per_mtok == 3 * UNIT
        return
    with pytest.raises(AmountInvalid):
        parse_catalogue(_doc(input=amount))


@pytest.mark.parametrize("as_of", ["2025-02-30", "June 2025", "", 20250601, None])
def test_a_catalogue_date_that_is_not_a_date_is_malformed_not_a_crash(as_of: object) -> None:
    with pytest.raises(Malformed, match="as_of"):
        parse_catalogue(_doc(as_of=as_of))
