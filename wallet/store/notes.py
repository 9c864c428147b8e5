"""Note records, status lists and nonces."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet.models import Nonce, Note, Person, StatusList
from wallet.store._dialect import dialect_of, run
from wallet.store._process import due

# Status list values by note state (docs/protocol.md §6 "Issuer documents"); a reclaimed
# note is as dead as a revoked one.
STATUS_OF_STATE = {"active": 0, "revoked": 1, "reclaimed": 1, "redeemed": 3}
_NOTE: sa.Table = Note.__table__  # type: ignore[attr-defined]


def status_list(session: Session, *, org_id: int, number: int) -> StatusList | None:
    """A status list by number."""
    return session.exec(select(StatusList).where(StatusList.org_id == org_id,
                                                 StatusList.number == number)).first()


class LockedList(NamedTuple):
    """A status list locked for this transaction, and how many notes it holds."""

    number: int
    size: int
    used: int


_LIST: sa.Table = StatusList.__table__  # type: ignore[attr-defined]
_NEWEST = (sa.select(_LIST.c.number, _LIST.c.size)
           .where(_LIST.c.org_id == sa.bindparam("org_id"))
           .order_by(_LIST.c.number.desc()).limit(1))
_NUMBER = (sa.select(_LIST.c.number, _LIST.c.size)
           .where(_LIST.c.org_id == sa.bindparam("org_id"),
                  _LIST.c.number == sa.bindparam("number")))
_USED = (sa.select(sa.func.count()).select_from(Note.__table__)
         .where(Note.__table__.c.org_id == sa.bindparam("org_id"),
                Note.__table__.c.status_list == sa.bindparam("number")))


def lock_list(session: Session, *, org_id: int, number: int | None = None) -> LockedList | None:
    """Status list `number` (None: the newest), locked until the transaction ends.

    The seam's row lock (`FOR UPDATE` where the database needs one; a database whose
    transactions each hold the write lock from their BEGIN needs nothing more). The
    notes are counted after the lock, in a statement of its own: at READ COMMITTED it
    sees every note of a transaction that held the lock before. A list another
    transaction is creating is not seen (None) until that one commits.
    """
    seam = dialect_of(session)
    if number is None:
        row = run(session, seam.for_update(_NEWEST), {"org_id": org_id}).first()
    else:
        row = run(session, seam.for_update(_NUMBER), {"org_id": org_id, "number": number}).first()
    if row is None:
        return None
    used = run(session, _USED, {"org_id": org_id, "number": row.number}).scalar_one()
    return LockedList(int(row.number), int(row.size), int(used))


def open_list(session: Session, *, org_id: int, number: int, size: int, now: datetime) -> None:
    """Create status list `number` unless it exists (safe under concurrency)."""
    dialect_of(session).insert_ignore(
        session, _LIST, {"org_id": org_id, "number": number, "size": size, "created_at": now},
        ("org_id", "number"))


def insert_note(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a note unless its status index is taken; return its id or None."""
    return dialect_of(session).insert_ignore(session, _NOTE, values,
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


class NoteStatus(NamedTuple):
    """What an issuer's own record says of a note's status."""

    status_idx: int
    state: str
    revoke_reason: str | None


_NOTE_STATUS = sa.select(_NOTE.c.status_idx, _NOTE.c.state, _NOTE.c.revoke_reason).where(
    _NOTE.c.org_id == sa.bindparam("org_id"), _NOTE.c.jti == sa.bindparam("jti"))


def note_status(session: Session, *, org_id: int, jti: str) -> NoteStatus | None:
    """The status of a note record by jti: three columns, no model object (verifying
    one's own note reads only these; the ORM load of the whole row cost as much again)."""
    if session.new or session.dirty or session.deleted:
        session.flush()  # what an ORM query's autoflush would have sent first
    row = run(session, _NOTE_STATUS, {"org_id": org_id, "jti": jti}).first()
    return None if row is None else NoteStatus(*row)


class Redeemed(NamedTuple):
    """What a redemption needs of the note it just took."""

    id: int
    jti: str
    amount: int
    currency: str


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
    result = run(session, sa.update(_NOTE).where(_NOTE.c.id == note_id,
                                                 _NOTE.c.state == from_state)
                 .values(state=to_state, **values))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def notes_of(session: Session, *, org_id: int, person_id: int | None = None,
             query: str = "", state: str | None = None, limit: int = 50,
             offset: int = 0, expired_at: datetime | None = None
             ) -> list[tuple[Note, Person]]:
    """Notes of an organisation (optionally one person's), newest first, with the person;
    with `expired_at`, only those whose expiry is at or before it."""
    stmt = (select(Note, Person).join(Person, col(Person.id) == Note.person_id)
            .where(Note.org_id == org_id))
    if person_id is not None:
        stmt = stmt.where(Note.person_id == person_id)
    if state:
        stmt = stmt.where(Note.state == state)
    if expired_at is not None:
        stmt = stmt.where(Note.expires_at <= expired_at)
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


# Spent nonces are rows (issuing one stores nothing: `wallet.core.nonces`). Rows whose
# nonce has expired can never matter again and are deleted when a nonce is spent, at most
# this often per organisation and process (a DELETE on every spend would double them).
PURGE_EVERY_SECONDS = 60.0

_NONCE: sa.Table = Nonce.__table__  # type: ignore[attr-defined]
_NONCE_PURGE = sa.delete(_NONCE).where(_NONCE.c.org_id == sa.bindparam("org_id"),
                                       _NONCE.c.expires_at < sa.bindparam("now"))
_NONCE_SPENDER = sa.select(_NONCE.c.consumed_by).where(
    _NONCE.c.org_id == sa.bindparam("org_id"), _NONCE.c.value == sa.bindparam("value"))


def nonce_spender(session: Session, *, org_id: int, value: str) -> str | None:
    """Who spent a nonce of this organisation (the consumer's name); None: unspent."""
    row = run(session, _NONCE_SPENDER, {"org_id": org_id, "value": value}).first()
    return None if row is None else str(row[0] or "")


def spend_nonce(session: Session, *, org_id: int, value: str, expires_at: datetime,
                now: datetime, consumer: str) -> bool:
    """Spend a nonce exactly once, in the caller's transaction; True when it is ours.

    One `INSERT … ON CONFLICT (value) DO UPDATE … WHERE consumed_by = consumer`: the
    unique value admits one spender, and the same consumer (an idempotent request
    retrying) gets its row back. A concurrent spender waits for the first one's commit
    and then finds the row taken (or inserts it, when the first one rolled back).
    """
    if due(session, "nonces.purge", org_id, every=PURGE_EVERY_SECONDS):
        run(session, _NONCE_PURGE, {"org_id": org_id, "now": now})
    spent = dialect_of(session).upsert(session, _NONCE, {
        "org_id": org_id, "value": value, "created_at": now, "expires_at": expires_at,
        "consumed_at": now, "consumed_by": consumer},
        conflict=("value",), keep=("consumed_at",), when=_same_spender)
    return spent is not None


def _same_spender(spending: Any) -> sa.ColumnElement[bool]:
    """The row already spent is the same organisation's, by the same consumer."""
    return sa.and_(_NONCE.c.org_id == spending.org_id,
                   _NONCE.c.consumed_by == spending.consumed_by)


# -- exports (issue 15) --------------------------------------------------------------------


def notes_page(session: Session, *, org_id: int, since: datetime | None,
               before: datetime | None, after_id: int, limit: int) -> list[sa.Row[Any]]:
    """Notes issued in [since, before) with their person's email, oldest first, the
    `limit` after id `after_id` (keyset pages for an export; the token itself is left out)."""
    n, p = _NOTE, Person.__table__  # type: ignore[attr-defined]
    query = (sa.select(n.c.id, n.c.jti, p.c.email, n.c.amount, n.c.currency, n.c.state,
                       n.c.issued_at, n.c.expires_at, n.c.kid, n.c.status_list,
                       n.c.status_idx, n.c.revoked_at, n.c.revoke_reason, n.c.redeemed_at,
                       n.c.redeemed_by, n.c.reclaimed_at, n.c.reclaim_kind, n.c.replaced_by)
             .select_from(n.join(p, p.c.id == n.c.person_id))
             .where(n.c.org_id == org_id, n.c.id > after_id))
    if since is not None:
        query = query.where(n.c.issued_at >= since)
    if before is not None:
        query = query.where(n.c.issued_at < before)
    return list(run(session, query.order_by(n.c.id).limit(limit)).all())
