"""What a process keeps about its app's database, between transactions.

Facts that never change once committed (an account's id, an organisation's id) and the
time of the last housekeeping run live in the app's memos (`wallet.memo`), so each app
(and each test) starts empty and no test reaches into a cache. They are kept only for a
session on the current app's own engine: a bare script, or a session on another
database, keeps nothing (and so reads again).
"""

from __future__ import annotations

import threading

from flask import current_app, has_app_context
from sqlmodel import Session

from wallet import clock
from wallet.db import EXTENSION as ENGINE
from wallet.memo import Memo, memo


def kept(session: Session, name: str, *, maxsize: int = 4096) -> Memo[object] | None:
    """The app's memo `name` for facts about its database; None for any other session."""
    if not has_app_context() or current_app.extensions.get(ENGINE) is not session.get_bind():
        return None
    return memo(name, maxsize=maxsize)


class _Every:
    """Says yes at most once per `seconds` per key; a clock that went back says yes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[object, float] = {}

    def due(self, key: object, at: float, seconds: float) -> bool:
        with self._lock:
            last = self._last.get(key)
            if last is not None and 0 <= at - last < seconds:
                return False
            self._last[key] = at
            return True


def due(session: Session, what: str, key: object, *, every: float,
        at: float | None = None) -> bool:
    """Whether housekeeping `what` (for `key`) is due, at most once per `every` seconds.

    Timed by `at` (seconds; the caller's clock) or else the app's monotonic clock. A
    session outside its app keeps no time, so the work is always due there.
    """
    clocks = kept(session, "store.housekeeping")
    if clocks is None:
        return True
    # Two first callers may each make one (last wins): at most one extra run, once.
    every_ = clocks.get_or_set(what, _Every)
    assert isinstance(every_, _Every)
    return every_.due(key, clock.monotonic() if at is None else at, every)
