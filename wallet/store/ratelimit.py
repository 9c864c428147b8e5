"""Rate-limit counts in the database (`rate_limit_window`): one upsert-increment per request."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from wallet.models import RateLimitWindow
from wallet.store._dialect import dialect_of
from wallet.store._process import due

_T = RateLimitWindow.__table__
_PURGE = sa.delete(_T).where(_T.c.resets_at <= sa.bindparam("now"))
_CONFLICT = ("key", "resets_at")

# Rows of ended windows are never read again; deleting them at most once a minute per
# process keeps the table at about two windows of partitions.
PURGE_EVERY_SECONDS = 60.0


def hit(session: Session, *, key: str, resets_at: int, now: int) -> int:
    """Count one request in the window of `key` ending at `resets_at`, on the session's
    transaction (the caller commits); its new count. Ended windows go first, at most once a
    minute per process (timed by `now`, Unix seconds of the caller's clock)."""
    _purge(session, session, now)
    return dialect_of(session).increment(session, _T, _row(key, resets_at),
                                         conflict=_CONFLICT, column="hits")


def hit_apart(session: Session, *, key: str, resets_at: int, now: int) -> int | None:
    """The same, as a transaction of its own beside the session's, where the database
    allows it (PostgreSQL: one autocommit statement); None where it does not (SQLite:
    count with `hit` and commit)."""
    seam = dialect_of(session)
    apart = seam.apart(session)
    if apart is None:
        return None
    with apart as connection:
        _purge(session, connection, now)
        return seam.increment(connection, _T, _row(key, resets_at), conflict=_CONFLICT,
                              column="hits")


def _row(key: str, resets_at: int) -> dict[str, object]:
    return {"key": key, "resets_at": resets_at, "hits": 1}


def _purge(session: Session, on: Session | sa.Connection, now: int) -> None:
    if due(session, "ratelimit.purge", None, every=PURGE_EVERY_SECONDS, at=float(now)):
        (on.connection() if isinstance(on, Session) else on).execute(_PURGE, {"now": now})
