"""Mail outbox queries: a message per unique key (`INSERT … ON CONFLICT DO NOTHING`),
each try claimed and finished by a conditional update (`UPDATE … WHERE state =
'queued'`), and the rows the sweeps tell of (tranches vested, notes redeemed, alumni
windows closing)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet.models import (
    MailMessage,
    MailSweep,
    Membership,
    Note,
    Organization,
    Person,
    Tranche,
)
from wallet.store._dialect import dialect_of, run

MAIL: sa.Table = MailMessage.__table__  # type: ignore[attr-defined]
SWEEP: sa.Table = MailSweep.__table__  # type: ignore[attr-defined]
TRANCHE: sa.Table = Tranche.__table__  # type: ignore[attr-defined]
NOTE: sa.Table = Note.__table__  # type: ignore[attr-defined]
MEMBER: sa.Table = Membership.__table__  # type: ignore[attr-defined]
ORG: sa.Table = Organization.__table__  # type: ignore[attr-defined]
PERSON: sa.Table = Person.__table__  # type: ignore[attr-defined]
QUEUED = "queued"


def insert(session: Session, values: dict[str, Any]) -> int | None:
    """Queue a message unless its key is queued already (then None): a concurrent
    duplicate waits for the first writer, then inserts nothing."""
    return dialect_of(session).insert_ignore(session, MAIL, values, ("key",))


def taken(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of `keys` have a message already (a sweep skips rendering those)."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        found.update(session.scalars(sa.select(MAIL.c.key).where(
            MAIL.c.key.in_(keys[start:start + 500]))))
    return found


def by_id(session: Session, *, message_id: int) -> MailMessage | None:
    """A message, read afresh (not from the session's map)."""
    return session.scalars(sa.select(MailMessage).where(
        MailMessage.id == message_id)  # type: ignore[arg-type]
        .execution_options(populate_existing=True)).first()


def by_key(session: Session, *, key: str) -> MailMessage | None:
    """The message of an event, if it was queued."""
    return session.scalars(sa.select(MailMessage).where(
        MailMessage.key == key)).first()  # type: ignore[arg-type]


def due(session: Session, *, now: datetime, limit: int = 100) -> list[int]:
    """The ids of queued messages whose next try is due, oldest due first."""
    return [int(i) for i in session.scalars(
        sa.select(MAIL.c.id).where(MAIL.c.state == QUEUED, MAIL.c.next_attempt_at <= now)
        .order_by(MAIL.c.next_attempt_at, MAIL.c.id).limit(limit))]


def claim(session: Session, *, message_id: int, now: datetime, lease_until: datetime) -> bool:
    """Take the due try of a queued message, once: count it and move its next try to
    the end of the lease (a worker that dies mid-send is retried then)."""
    done = run(session, sa.update(MAIL).where(
        MAIL.c.id == message_id, MAIL.c.state == QUEUED, MAIL.c.next_attempt_at <= now)
        .values(attempts=MAIL.c.attempts + 1, next_attempt_at=lease_until))
    return bool(done.rowcount == 1)


def retry_at(session: Session, *, message_id: int, at: datetime, why: str) -> None:
    """A try failed: keep why, and when the next is due (the message stays queued)."""
    run(session, sa.update(MAIL).where(MAIL.c.id == message_id, MAIL.c.state == QUEUED)
        .values(next_attempt_at=at, last_error=why[:300]))


def finish(session: Session, *, message_id: int, to: str, now: datetime, why: str = "",
           via: str | None = None) -> bool:
    """Close a queued message (sent, failed or expired), once; its body is blanked: it
    may hold a one-time link, which the outbox need not keep."""
    values: dict[str, Any] = {"state": to, "closed_at": now, "body": "", "sent_via": via}
    if why:
        values["last_error"] = why[:300]
    done = run(session, sa.update(MAIL).where(MAIL.c.id == message_id,
                                              MAIL.c.state == QUEUED).values(**values))
    return bool(done.rowcount == 1)


# -- where the sweeps have got to ------------------------------------------------------------


def swept_to(session: Session, *, name: str) -> datetime | None:
    """How far the sweep `name` has looked (None: it never ran)."""
    return session.scalars(sa.select(SWEEP.c.swept_to).where(SWEEP.c.name == name)).first()


def advance(session: Session, *, name: str, to: datetime) -> None:
    """Record that the sweep `name` looked up to `to` (never moving it back)."""
    dialect_of(session).upsert(session, SWEEP, {"name": name, "swept_to": to},
                               conflict=("name",), update=("swept_to",), when=_later)


def _later(new: Any) -> sa.ColumnElement[bool]:
    later: sa.ColumnElement[bool] = SWEEP.c.swept_to < new.swept_to
    return later


# -- what the sweeps tell of -----------------------------------------------------------------


After = tuple[datetime, int] | None  # keyset paging: past this (time, id)


def vested_since(session: Session, *, since: datetime, after: After = None,
                 limit: int = 1000) -> list[tuple[Tranche, Organization, Person, str]]:
    """Tranches vested at or after `since` (and past `after`), oldest first, each with its
    organisation, person and what the organisation calls the person."""
    t = TRANCHE
    page = [t.c.state == "vested", t.c.settled_at >= since]
    if after is not None:
        page.append(sa.tuple_(t.c.settled_at, t.c.id) > sa.tuple_(*after))
    rows = session.execute(
        sa.select(Tranche, Organization, Person, MEMBER.c.name)
        .join(ORG, ORG.c.id == t.c.org_id).join(PERSON, PERSON.c.id == t.c.person_id)
        .outerjoin(MEMBER, sa.and_(MEMBER.c.org_id == t.c.org_id,
                                   MEMBER.c.person_id == t.c.person_id))
        .where(*page).order_by(t.c.settled_at, t.c.id).limit(limit))
    return [(tr, o, p, n or "") for tr, o, p, n in rows]


def redeemed_since(session: Session, *, since: datetime, after: After = None,
                   limit: int = 1000) -> list[tuple[Note, Organization, Person, str]]:
    """Notes redeemed (by another organisation) at or after `since` (and past `after`),
    oldest first, with theirs."""
    n = NOTE
    page = [n.c.state == "redeemed", n.c.redeemed_at >= since]
    if after is not None:
        page.append(sa.tuple_(n.c.redeemed_at, n.c.id) > sa.tuple_(*after))
    rows = session.execute(
        sa.select(Note, Organization, Person, MEMBER.c.name)
        .join(ORG, ORG.c.id == n.c.org_id).join(PERSON, PERSON.c.id == n.c.person_id)
        .outerjoin(MEMBER, sa.and_(MEMBER.c.org_id == n.c.org_id,
                                   MEMBER.c.person_id == n.c.person_id))
        .where(*page).order_by(n.c.redeemed_at, n.c.id).limit(limit))
    return [(note, o, p, name or "") for note, o, p, name in rows]


def ended_since(session: Session, *,
                on_or_after: date) -> list[tuple[Membership, Organization, Person]]:
    """Memberships whose employment ended on or after a day, with theirs (the sweep
    picks those whose alumni window closes soon: windows differ per organisation)."""
    m = MEMBER
    rows = session.execute(
        sa.select(Membership, Organization, Person)
        .join(ORG, ORG.c.id == m.c.org_id).join(PERSON, PERSON.c.id == m.c.person_id)
        .where(m.c.ended_on.is_not(None), m.c.ended_on >= on_or_after)
        .order_by(m.c.id))
    return [(mm, o, p) for mm, o, p in rows]
