"""Vesting schedules: hand-computed tables, validation and properties."""

from __future__ import annotations

from datetime import date, datetime
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.core.errors import AmountInvalid, Malformed
from wallet.core.money import MAX_MICROS
from wallet.core.vesting import (
    Schedule,
    Tranche,
    add_months,
    make_schedule,
    next_tranche,
    tranches,
    vested_as_of,
)

UNIT = 1_000_000  # micros


def table(items: list[Tranche]) -> list[tuple[int, date, int]]:
    return [(t.seq, t.due_on, t.amount) for t in items]


# -- add_months ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        (date(2025, 1, 15), 0, date(2025, 1, 15)),
        (date(2025, 1, 15), 1, date(2025, 2, 15)),
        (date(2025, 12, 15), 1, date(2026, 1, 15)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),  # leap year
        (date(2027, 1, 31), 1, date(2027, 2, 28)),  # non-leap year
        (date(2028, 1, 31), 3, date(2028, 4, 30)),
        (date(2028, 2, 29), 12, date(2029, 2, 28)),
        (date(2028, 2, 29), 48, date(2032, 2, 29)),
        (date(2100, 1, 31), 1, date(2100, 2, 28)),  # century, not a leap year
        (date(2000, 1, 31), 1, date(2000, 2, 29)),  # divisible by 400, leap year
        (date(2028, 3, 31), -1, date(2028, 2, 29)),
        (date(2025, 1, 15), -13, date(2023, 12, 15)),
        (date(2025, 8, 31), 600, date(2075, 8, 31)),
    ],
)
def test_add_months_table(start: date, n: int, expected: date) -> None:
    assert add_months(start, n) == expected


def test_add_months_outside_calendar_raises_value_error() -> None:
    with pytest.raises(ValueError, match="out of range"):
        add_months(date(9999, 12, 1), 1)


# -- hand-computed tables --------------------------------------------------------------


def test_monthly_48_months_with_12_month_cliff() -> None:
    schedule = make_schedule(start=date(2025, 1, 15), cliff_months=12, every="month", months=48)
    assert schedule == Schedule(start=date(2025, 1, 15), cliff_months=12, every="month", months=48)
    # 48,000.00 over 48 months is 1,000.00 a month; the first 12 land on the cliff.
    assert table(tranches(48_000 * UNIT, schedule)) == [
        (1, date(2026, 1, 15), 12_000_000_000),
        (2, date(2026, 2, 15), 1_000_000_000),
        (3, date(2026, 3, 15), 1_000_000_000),
        (4, date(2026, 4, 15), 1_000_000_000),
        (5, date(2026, 5, 15), 1_000_000_000),
        (6, date(2026, 6, 15), 1_000_000_000),
        (7, date(2026, 7, 15), 1_000_000_000),
        (8, date(2026, 8, 15), 1_000_000_000),
        (9, date(2026, 9, 15), 1_000_000_000),
        (10, date(2026, 10, 15), 1_000_000_000),
        (11, date(2026, 11, 15), 1_000_000_000),
        (12, date(2026, 12, 15), 1_000_000_000),
        (13, date(2027, 1, 15), 1_000_000_000),
        (14, date(2027, 2, 15), 1_000_000_000),
        (15, date(2027, 3, 15), 1_000_000_000),
        (16, date(2027, 4, 15), 1_000_000_000),
        (17, date(2027, 5, 15), 1_000_000_000),
        (18, date(2027, 6, 15), 1_000_000_000),
        (19, date(2027, 7, 15), 1_000_000_000),
        (20, date(2027, 8, 15), 1_000_000_000),
        (21, date(2027, 9, 15), 1_000_000_000),
        (22, date(2027, 10, 15), 1_000_000_000),
        (23, date(2027, 11, 15), 1_000_000_000),
        (24, date(2027, 12, 15), 1_000_000_000),
        (25, date(2028, 1, 15), 1_000_000_000),
        (26, date(2028, 2, 15), 1_000_000_000),
        (27, date(2028, 3, 15), 1_000_000_000),
        (28, date(2028, 4, 15), 1_000_000_000),
        (29, date(2028, 5, 15), 1_000_000_000),
        (30, date(2028, 6, 15), 1_000_000_000),
        (31, date(2028, 7, 15), 1_000_000_000),
        (32, date(2028, 8, 15), 1_000_000_000),
        (33, date(2028, 9, 15), 1_000_000_000),
        (34, date(2028, 10, 15), 1_000_000_000),
        (35, date(2028, 11, 15), 1_000_000_000),
        (36, date(2028, 12, 15), 1_000_000_000),
        (37, date(2029, 1, 15), 1_000_000_000),
    ]


def test_uneven_split_puts_remainder_micros_in_last_tranche() -> None:
    # 100.00 / 3 = 33.333333 remainder 0.000001
    schedule = make_schedule(start=date(2025, 3, 10), every="month", months=3)
    assert table(tranches(100 * UNIT, schedule)) == [
        (1, date(2025, 4, 10), 33_333_333),
        (2, date(2025, 5, 10), 33_333_333),
        (3, date(2025, 6, 10), 33_333_334),
    ]
    # 1.000001 / 7 = 0.142857 remainder 0.000002
    schedule = make_schedule(start=date(2025, 1, 1), every="month", months=7)
    assert table(tranches(1_000_001, schedule)) == [
        (1, date(2025, 2, 1), 142_857),
        (2, date(2025, 3, 1), 142_857),
        (3, date(2025, 4, 1), 142_857),
        (4, date(2025, 5, 1), 142_857),
        (5, date(2025, 6, 1), 142_857),
        (6, date(2025, 7, 1), 142_857),
        (7, date(2025, 8, 1), 142_859),
    ]


def test_uneven_split_36_months() -> None:
    # 1,000.00 / 36: 36 x 27_777_777 = 999_999_972, so the last gets 27_777_777 + 28.
    items = tranches(1_000 * UNIT, make_schedule(start=date(2025, 1, 1), every="month", months=36))
    assert len(items) == 36
    assert [t.amount for t in items[:35]] == [27_777_777] * 35
    assert items[35] == Tranche(seq=36, due_on=date(2028, 1, 1), amount=27_777_805)


def test_jan_31_start_across_a_leap_year() -> None:
    schedule = make_schedule(start=date(2028, 1, 31), every="month", months=12)
    assert table(tranches(12 * UNIT, schedule)) == [
        (1, date(2028, 2, 29), 1_000_000),
        (2, date(2028, 3, 31), 1_000_000),
        (3, date(2028, 4, 30), 1_000_000),
        (4, date(2028, 5, 31), 1_000_000),
        (5, date(2028, 6, 30), 1_000_000),
        (6, date(2028, 7, 31), 1_000_000),
        (7, date(2028, 8, 31), 1_000_000),
        (8, date(2028, 9, 30), 1_000_000),
        (9, date(2028, 10, 31), 1_000_000),
        (10, date(2028, 11, 30), 1_000_000),
        (11, date(2028, 12, 31), 1_000_000),
        (12, date(2029, 1, 31), 1_000_000),
    ]


def test_jan_31_start_in_a_non_leap_year() -> None:
    schedule = make_schedule(start=date(2027, 1, 31), every="month", months=14)
    assert table(tranches(14 * UNIT, schedule)) == [
        (1, date(2027, 2, 28), 1_000_000),
        (2, date(2027, 3, 31), 1_000_000),
        (3, date(2027, 4, 30), 1_000_000),
        (4, date(2027, 5, 31), 1_000_000),
        (5, date(2027, 6, 30), 1_000_000),
        (6, date(2027, 7, 31), 1_000_000),
        (7, date(2027, 8, 31), 1_000_000),
        (8, date(2027, 9, 30), 1_000_000),
        (9, date(2027, 10, 31), 1_000_000),
        (10, date(2027, 11, 30), 1_000_000),
        (11, date(2027, 12, 31), 1_000_000),
        (12, date(2028, 1, 31), 1_000_000),
        (13, date(2028, 2, 29), 1_000_000),
        (14, date(2028, 3, 31), 1_000_000),
    ]


def test_cliff_on_a_clamped_month_end() -> None:
    # The cliff date is clamped like the tranche dates, so they coincide.
    one = make_schedule(start=date(2028, 1, 31), cliff_months=1, every="month", months=3)
    assert table(tranches(3 * UNIT, one)) == [
        (1, date(2028, 2, 29), 1_000_000),
        (2, date(2028, 3, 31), 1_000_000),
        (3, date(2028, 4, 30), 1_000_000),
    ]
    two = make_schedule(start=date(2028, 1, 31), cliff_months=2, every="month", months=3)
    assert table(tranches(3 * UNIT, two)) == [
        (1, date(2028, 3, 31), 2_000_000),
        (2, date(2028, 4, 30), 1_000_000),
    ]


def test_quarterly_with_cliff_between_tranche_dates() -> None:
    # Quarters fall on Apr 1, Jul 1, Oct 1, Jan 1; the 7-month cliff is Aug 1.
    schedule = make_schedule(start=date(2025, 1, 1), cliff_months=7, every="quarter", months=12)
    assert table(tranches(4_000 * UNIT, schedule)) == [
        (1, date(2025, 8, 1), 2_000_000_000),
        (2, date(2025, 10, 1), 1_000_000_000),
        (3, date(2026, 1, 1), 1_000_000_000),
    ]


@pytest.mark.parametrize(
    ("cliff", "expected"),
    [
        (
            0,
            [
                (1, date(2025, 4, 1), 1_000_000_000),
                (2, date(2025, 7, 1), 1_000_000_000),
                (3, date(2025, 10, 1), 1_000_000_000),
                (4, date(2026, 1, 1), 1_000_000_000),
            ],
        ),
        (
            1,  # cliff before the first quarter: nothing to merge
            [
                (1, date(2025, 4, 1), 1_000_000_000),
                (2, date(2025, 7, 1), 1_000_000_000),
                (3, date(2025, 10, 1), 1_000_000_000),
                (4, date(2026, 1, 1), 1_000_000_000),
            ],
        ),
        (
            4,
            [
                (1, date(2025, 5, 1), 1_000_000_000),
                (2, date(2025, 7, 1), 1_000_000_000),
                (3, date(2025, 10, 1), 1_000_000_000),
                (4, date(2026, 1, 1), 1_000_000_000),
            ],
        ),
        (
            6,  # cliff on a tranche date: that tranche absorbs the earlier one
            [
                (1, date(2025, 7, 1), 2_000_000_000),
                (2, date(2025, 10, 1), 1_000_000_000),
                (3, date(2026, 1, 1), 1_000_000_000),
            ],
        ),
        (12, [(1, date(2026, 1, 1), 4_000_000_000)]),
    ],
)
def test_quarterly_cliffs(cliff: int, expected: list[tuple[int, date, int]]) -> None:
    schedule = make_schedule(start=date(2025, 1, 1), cliff_months=cliff, every="quarter", months=12)
    assert table(tranches(4_000 * UNIT, schedule)) == expected


def test_immediate() -> None:
    schedule = make_schedule(start=date(2025, 5, 5))
    assert schedule == Schedule(start=date(2025, 5, 5), cliff_months=0, every=None, months=0)
    assert make_schedule(start=date(2025, 5, 5), cliff_months=0, every="", months=0) == schedule
    assert tranches(7_500_000, schedule) == [
        Tranche(seq=1, due_on=date(2025, 5, 5), amount=7_500_000)
    ]


def test_start_in_the_past_vested_and_next() -> None:
    # 2,400.00 over 24 months from 2023-03-15 with a 6-month cliff: 600.00 on 2023-09-15,
    # then 100.00 on the 15th of each month up to 2025-03-15 (19 tranches).
    schedule = make_schedule(start=date(2023, 3, 15), cliff_months=6, every="month", months=24)
    items = tranches(2_400 * UNIT, schedule)
    assert len(items) == 19
    assert items[0] == Tranche(seq=1, due_on=date(2023, 9, 15), amount=600_000_000)
    assert items[-1] == Tranche(seq=19, due_on=date(2025, 3, 15), amount=100_000_000)

    assert vested_as_of(items, date(2023, 9, 14)) == 0
    assert next_tranche(items, date(2023, 9, 14)) == items[0]
    assert vested_as_of(items, date(2023, 9, 15)) == 600_000_000

    # 2024-06-01: the cliff (600.00) plus Oct 2023 .. May 2024 (8 x 100.00).
    assert vested_as_of(items, date(2024, 6, 1)) == 1_400_000_000
    assert next_tranche(items, date(2024, 6, 1)) == Tranche(
        seq=10, due_on=date(2024, 6, 15), amount=100_000_000
    )
    # On a due date the tranche has vested and the next one is a month later.
    assert vested_as_of(items, date(2024, 6, 15)) == 1_500_000_000
    assert next_tranche(items, date(2024, 6, 15)) == Tranche(
        seq=11, due_on=date(2024, 7, 15), amount=100_000_000
    )
    assert vested_as_of(items, date(2025, 3, 15)) == 2_400_000_000
    assert next_tranche(items, date(2025, 3, 15)) is None


def test_vested_and_next_on_no_tranches() -> None:
    assert vested_as_of([], date(2025, 1, 1)) == 0
    assert next_tranche([], date(2025, 1, 1)) is None


def test_amount_smaller_than_number_of_tranches() -> None:
    monthly = make_schedule(start=date(2025, 1, 1), every="month", months=12)
    # 5 micros over 12 months: 0 each and the remainder 5 last; zero tranches are dropped.
    assert tranches(5, monthly) == [Tranche(seq=1, due_on=date(2026, 1, 1), amount=5)]
    # 13 micros: 1 each, remainder 1 in the last.
    assert table(tranches(13, monthly)) == [
        (1, date(2025, 2, 1), 1),
        (2, date(2025, 3, 1), 1),
        (3, date(2025, 4, 1), 1),
        (4, date(2025, 5, 1), 1),
        (5, date(2025, 6, 1), 1),
        (6, date(2025, 7, 1), 1),
        (7, date(2025, 8, 1), 1),
        (8, date(2025, 9, 1), 1),
        (9, date(2025, 10, 1), 1),
        (10, date(2025, 11, 1), 1),
        (11, date(2025, 12, 1), 1),
        (12, date(2026, 1, 1), 2),
    ]
    quarterly = make_schedule(start=date(2025, 1, 1), cliff_months=6, every="quarter", months=12)
    assert tranches(3, quarterly) == [Tranche(seq=1, due_on=date(2026, 1, 1), amount=3)]
    assert tranches(1, make_schedule(start=date(2025, 1, 1), every="month", months=600)) == [
        Tranche(seq=1, due_on=date(2075, 1, 1), amount=1)
    ]


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"every": "weekly", "months": 12}, "every"),
        ({"every": "Month", "months": 12}, "every"),
        ({"every": 3, "months": 12}, "every"),
        ({"every": "month"}, "months"),
        ({"every": "month", "months": 0}, "months"),
        ({"every": "month", "months": 601}, "months"),
        ({"every": "month", "months": -1}, "months"),
        ({"every": "month", "months": "12"}, "months"),
        ({"every": "month", "months": 12.0}, "months"),
        ({"every": "month", "months": True}, "months"),
        ({"every": "quarter", "months": 10}, "months"),
        ({"every": "month", "months": 12, "cliff_months": -1}, "cliff_months"),
        ({"every": "month", "months": 12, "cliff_months": 13}, "cliff_months"),
        ({"every": "month", "months": 12, "cliff_months": "3"}, "cliff_months"),
        ({"every": None, "months": 12}, "months"),
        ({"every": "", "months": 12}, "months"),
        ({"every": None, "cliff_months": 3}, "cliff_months"),
        ({"every": None, "months": -1}, "months"),
        ({"start": datetime(2025, 1, 1, 12, 0)}, "start"),
        ({"start": "2025-01-01"}, "start"),
        ({"start": date(9990, 1, 1), "every": "month", "months": 600}, "months"),
    ],
)
def test_make_schedule_rejects_bad_fields(kwargs: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"start": date(2025, 1, 1), **kwargs}
    with pytest.raises(Malformed) as caught:
        make_schedule(**arguments)
    assert caught.value.code == "malformed"
    assert field in caught.value.message


def test_make_schedule_messages() -> None:
    with pytest.raises(Malformed, match=r"^months must be a multiple of 3 when every is quarter"):
        make_schedule(start=date(2025, 1, 1), every="quarter", months=10)
    with pytest.raises(Malformed, match=r"^cliff_months \(13\) must not exceed months \(12\)$"):
        make_schedule(start=date(2025, 1, 1), cliff_months=13, every="month", months=12)
    with pytest.raises(Malformed, match=r"^every must be empty, \"month\" or \"quarter\""):
        make_schedule(start=date(2025, 1, 1), every="year", months=12)


def test_make_schedule_limits_are_inclusive() -> None:
    assert make_schedule(start=date(2025, 1, 1), every="month", months=600).months == 600
    assert make_schedule(start=date(2025, 1, 1), every="month", months=1).months == 1
    full_cliff = make_schedule(start=date(2025, 1, 1), cliff_months=12, every="month", months=12)
    assert full_cliff.cliff_months == 12


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "100", MAX_MICROS + 1])
def test_tranches_rejects_bad_amount(amount: Any) -> None:
    schedule = make_schedule(start=date(2025, 1, 1), every="month", months=12)
    with pytest.raises(AmountInvalid) as caught:
        tranches(amount, schedule)
    assert caught.value.code == "amount_invalid"
    assert "amount" in caught.value.message


def test_tranches_revalidates_a_hand_built_schedule() -> None:
    with pytest.raises(Malformed, match="months"):
        tranches(UNIT, Schedule(start=date(2025, 1, 1), every="month", months=0))
    with pytest.raises(Malformed, match="cliff_months"):
        tranches(UNIT, Schedule(start=date(2025, 1, 1), cliff_months=5))


# -- properties ------------------------------------------------------------------------


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    start = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)))
    every = draw(st.sampled_from([None, "month", "quarter"]))
    if every is None:
        return make_schedule(start=start)
    period = 1 if every == "month" else 3
    months = draw(st.integers(1, 600 // period)) * period
    cliff = draw(st.integers(0, months))
    return make_schedule(start=start, cliff_months=cliff, every=every, months=months)


amounts = st.one_of(st.integers(1, 2_000), st.integers(1, MAX_MICROS))


@settings(database=None, max_examples=300)
@given(schedule=schedules(), amount=amounts)
def test_tranches_properties(schedule: Schedule, amount: int) -> None:
    items = tranches(amount, schedule)
    assert sum(t.amount for t in items) == amount
    assert all(t.amount > 0 for t in items)
    assert [t.seq for t in items] == list(range(1, len(items) + 1))
    dates = [t.due_on for t in items]
    assert all(a < b for a, b in pairwise(dates))
    assert all(d >= schedule.start for d in dates)
    assert dates[0] >= add_months(schedule.start, schedule.cliff_months)
    # The whole amount has vested by the end of the schedule, never later.
    assert dates[-1] == add_months(schedule.start, schedule.months)
    if schedule.every is not None:
        period = 1 if schedule.every == "month" else 3
        assert len(items) <= schedule.months // period


@settings(database=None)
@given(
    schedule=schedules(),
    amount=amounts,
    as_of=st.lists(st.dates(min_value=date(1899, 1, 1), max_value=date(2300, 1, 1)), min_size=2),
)
def test_vested_as_of_is_monotonic(schedule: Schedule, amount: int, as_of: list[date]) -> None:
    items = tranches(amount, schedule)
    vested = [vested_as_of(items, d) for d in sorted(as_of)]
    assert vested == sorted(vested)
    assert all(0 <= v <= amount for v in vested)
    assert vested_as_of(items, date.max) == amount
    assert vested_as_of(items, date(1899, 12, 31)) == 0
    for d in as_of:
        upcoming = next_tranche(items, d)
        if upcoming is None:
            assert vested_as_of(items, d) == amount
        else:
            assert upcoming.due_on > d
            assert vested_as_of(items, upcoming.due_on) == vested_as_of(items, d) + upcoming.amount


@settings(database=None)
@given(
    start=st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31)),
    a=st.integers(-600, 600),
    b=st.integers(-600, 600),
)
def test_add_months_properties(start: date, a: int, b: int) -> None:
    moved = add_months(start, a)
    assert (moved.year * 12 + moved.month) - (start.year * 12 + start.month) == a
    assert moved.day <= start.day
    if start.day <= 28:
        assert moved.day == start.day
        assert add_months(moved, b) == add_months(start, a + b)
