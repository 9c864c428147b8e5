"""Browser sessions kept in the database (`web_session`), keyed by the cookie's SHA-256."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet.models import WebSession
from wallet.store._dialect import run
from wallet.store._process import due

_T = WebSession.__table__
_LOAD = sa.select(_T).where(_T.c.key_hash == sa.bindparam("key_hash"),
                            _T.c.expires_at > sa.bindparam("now"))
_TOUCH = (sa.update(_T).where(_T.c.key_hash == sa.bindparam("w_key_hash"))
          .values(last_seen_at=sa.bindparam("last_seen_at"),
                  expires_at=sa.bindparam("expires_at")))
_SAVE = (sa.update(_T).where(_T.c.key_hash == sa.bindparam("w_key_hash"))
         .values(data=sa.bindparam("data")))
_DELETE = sa.delete(_T).where(_T.c.key_hash == sa.bindparam("key_hash"))


def load(session: Session, *, key_hash: str, now: datetime) -> dict[str, Any] | None:
    """A live session's row, or None when it is unknown or has expired."""
    row = run(session, _LOAD, {"key_hash": key_hash, "now": now}).first()
    return None if row is None else dict(row._mapping)


def insert(session: Session, **values: Any) -> None:
    """Store a new session."""
    run(session, sa.insert(_T), values)


def touch(session: Session, *, key_hash: str, last_seen_at: datetime,
          expires_at: datetime) -> None:
    """Record activity: a new last-seen time and idle deadline."""
    run(session, _TOUCH, {"w_key_hash": key_hash, "last_seen_at": last_seen_at,
                          "expires_at": expires_at})


def save_data(session: Session, *, key_hash: str, data: str) -> None:
    """Replace a session's data."""
    run(session, _SAVE, {"w_key_hash": key_hash, "data": data})


def delete(session: Session, *, key_hash: str) -> None:
    """Delete one session."""
    run(session, _DELETE, {"key_hash": key_hash})


def delete_of_person(session: Session, *, person_id: int, keep: str | None = None) -> int:
    """Delete every session of a person (but `keep`, a key hash); how many went."""
    query = sa.delete(_T).where(_T.c.person_id == person_id)
    if keep is not None:
        query = query.where(_T.c.key_hash != keep)
    return int(run(session, query).rowcount)


def of_person(session: Session, *, person_id: int, now: datetime) -> list[dict[str, Any]]:
    """A person's live sessions, most recently used first."""
    rows = run(session, sa.select(_T).where(_T.c.person_id == person_id, _T.c.expires_at > now)
               .order_by(_T.c.last_seen_at.desc(), _T.c.id.desc()))
    return [dict(r._mapping) for r in rows]


# Expired rows can never be used again; they are deleted when a session is created, at
# most this often per process (as spent nonces are), not on every request.
PURGE_EVERY_SECONDS = 60.0


def purge_expired(session: Session, *, now: datetime) -> bool:
    """Delete expired sessions, at most once a minute per process; True when it ran.

    Timed by the caller's clock (`now`), so that a test's clock drives it too; a clock
    set back only delays the next purge.
    """
    if not due(session, "sessions.purge", None, every=PURGE_EVERY_SECONDS,
               at=now.timestamp()):
        return False
    run(session, sa.delete(_T).where(_T.c.expires_at <= now))
    return True
