"""The pure part of holds: how a capture splits, validation, the spend chart."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wallet.core import holds
from wallet.core.errors import Malformed
from wallet.core.holds import Tokens, settle
from wallet.core.spend import MAX_SERIES, spend_chart
from wallet.core.usage import Price, call_cost

MICROS = st.integers(min_value=0, max_value=10**15)


@given(held=MICROS, cost=MICROS, available=MICROS)
def test_a_capture_accounts_for_every_micro_and_never_overdraws(held: int, cost: int,
                                                                available: int) -> None:
    s = settle(held=held, cost=cost, available=available)
    assert s.from_hold + s.released == held
    assert s.from_hold + s.from_wallet + s.overrun == cost
    assert 0 <= s.from_wallet <= available
    assert min(s.from_hold, s.released, s.overrun) >= 0
    assert s.overrun == 0 or s.from_wallet == available  # the wallet pays first


@pytest.mark.parametrize(("held", "cost", "available", "split"), [
    (100, 40, 0, (40, 60, 0, 0)),
    (100, 100, 5, (100, 0, 0, 0)),
    (100, 130, 20, (100, 0, 20, 10)),
    (100, 130, 50, (100, 0, 30, 0)),
    (100, 0, 0, (0, 100, 0, 0)),
])
def test_known_splits(held: int, cost: int, available: int,
                      split: tuple[int, int, int, int]) -> None:
    s = settle(held=held, cost=cost, available=available)
    assert (s.from_hold, s.released, s.from_wallet, s.overrun) == split


def test_cached_input_is_priced_apart_and_rounded_up_once() -> None:
    price = Price("m", 3_000_000, 15_000_000, "USD", date(2025, 6, 1), "x", False,
                  cached_input_per_mtok=300_000)
    # 10,000 x 3.00 + 40,000 x 0.30 + 1,001 x 15.00 per million = 57,015 micros exactly
    assert call_cost(price, Tokens(50_000, 1_001, 40_000)) == 57_015
    assert call_cost(price, Tokens(1, 0, 0)) == 3  # 3 micros
    assert call_cost(price, Tokens(1, 0, 1)) == 1  # 0.3 micros rounds up to 1
    uncached = Price("m", 3_000_000, 15_000_000, "USD", date(2025, 6, 1), "x", False)
    assert call_cost(uncached, Tokens(10, 0, 10)) == call_cost(uncached, Tokens(10, 0, 0))


@pytest.mark.parametrize("value", [-1, 10**9 + 1, 1.5, "5", True, None])
def test_token_counts_are_whole_numbers_within_bounds(value: object) -> None:
    with pytest.raises(Malformed):
        holds.used(value, 0)


def test_cached_tokens_are_part_of_the_input() -> None:
    with pytest.raises(Malformed, match="cannot exceed"):
        holds.used(10, 0, 11)
    assert holds.used(0, 0).input == 0  # a call that produced nothing costs nothing


def test_ttl_and_expiry() -> None:
    assert holds.check_ttl(None) == holds.DEFAULT_TTL
    for bad in (0, 3601, 1.5, "60", False):
        with pytest.raises(Malformed):
            holds.check_ttl(bad)
    assert holds.state_at("open", 100, 99) == "open"
    assert holds.state_at("open", 100, 100) == "expired"
    assert holds.state_at("captured", 100, 500) == "captured"


def test_the_spend_chart_stacks_models_per_day_and_folds_the_rest_into_other() -> None:
    today = date(2026, 12, 3)
    rows = [(today, f"model-{i}", (i + 1) * 1_000_000) for i in range(MAX_SERIES + 2)]
    rows += [(date(2026, 12, 1), "model-6", 500_000), (date(2026, 11, 1), "old", 9)]
    chart = spend_chart(rows, today=today, currency="USD", days=14)
    assert chart is not None
    assert chart.models[0] == "model-6" and chart.models[-1] == "other"
    assert len(chart.models) == MAX_SERIES + 1
    assert chart.total == sum(a for d, _m, a in rows if d >= date(2026, 11, 20))
    assert dict(chart.totals)[today] == chart.peak == 28_000_000
    assert sum(b.amount for b in chart.bars) == chart.total  # every micro drawn
    today_bars = [b for b in chart.bars if b.day == today]
    assert min(b.y for b in today_bars) == chart.top  # the peak reaches the top
    assert spend_chart([(date(2026, 1, 1), "m", 5)], today=today, currency="USD") is None


@pytest.mark.parametrize(("given", "expected"), [
    (0, 0), (84084, 84084), (84084.0, 84084), (-3.0, -3), (2.0**53, 2**53),
    (1.5, None), (2.0**53 + 2, None), (float("inf"), None), (float("nan"), None),
    (True, None), (False, None), ("5", None), (None, None), ([5], None),
])
def test_a_whole_number_is_one_json_number_whatever_its_spelling(given: object,
                                                                 expected: int | None) -> None:
    assert holds.whole(given) == expected


def test_integral_floats_count_and_fractions_do_not() -> None:
    assert holds.worst_case(1000.0, 50) == holds.Tokens(1000, 50)
    assert holds.check_ttl(60.0) == 60
    with pytest.raises(Malformed, match="whole number"):
        holds.used(10.5, 0)
    with pytest.raises(Malformed, match="ttl_seconds"):
        holds.check_ttl(0.5)
