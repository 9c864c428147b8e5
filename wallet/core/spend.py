"""Spend per model per day, drawn as stacked bars (pure: the caller gives the rows and the day).

The portal shows an engineer what their credit went on over the last days. Geometry is
computed here, in integers and plain floats for SVG coordinates only: amounts stay exact
integer micros in the rows and labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta

from wallet.core.money import format_display

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 48, 628, 20, 170
MAX_SERIES = 5  # models drawn in their own colour; the rest are summed as "other"


@dataclass(frozen=True, slots=True)
class Bar:
    """One model's part of one day's bar."""

    day: date
    model: str
    series: int  # colour index (0 .. MAX_SERIES; MAX_SERIES is "other")
    amount: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class SpendChart:
    """What the template needs to draw the chart and its table."""

    days: tuple[date, ...]
    models: tuple[str, ...]  # legend, in series order
    bars: tuple[Bar, ...]
    totals: tuple[tuple[date, int], ...]  # per day
    total: int
    peak: int
    title: str
    desc: str
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM


def spend_chart(rows: Iterable[tuple[date, str, int]], *, today: date, currency: str,
                days: int = 14) -> SpendChart | None:
    """Stacked bars of spend per day (the last `days` days up to `today`) by model; None
    when nothing was spent in that window."""
    first = today - timedelta(days=days - 1)
    window = [first + timedelta(days=i) for i in range(days)]
    spent: dict[tuple[date, str], int] = {}
    by_model: dict[str, int] = {}
    for day, model, amount in rows:
        if first <= day <= today and amount > 0:
            spent[(day, model)] = spent.get((day, model), 0) + amount
            by_model[model] = by_model.get(model, 0) + amount
    if not spent:
        return None
    ranked = sorted(by_model, key=lambda m: (-by_model[m], m))
    named = ranked[:MAX_SERIES]
    series = {m: i for i, m in enumerate(named)}
    legend = tuple(named) + (("other",) if len(ranked) > len(named) else ())
    per_day = {d: sum(a for (day, _m), a in spent.items() if day == d) for d in window}
    peak = max(per_day.values())
    slot = (RIGHT - LEFT) / days
    bars: list[Bar] = []
    for i, day in enumerate(window):
        stacked = 0
        parts: dict[int, int] = {}
        for (d, model), amount in spent.items():
            if d == day:
                index = series.get(model, MAX_SERIES)
                parts[index] = parts.get(index, 0) + amount
        for index in sorted(parts):
            amount = parts[index]
            height = (BOTTOM - TOP) * amount / peak
            y = BOTTOM - (BOTTOM - TOP) * (stacked + amount) / peak
            model = legend[index] if index < len(named) else "other"
            bars.append(Bar(day, model, index, amount, round(LEFT + i * slot + slot * 0.15, 2),
                            round(y, 2), round(slot * 0.7, 2), round(max(height, 0.5), 2)))
            stacked += amount
    total = sum(per_day.values())
    top_model = ranked[0]
    return SpendChart(
        days=tuple(window), models=legend, bars=tuple(bars),
        totals=tuple((d, per_day[d]) for d in window), total=total, peak=peak,
        title=f"Spend per day, last {days} days",
        desc=(f"{format_display(total, currency)} spent from {first.isoformat()} to"
              f" {today.isoformat()}; most on {top_model}"
              f" ({format_display(by_model[top_model], currency)})."))
