"""API idempotency records (IETF draft-ietf-httpapi-idempotency-key-header).

A key is *claimed* by inserting an `in_flight` row with a lease; the response is stored
when the request finishes (`done`). A concurrent request with the same key finds the
row and is told to wait (409); a request whose claimant crashed can take over once the
lease has expired, with a conditional update so only one taker wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from wallet import clock
from wallet.core.errors import IdempotencyConflict, IdempotencyInFlight
from wallet.models import IdempotencyRecord
from wallet.store._dialect import dialect_of, run

_RECORD: sa.Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Stored:
    """A response recorded for a key."""

    status: int
    body: str


def claim(session: Session, *, org_id: int, scope: str, key: str, request_hash: str,
          now: datetime, lease: timedelta) -> Stored | None:
    """Claim `key` for this request; return the stored response if it already finished.

    Raises `IdempotencyConflict` when the key was used with another request body and
    `IdempotencyInFlight` while another request holds a live lease on it.
    """
    table = _RECORD
    new_id = dialect_of(session).insert_ignore(session, table, {
        "org_id": org_id, "scope": scope, "key": key, "request_hash": request_hash,
        "state": "in_flight", "locked_until": now + lease, "created_at": now,
    }, ("org_id", "scope", "key"))
    if new_id is not None:
        return None
    row = session.exec(select(IdempotencyRecord).where(
        IdempotencyRecord.org_id == org_id, IdempotencyRecord.scope == scope,
        IdempotencyRecord.key == key)).one()
    if row.request_hash != request_hash:
        raise IdempotencyConflict("this Idempotency-Key was already used with a different request")
    if row.state == "done":
        return Stored(int(row.status_code or 200), row.response_body or "")
    if row.locked_until is not None and row.locked_until > now:
        raise IdempotencyInFlight("a request with this Idempotency-Key is still in progress")
    # The first request died without finishing: take over its lease, once.
    taken = run(
        session, sa.update(table).where(table.c.id == row.id, table.c.state == "in_flight",
                               table.c.locked_until == row.locked_until)
        .values(locked_until=now + lease)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        raise IdempotencyInFlight("a request with this Idempotency-Key is still in progress")
    return None


def finish(session: Session, *, org_id: int, scope: str, key: str, request_hash: str,
           status: int, body: str) -> None:
    """Store the response of a claimed key.

    The claim is gone when the handler failed before committing it (its rollback took
    the claim too): then the finished record is inserted afresh.
    """
    done = run(session, _FINISH, {"w_org": org_id, "w_scope": scope, "w_key": key,
                                  "status_code": status, "response_body": body})
    if done.rowcount == 1:  # type: ignore[attr-defined]
        return
    dialect_of(session).insert_ignore(session, _RECORD, {
        "org_id": org_id, "scope": scope, "key": key, "request_hash": request_hash,
        "state": "done", "locked_until": None, "status_code": status, "response_body": body,
        "created_at": clock.now()}, ("org_id", "scope", "key"))


def record(session: Session, *, org_id: int, scope: str, key: str, request_hash: str,
           status: int, body: str, now: datetime) -> bool:
    """Store the response of a key nobody claimed (`INSERT … ON CONFLICT DO NOTHING`):
    True when it was stored; False when the key is taken (finished, or in flight), and
    then nothing changed (a concurrent claimant is waited for first)."""
    return dialect_of(session).insert_ignore(session, _RECORD, {
        "org_id": org_id, "scope": scope, "key": key, "request_hash": request_hash,
        "state": "done", "locked_until": None, "status_code": status, "response_body": body,
        "created_at": now}, ("org_id", "scope", "key")) is not None


_FINISH = (sa.update(_RECORD)
           .where(_RECORD.c.org_id == sa.bindparam("w_org"),
                  _RECORD.c.scope == sa.bindparam("w_scope"),
                  _RECORD.c.key == sa.bindparam("w_key"))
           .values(state="done", locked_until=None))


def release(session: Session, *, org_id: int, scope: str, key: str) -> None:
    """Forget an unfinished claim (a retryable failure), so the client may retry."""
    table = _RECORD
    run(session, sa.delete(table).where(table.c.org_id == org_id, table.c.scope == scope,
                                        table.c.key == key, table.c.state == "in_flight"))
