"""Template filters: money, ISO dates with relative hints."""

from __future__ import annotations

from datetime import date, datetime

from flask import Flask

from wallet import clock
from wallet.core.money import format_display


def money(micros: int | None, currency: str = "USD") -> str:
    """`12,500.00 USD`."""
    return format_display(int(micros or 0), currency)


def relative(day: date | datetime | None) -> str:
    """A hint such as "in 12 days", "today" or "3 days ago"."""
    if day is None:
        return ""
    if isinstance(day, datetime):
        day = day.date()
    delta = (day - clock.today()).days
    if delta == 0:
        return "today"
    if delta == 1:
        return "tomorrow"
    if delta == -1:
        return "yesterday"
    return f"in {delta} days" if delta > 0 else f"{-delta} days ago"


def iso(value: date | datetime | None) -> str:
    """ISO 8601, to the minute for timestamps."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    return value.isoformat()


def init_app(app: Flask) -> None:
    """Register the filters and template globals."""
    app.add_template_global(lambda endpoint: endpoint in app.view_functions, "has_endpoint")
    app.add_template_filter(money)
    app.add_template_filter(relative)
    app.add_template_filter(iso)
