"""Server-side browser sessions: the store behind the cookie, and ending sessions.

The cookie holds a random key only; the store keeps the key's SHA-256 with the data,
the person, an idle deadline and an absolute end. `SessionStore` is the seam: the
database store below is the default, and a Redis store would implement the same five
calls. Each call is its own short unit of work (this module commits), separate from
whatever the request does.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from flask import current_app
from flask.json.tag import TaggedJSONSerializer

from wallet import clock, db
from wallet.actions._base import commit
from wallet.store import sessions as rows

TOUCH_EVERY_SECONDS = 60  # last-seen (and the idle deadline) move at most once a minute

_serializer = TaggedJSONSerializer()  # Flask's own: keeps tuples, bytes and Markup


def key_hash(key: str) -> str:
    """The stored form of a session key (the key itself is never stored)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Record:
    """One stored session."""

    key_hash: str
    person_id: int | None
    data: dict[str, Any]
    idle_seconds: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    absolute_at: datetime
    address: str = ""
    user_agent: str = ""


class SessionStore(Protocol):
    """Where sessions live (the database by default)."""

    def load(self, key_hash: str) -> Record | None:
        """A live session (moving its idle deadline on, at most once a minute), or None."""

    def create(self, record: Record) -> None:
        """Store a new session."""

    def save(self, key_hash: str, data: dict[str, Any]) -> None:
        """Replace a session's data."""

    def delete(self, key_hash: str) -> None:
        """Delete one session (sign-out)."""

    def delete_person(self, person_id: int, *, keep: str | None = None) -> int:
        """Delete every session of a person but `keep`; how many went."""

    def of_person(self, person_id: int) -> list[Record]:
        """A person's live sessions, most recently used first."""


class DatabaseStore:
    """Sessions in the `web_session` table, on the request's database session."""

    def load(self, key_hash: str) -> Record | None:
        session = db.session()
        now = clock.now()
        found = rows.load(session, key_hash=key_hash, now=now)
        if found is None:
            return None
        record = _record(found)
        if (now - record.last_seen_at).total_seconds() >= TOUCH_EVERY_SECONDS:
            expires = min(now + timedelta(seconds=record.idle_seconds), record.absolute_at)
            rows.touch(session, key_hash=key_hash, last_seen_at=now, expires_at=expires)
            commit(session)  # opening the session runs first: nothing else is pending
        return record

    def create(self, record: Record) -> None:
        session = db.session()
        rows.purge_expired(session, now=record.created_at)
        rows.insert(session, key_hash=record.key_hash, person_id=record.person_id,
                    data=_serializer.dumps(record.data), idle_seconds=record.idle_seconds,
                    created_at=record.created_at, last_seen_at=record.last_seen_at,
                    expires_at=record.expires_at, absolute_at=record.absolute_at,
                    address=record.address[:64], user_agent=record.user_agent[:200])
        commit(session)

    def save(self, key_hash: str, data: dict[str, Any]) -> None:
        session = db.session()
        rows.save_data(session, key_hash=key_hash, data=_serializer.dumps(data))
        commit(session)

    def delete(self, key_hash: str) -> None:
        session = db.session()
        rows.delete(session, key_hash=key_hash)
        commit(session)

    def delete_person(self, person_id: int, *, keep: str | None = None) -> int:
        session = db.session()
        gone = rows.delete_of_person(session, person_id=person_id, keep=keep)
        commit(session)
        return gone

    def of_person(self, person_id: int) -> list[Record]:
        return [_record(r) for r in rows.of_person(db.session(), person_id=person_id,
                                                  now=clock.now())]


def _record(row: dict[str, Any]) -> Record:
    try:
        data = _serializer.loads(row["data"])
    except ValueError:
        data = {}
    return Record(key_hash=row["key_hash"], person_id=row["person_id"],
                  data=data if isinstance(data, dict) else {},
                  idle_seconds=int(row["idle_seconds"]), created_at=row["created_at"],
                  last_seen_at=row["last_seen_at"], expires_at=row["expires_at"],
                  absolute_at=row["absolute_at"], address=row["address"],
                  user_agent=row["user_agent"])


def store() -> SessionStore:
    """The app's session store."""
    found: SessionStore | None = current_app.extensions.get("wallet.session_store")
    if found is None:
        found = DatabaseStore()
        current_app.extensions["wallet.session_store"] = found
    return found


def lifetimes(*, signed_in: bool, admin: bool) -> tuple[int, int]:
    """(idle seconds, absolute seconds) for a new session, from the configuration."""
    config = current_app.config
    if not signed_in:
        anonymous = int(config["WALLET_SESSION_ANONYMOUS_MINUTES"]) * 60
        return anonymous, anonymous
    idle = int(config["WALLET_SESSION_IDLE_MINUTES_ADMIN" if admin
                      else "WALLET_SESSION_IDLE_MINUTES"]) * 60
    absolute = int(config["WALLET_SESSION_HOURS"]) * 3600
    return min(idle, absolute), absolute


def new_record(*, key: str, person_id: int | None, data: dict[str, Any], admin: bool,
               address: str, user_agent: str) -> Record:
    """A fresh session record starting now."""
    now = clock.now()
    idle, absolute = lifetimes(signed_in=person_id is not None, admin=admin)
    end = now + timedelta(seconds=absolute)
    return Record(key_hash=key_hash(key), person_id=person_id, data=data, idle_seconds=idle,
                  created_at=now, last_seen_at=now,
                  expires_at=min(now + timedelta(seconds=idle), end), absolute_at=end,
                  address=address, user_agent=user_agent)


def end_all(person_id: int, *, keep: str | None = None) -> int:
    """Sign a person out everywhere (but the session `keep`); how many sessions ended."""
    return store().delete_person(person_id, keep=keep)
