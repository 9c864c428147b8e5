"""Pending-honour queries: one open row per note, claimed and finished by conditional
updates (`UPDATE … WHERE state = 'pending'`), so two workers never both act on one try."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet.core import pending
from wallet.models import HonouredNote, PendingHonour
from wallet.store._dialect import run

PENDING: sa.Table = PendingHonour.__table__  # type: ignore[attr-defined]


def insert(session: Session, values: dict[str, Any]) -> int | None:
    """Record a pending honour; None when the note has an open one already (its
    partial unique index: one open pending honour per organisation, issuer and note)."""
    try:
        with session.begin_nested():  # a savepoint: the conflict undoes this insert only
            return int(run(session, sa.insert(PENDING).values(**values)
                           .returning(PENDING.c.id)).scalar_one())
    except sa.exc.IntegrityError:
        return None


def open_for_note(session: Session, *, org_id: int, issuer: str,
                  jti: str) -> PendingHonour | None:
    """The note's open pending honour, if it has one."""
    return session.scalars(sa.select(PendingHonour).where(
        PendingHonour.org_id == org_id, PendingHonour.issuer == issuer,  # type: ignore[arg-type]
        PendingHonour.note_jti == jti,  # type: ignore[arg-type]
        PendingHonour.state == pending.PENDING)).first()  # type: ignore[arg-type]


def by_id(session: Session, *, pending_id: int) -> PendingHonour | None:
    """A pending honour by its row id, read afresh (not from the session's map)."""
    return session.scalars(sa.select(PendingHonour).where(
        PendingHonour.id == pending_id)  # type: ignore[arg-type]
        .execution_options(populate_existing=True)).first()


def by_public_id(session: Session, *, org_id: int, public_id: str) -> PendingHonour | None:
    """One organisation's pending honour by the id its status URL shows."""
    return session.scalars(sa.select(PendingHonour).where(
        PendingHonour.org_id == org_id,  # type: ignore[arg-type]
        PendingHonour.public_id == public_id)).first()  # type: ignore[arg-type]


def of_person(session: Session, *, org_id: int, person_id: int,
              limit: int = 50) -> list[PendingHonour]:
    """A person's pending honours, open or finished, newest first."""
    return list(session.scalars(sa.select(PendingHonour).where(
        PendingHonour.org_id == org_id,  # type: ignore[arg-type]
        PendingHonour.person_id == person_id)  # type: ignore[arg-type]
        .order_by(PendingHonour.id.desc()).limit(limit)))  # type: ignore[union-attr]


def due(session: Session, *, now: datetime, limit: int = 100) -> list[int]:
    """The ids of open pending honours whose next try is due, oldest due first."""
    return [int(i) for i in session.scalars(
        sa.select(PENDING.c.id).where(PENDING.c.state == pending.PENDING,
                                      PENDING.c.next_attempt_at <= now)
        .order_by(PENDING.c.next_attempt_at).limit(limit))]


def claim(session: Session, *, pending_id: int, now: datetime, next_at: datetime) -> bool:
    """Take the due try of an open pending honour, once: count it and set the next try
    (which is also this try's lease: a worker that dies is retried then)."""
    done = run(session, sa.update(PENDING).where(
        PENDING.c.id == pending_id, PENDING.c.state == pending.PENDING,
        PENDING.c.next_attempt_at <= now).values(
        attempts=PENDING.c.attempts + 1, next_attempt_at=next_at))
    return bool(done.rowcount == 1)


def note_failure(session: Session, *, pending_id: int, why: str) -> None:
    """Keep why the last try failed (the row stays pending)."""
    run(session, sa.update(PENDING).where(
        PENDING.c.id == pending_id, PENDING.c.state == pending.PENDING).values(
        last_error=why[:300]))


def finish(session: Session, *, pending_id: int, to: str, now: datetime,
           values: dict[str, Any] | None = None) -> bool:
    """Move an open pending honour to its final state, once: True for the caller that did."""
    done = run(session, sa.update(PENDING).where(
        PENDING.c.id == pending_id, PENDING.c.state == pending.PENDING).values(
        state=to, closed_at=now, **(values or {})))
    return bool(done.rowcount == 1)


def honoured_note(session: Session, *, org_id: int, issuer: str,
                  jti: str) -> HonouredNote | None:
    """The note's honoured-note row here, if it was credited (by whatever request)."""
    return session.scalars(sa.select(HonouredNote).where(
        HonouredNote.org_id == org_id, HonouredNote.issuer == issuer,  # type: ignore[arg-type]
        HonouredNote.note_jti == jti)).first()  # type: ignore[arg-type]
