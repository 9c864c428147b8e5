"""The shell's one clock: every action, store call and cache asks it for the time.

The pure core never reads a clock (time is an argument there). Everything else calls
`clock.now()`, `clock.today()`, `clock.unix()` or `clock.monotonic()` through this
module — never `datetime.now()` or `time.time()` directly — so that a test fakes time
everywhere with one call: `clock.install(app, FakeClock(...))`. The clock belongs to the
app (`app.extensions`), so each test app starts on the real clock; outside an app
context (a bare script) the system clock answers.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from flask import Flask, current_app, has_app_context

EXTENSION = "wallet.clock"


class Clock(Protocol):
    """A source of wall time (aware UTC) and of monotonic seconds (for durations)."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that moves only when told to; wall and monotonic time move together."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime.now(UTC)
        if start.tzinfo is None:
            raise ValueError("a FakeClock starts at an aware datetime")
        self._lock = threading.Lock()
        self._now = start.astimezone(UTC)
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float = 0.0, **delta: float) -> datetime:
        """Move time forward (`advance(30)`, `advance(days=2)`); return the new time."""
        step = timedelta(seconds=seconds, **delta)
        if step < timedelta(0):
            raise ValueError("time only moves forward")
        with self._lock:
            self._now += step
            self._monotonic += step.total_seconds()
            return self._now

    def set(self, moment: datetime) -> None:
        """Jump to a later moment (a date in a vesting test, say)."""
        self.advance((moment.astimezone(UTC) - self.now()).total_seconds())


_SYSTEM = SystemClock()


def install(app: Flask, source: Clock) -> Clock:
    """Make `source` the clock of `app` (tests); return it."""
    app.extensions[EXTENSION] = source
    return source


def current() -> Clock:
    """The clock of the current app (the system clock outside an app context)."""
    if has_app_context():
        found = current_app.extensions.get(EXTENSION)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return _SYSTEM


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return current().now()


def today() -> date:
    """Today's date in UTC."""
    return current().now().date()


def unix() -> int:
    """The current time in whole Unix seconds (what tokens carry)."""
    return int(current().now().timestamp())


def monotonic() -> float:
    """Seconds from an arbitrary start, for durations and cache lifetimes."""
    return current().monotonic()
