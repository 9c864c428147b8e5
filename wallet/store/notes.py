"""Note records, status lists and nonces."""

from __future__ import annotations

import math
import threading
import time
import weakref
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet.models import Nonce, Note, Organization, Person, StatusList
from wallet.store._sql import insert_ignore, run

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


_NOTE_BY_JTI = (select(Note).where(Note.org_id == sa.bindparam("org_id"),
                                   Note.jti == sa.bindparam("jti"))
                .execution_options(populate_existing=True))  # after a conditional update


def note_by_jti(session: Session, *, org_id: int, jti: str) -> Note | None:
    """A note record by jti."""
    return session.exec(_NOTE_BY_JTI, params={"org_id": org_id, "jti": jti}).first()


class Redeemed(NamedTuple):
    """What a redemption needs of the note it just took."""

    id: int
    jti: str
    amount: int
    currency: str


_NOTE = Note.__table__
_REDEEM = (
    sa.update(_NOTE)
    .where(_NOTE.c.org_id == sa.bindparam("w_org"), _NOTE.c.jti == sa.bindparam("w_jti"),
           _NOTE.c.status_idx == sa.bindparam("w_idx"), _NOTE.c.state == "active")
    .values(state="redeemed", redeemed_at=sa.bindparam("at"), redeemed_by=sa.bindparam("by"))
    .returning(_NOTE.c.id, _NOTE.c.jti, _NOTE.c.amount, _NOTE.c.currency)
)


def redeem(session: Session, *, org_id: int, jti: str, status_idx: int, at: datetime,
           by: str) -> Redeemed | None:
    """Move an active note to `redeemed` exactly once (a conditional update).

    None when this call did not: the note is unknown, has another status index, or is
    no longer active (the caller reads it to tell which).
    """
    row = run(session, _REDEEM, {"w_org": org_id, "w_jti": jti, "w_idx": status_idx,
                                 "at": at, "by": by}).first()
    return None if row is None else Redeemed(int(row[0]), row[1], int(row[2]), row[3])


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


# Expired nonces are deleted when a nonce is issued, at most this often per organisation
# and process: a DELETE on every issue doubled the statements of the nonce endpoint.
PURGE_EVERY_SECONDS = 60.0
_purged: weakref.WeakKeyDictionary[Any, dict[int, float]] = weakref.WeakKeyDictionary()
_purged_lock = threading.Lock()

_NONCE = Nonce.__table__
_ORG = Organization.__table__
_NONCE_INSERT = (  # one statement: the organisation is looked up by slug inside it
    sa.insert(_NONCE)
    .from_select(["org_id", "value", "created_at", "expires_at"], sa.select(
        _ORG.c.id, sa.bindparam("value", type_=_NONCE.c.value.type),
        sa.bindparam("created_at", type_=_NONCE.c.created_at.type),
        sa.bindparam("expires_at", type_=_NONCE.c.expires_at.type),
    ).where(_ORG.c.slug == sa.bindparam("slug")))
    .returning(_NONCE.c.org_id)
)
_NONCE_PURGE = sa.delete(_NONCE).where(_NONCE.c.org_id == sa.bindparam("org_id"),
                                       _NONCE.c.expires_at < sa.bindparam("now"))
_NONCE_ROW = select(Nonce).where(Nonce.org_id == sa.bindparam("org_id"),
                                 Nonce.value == sa.bindparam("value"))
_NONCE_CONSUME = (
    sa.update(_NONCE)
    .where(_NONCE.c.org_id == sa.bindparam("w_org"), _NONCE.c.value == sa.bindparam("w_value"),
           _NONCE.c.expires_at > sa.bindparam("now"),
           sa.or_(_NONCE.c.consumed_at.is_(None),
                  _NONCE.c.consumed_by == sa.bindparam("consumer")))
    .values(consumed_at=sa.bindparam("now"), consumed_by=sa.bindparam("consumer"))
)


def add_nonce(session: Session, *, slug: str, value: str, now: datetime,
              expires_at: datetime) -> bool:
    """Store (and commit) a fresh nonce of organisation `slug`; False: no such organisation.

    Now and then it also forgets the organisation's expired nonces: an expired nonce can
    never be used again (not even by a retry of the request that spent it), so keeping
    it would only let anonymous callers grow the table; the rows left between purges
    are bounded by the issue rate times `PURGE_EVERY_SECONDS`.

    Each statement stands alone, so on PostgreSQL they run in autocommit mode, without
    the BEGIN and COMMIT round trips of a transaction (one per honour, on the hot path).
    """
    params = {"slug": slug, "value": value, "created_at": now, "expires_at": expires_at}
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":  # SQLite: BEGIN IMMEDIATE is ours to commit
        org_id = session.execute(_NONCE_INSERT, params).scalar()
        if org_id is not None and _purge_due(engine, org_id):
            session.execute(_NONCE_PURGE, {"org_id": org_id, "now": now})
        session.commit()
        return org_id is not None
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        org_id = connection.execute(_NONCE_INSERT, params).scalar()
        if org_id is not None and _purge_due(engine, org_id):
            connection.execute(_NONCE_PURGE, {"org_id": org_id, "now": now})
    return org_id is not None


def _purge_due(engine: Any, org_id: int) -> bool:
    clock = time.monotonic()
    with _purged_lock:
        last = _purged.setdefault(engine, {})
        if clock - last.get(org_id, -math.inf) < PURGE_EVERY_SECONDS:
            return False
        last[org_id] = clock
        return True


def nonce_usable(session: Session, *, org_id: int, value: str, now: datetime,
                 consumer: str | None = None) -> bool:
    """Tell whether a nonce was issued by this org, is unexpired and unspent.

    A nonce consumed by `consumer` (the same idempotent request retrying) still counts.
    """
    row = session.exec(_NONCE_ROW, params={"org_id": org_id, "value": value}).first()
    if row is None or row.expires_at <= now:
        return False
    return row.consumed_at is None or (consumer is not None and row.consumed_by == consumer)


def consume_nonce(session: Session, *, org_id: int, value: str, now: datetime,
                  consumer: str) -> bool:
    """Spend a nonce exactly once (a conditional update); a retry by `consumer` is allowed."""
    result = run(session, _NONCE_CONSUME, {"w_org": org_id, "w_value": value, "now": now,
                                           "consumer": consumer})
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]
