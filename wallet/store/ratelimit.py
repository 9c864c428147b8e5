"""Rate-limit counts in the database (`rate_limit_window`): one upsert-increment per request."""

from __future__ import annotations

import sqlalchemy as sa
from sqlmodel import Session

from wallet.models import RateLimitWindow
from wallet.store._dialect import dialect_of, run
from wallet.store._process import due

_T = RateLimitWindow.__table__
_PURGE = sa.delete(_T).where(_T.c.resets_at <= sa.bindparam("now"))

# Rows of ended windows are never read again; deleting them at most once a minute per
# process keeps the table at about two windows of partitions.
PURGE_EVERY_SECONDS = 60.0


def hit(session: Session, *, key: str, resets_at: int) -> int:
    """Count one request in the window of `key` ending at `resets_at`; its new count."""
    return dialect_of(session).increment(session, _T, {"key": key, "resets_at": resets_at,
                                                       "hits": 1},
                                         conflict=("key", "resets_at"), column="hits")


def purge_ended(session: Session, *, now: int) -> bool:
    """Delete the windows that ended by `now` (Unix seconds), at most once a minute per
    process (timed by `now`, the caller's clock); True when it ran."""
    if not due(session, "ratelimit.purge", None, every=PURGE_EVERY_SECONDS, at=float(now)):
        return False
    run(session, _PURGE, {"now": now})
    return True
