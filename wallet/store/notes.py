"""Note records, status lists and nonces."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet.models import Nonce, Note, Person, StatusList
from wallet.store._sql import insert_ignore

# DESIGN §6 status values by note state; a reclaimed note is as dead as a revoked one.
STATUS_OF_STATE = {"active": 0, "revoked": 1, "reclaimed": 1, "redeemed": 3}


def current_list(session: Session, *, org_id: int) -> StatusList | None:
    """The organisation's newest status list."""
    return session.exec(select(StatusList).where(StatusList.org_id == org_id)
                        .order_by(col(StatusList.number).desc())).first()


def status_list(session: Session, *, org_id: int, number: int) -> StatusList | None:
    """A status list by number."""
    return session.exec(select(StatusList).where(StatusList.org_id == org_id,
                                                 StatusList.number == number)).first()


def open_list(session: Session, *, org_id: int, number: int, size: int, now: datetime) -> None:
    """Create status list `number` unless it exists (safe under concurrency)."""
    insert_ignore(session, StatusList.__table__,  # type: ignore[arg-type]
                  {"org_id": org_id, "number": number, "size": size, "created_at": now},
                  ("org_id", "number"))


def used_in_list(session: Session, *, org_id: int, number: int) -> int:
    """How many indexes of a list are taken."""
    return int(session.exec(select(sa.func.count()).select_from(Note).where(
        Note.org_id == org_id, Note.status_list == number)).one())


def insert_note(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a note unless its status index is taken; return its id or None."""
    return insert_ignore(session, Note.__table__, values,  # type: ignore[arg-type]
                         ("org_id", "status_list", "status_idx"))


def non_valid_entries(session: Session, *, org_id: int, number: int) -> list[tuple[int, int]]:
    """(index, status value) of every note in a list that is no longer valid."""
    rows = session.exec(select(Note.status_idx, Note.state).where(
        Note.org_id == org_id, Note.status_list == number, Note.state != "active"))
    return [(idx, STATUS_OF_STATE[state]) for idx, state in rows]


def note_by_jti(session: Session, *, org_id: int, jti: str) -> Note | None:
    """A note record by jti."""
    return session.exec(select(Note).where(Note.org_id == org_id, Note.jti == jti)).first()


def set_state(session: Session, *, note_id: int, from_state: str, to_state: str,
              values: dict[str, Any]) -> bool:
    """Move a note from one state to another exactly once; tell whether this call did."""
    table = Note.__table__
    result = session.execute(
        sa.update(table).where(table.c.id == note_id, table.c.state == from_state)
        .values(state=to_state, **values))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def notes_of(session: Session, *, org_id: int, person_id: int | None = None,
             query: str = "", state: str | None = None, limit: int = 50,
             offset: int = 0) -> list[tuple[Note, Person]]:
    """Notes of an organisation (optionally one person's), newest first, with the person."""
    stmt = (select(Note, Person).join(Person, col(Person.id) == Note.person_id)
            .where(Note.org_id == org_id))
    if person_id is not None:
        stmt = stmt.where(Note.person_id == person_id)
    if state:
        stmt = stmt.where(Note.state == state)
    if query:
        like = f"%{query.strip().lower()}%"
        stmt = stmt.where(sa.or_(sa.func.lower(Note.jti).like(like), Person.email.like(like)))
    stmt = stmt.order_by(col(Note.id).desc()).offset(offset).limit(limit)
    return [(n, p) for n, p in session.exec(stmt).all()]


def active_signed_since(session: Session, *, org_id: int, kid: str,
                        since: datetime) -> list[Note]:
    """Active notes signed by `kid` at or after `since`."""
    return list(session.exec(select(Note).where(
        Note.org_id == org_id, Note.kid == kid, Note.state == "active",
        Note.issued_at >= since)))


def add_nonce(session: Session, *, org_id: int, value: str, now: datetime,
              expires_at: datetime) -> None:
    """Store a fresh nonce, and forget this organisation's expired ones.

    An expired nonce can never be used again (not even by a retry of the request that
    spent it), so keeping it would only let anonymous callers grow the table.
    """
    table = Nonce.__table__
    session.execute(sa.delete(table).where(table.c.org_id == org_id,
                                           table.c.expires_at < now))
    session.add(Nonce(org_id=org_id, value=value, created_at=now, expires_at=expires_at))
    session.flush()


def nonce_usable(session: Session, *, org_id: int, value: str, now: datetime,
                 consumer: str | None = None) -> bool:
    """Tell whether a nonce was issued by this org, is unexpired and unspent.

    A nonce consumed by `consumer` (the same idempotent request retrying) still counts.
    """
    row = session.exec(select(Nonce).where(Nonce.org_id == org_id, Nonce.value == value)).first()
    if row is None or row.expires_at <= now:
        return False
    return row.consumed_at is None or (consumer is not None and row.consumed_by == consumer)


def consume_nonce(session: Session, *, org_id: int, value: str, now: datetime,
                  consumer: str) -> bool:
    """Spend a nonce exactly once (a conditional update); a retry by `consumer` is allowed."""
    table = Nonce.__table__
    result = session.execute(
        sa.update(table).where(
            table.c.org_id == org_id, table.c.value == value, table.c.expires_at > now,
            sa.or_(table.c.consumed_at.is_(None), table.c.consumed_by == consumer))
        .values(consumed_at=now, consumed_by=consumer))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
