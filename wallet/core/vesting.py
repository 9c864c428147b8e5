"""Vesting schedules turned into dated tranches of micros.

A `Schedule` is either immediate (`every` is None: the whole amount is due on `start`) or
periodic (`every` is "month" or "quarter" over `months` months, with an optional cliff).
`tranches(amount, schedule)` applies these rules, in this order:

1. `amount` is a positive int of micros, at most `MAX_MICROS`; otherwise `AmountInvalid`.
2. Immediate: one tranche, seq 1, due on `start`, of the whole amount.
3. Periodic: the period is 1 or 3 months and there are n = months // period tranches.
   Tranche k (1..n) is due on `add_months(start, k * period)`, always counted from `start`
   rather than chained, so a Jan 31 start gives Feb 28/29, Mar 31, Apr 30, May 31, ...
4. Equal split: each tranche gets amount // n and the remainder goes to the LAST tranche,
   so the tranches always sum exactly to the amount.
5. Cliff: cliff_date = add_months(start, cliff_months). Every tranche due strictly before
   cliff_date is merged into one tranche due ON cliff_date; when a tranche already falls on
   cliff_date it absorbs them. cliff_months == 0 means no cliff.
6. Zero tranches are dropped. They only occur when amount < n, and then every tranche but
   the last is zero, so such a grant vests in full on the last date. The remainder rule
   keeps the sum exact.
7. Seq numbers run 1..len after merging; dates strictly increase.

`add_months` lands in a different calendar month for every n, so dates computed from one
`start` never collide, and the cliff date never falls after the last tranche because
cliff_months <= months.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from wallet.core.errors import AmountInvalid, Malformed, shown
from wallet.core.money import MAX_MICROS

Every = Literal["month", "quarter"]

MAX_MONTHS = 600
"""Longest vesting duration accepted (50 years)."""

_PERIOD_MONTHS: dict[str, int] = {"month": 1, "quarter": 3}
_DAYS_IN_MONTH = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a grant vests; build it with `make_schedule`, which validates."""

    start: date
    cliff_months: int = 0
    every: Every | None = None  # None means immediate (one tranche on `start`)
    months: int = 0  # total vesting duration in months (0 when immediate)


@dataclass(frozen=True, slots=True)
class Tranche:
    """One dated part of a grant."""

    seq: int  # 1-based
    due_on: date
    amount: int  # micros, > 0


def make_schedule(
    *,
    start: date,
    cliff_months: int | None = None,
    every: str | None = None,
    months: int | None = None,
) -> Schedule:
    """Validate the parts of a schedule, or raise `Malformed` naming the bad field."""
    # A datetime is a date subclass, but comparing it with a date raises TypeError later.
    if not isinstance(start, date) or isinstance(start, datetime):
        raise Malformed("start must be a calendar date such as 2025-01-31")
    cliff = _count("cliff_months", cliff_months)
    total = _count("months", months)
    if every is None or every == "":
        if total:
            raise Malformed("months must be empty or 0 when every is empty (an immediate grant)")
        if cliff:
            raise Malformed(
                "cliff_months must be empty or 0 when every is empty (an immediate grant)"
            )
        return Schedule(start=start)
    if not isinstance(every, str) or every not in _PERIOD_MONTHS:
        raise Malformed(f'every must be empty, "month" or "quarter" (got {shown(every)})')
    period: Every = "month" if every == "month" else "quarter"
    if total == 0:
        raise Malformed(f"months is required when every is {period}: a duration from 1 to 600")
    if total > MAX_MONTHS:
        raise Malformed(f"months must be at most {MAX_MONTHS} (got {total})")
    if total % _PERIOD_MONTHS[period]:
        raise Malformed(f"months must be a multiple of 3 when every is quarter (got {total})")
    if cliff > total:
        raise Malformed(f"cliff_months ({cliff}) must not exceed months ({total})")
    try:
        add_months(start, total)
    except ValueError:
        raise Malformed("start plus months must end no later than the year 9999") from None
    return Schedule(start=start, cliff_months=cliff, every=period, months=total)


def add_months(d: date, n: int) -> date:
    """Add `n` calendar months (n may be negative), clamping the day to the month's end."""
    year, month0 = divmod(d.year * 12 + d.month - 1 + n, 12)
    month = month0 + 1
    last = _DAYS_IN_MONTH[month0] + (month == 2 and calendar.isleap(year))
    return date(year, month, min(d.day, last))  # ValueError outside years 1..9999


def tranches(amount: int, schedule: Schedule) -> list[Tranche]:
    """Split `amount` micros into dated tranches by the rules in the module docstring."""
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise AmountInvalid("amount must be a positive whole number of micros")
    if amount > MAX_MICROS:
        raise AmountInvalid("amount must not exceed 1,000,000,000,000 units")
    # A Schedule can be built by hand, so check it again rather than trust it.
    checked = make_schedule(
        start=schedule.start,
        cliff_months=schedule.cliff_months,
        every=schedule.every,
        months=schedule.months,
    )
    start = checked.start
    if checked.every is None:
        return [Tranche(seq=1, due_on=start, amount=amount)]

    period = _PERIOD_MONTHS[checked.every]
    count = checked.months // period
    share, remainder = divmod(amount, count)
    cliff_date = add_months(start, checked.cliff_months)
    dated: list[tuple[date, int]] = []
    held = 0  # micros due before the cliff, paid on the cliff date
    for k in range(1, count + 1):
        due_on = add_months(start, k * period)
        part = share + (remainder if k == count else 0)
        if due_on < cliff_date:
            held += part
            continue
        if held:
            if due_on == cliff_date:
                part += held
            else:
                dated.append((cliff_date, held))
            held = 0
        if part:  # rule 6: only zero when amount < count
            dated.append((due_on, part))
    return [Tranche(seq=i, due_on=d, amount=a) for i, (d, a) in enumerate(dated, start=1)]


def vested_as_of(items: Sequence[Tranche], as_of: date) -> int:
    """Return the micros of the tranches due on or before `as_of`."""
    return sum(t.amount for t in items if t.due_on <= as_of)


def next_tranche(items: Sequence[Tranche], as_of: date) -> Tranche | None:
    """Return the earliest tranche due after `as_of`, or None when all have vested."""
    return min((t for t in items if t.due_on > as_of), key=lambda t: t.due_on, default=None)


def _count(name: str, value: object) -> int:
    if value is None:
        return 0
    # bool is an int subclass; True months is a bug in the caller, not one month.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Malformed(f"{name} must be a whole number of months (got {shown(value)})")
    if value < 0:
        raise Malformed(f"{name} must not be negative (got {value})")
    return value
