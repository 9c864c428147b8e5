"""Hold queries: insert once per key, claim a state change once, totals for the checker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session

from wallet.core import holds, ledger
from wallet.models import Hold, Membership, Person, Tranche, UsageRecord
from wallet.store._dialect import dialect_of, run
from wallet.store._rows import as_inserted

HOLD: sa.Table = Hold.__table__  # type: ignore[attr-defined]
USAGE: sa.Table = UsageRecord.__table__  # type: ignore[attr-defined]
TRANCHE: sa.Table = Tranche.__table__  # type: ignore[attr-defined]
_MEMBERSHIP: sa.Table = Membership.__table__  # type: ignore[attr-defined]
_PERSON: sa.Table = Person.__table__  # type: ignore[attr-defined]


def insert(session: Session, values: dict[str, Any]) -> Hold | None:
    """Insert a hold unless one exists under its (org, idempotency key); the new hold
    (None: one exists). The row is exactly what was inserted: it is not read back."""
    new_id = dialect_of(session).insert_ignore(session, HOLD, values,
                                               ("org_id", "idempotency_key"))
    return None if new_id is None else as_inserted(Hold, {**values, "id": new_id})


class Placing(NamedTuple):
    """The member a hold is for, and what must be settled for them before their balance
    is read."""

    person_id: int
    email: str
    ended_on: date | None
    tranches_due: bool  # a pending tranche is due on or before the day (vest it first)
    holds_due: bool  # an open hold is past its expiry (release it first)


_PLACING = sa.select(
    _PERSON.c.id, _PERSON.c.email, _MEMBERSHIP.c.ended_on,
    sa.exists().where(TRANCHE.c.org_id == _MEMBERSHIP.c.org_id,
                      TRANCHE.c.person_id == _PERSON.c.id, TRANCHE.c.state == "pending",
                      TRANCHE.c.due_on <= sa.bindparam("day")),
    sa.exists().where(HOLD.c.org_id == _MEMBERSHIP.c.org_id, HOLD.c.person_id == _PERSON.c.id,
                      HOLD.c.state == holds.OPEN, HOLD.c.expires_at <= sa.bindparam("now")),
).select_from(_MEMBERSHIP.join(_PERSON, _PERSON.c.id == _MEMBERSHIP.c.person_id)).where(
    _MEMBERSHIP.c.org_id == sa.bindparam("org_id"), _PERSON.c.email == sa.bindparam("email"))


def placing(session: Session, *, org_id: int, email: str, day: date,
            now: datetime) -> Placing | None:
    """A member by email (None: not a member), with whether a tranche of theirs is due
    by `day` (`grants.has_due`) and a hold of theirs expired by `now` (`due`): one round
    trip, since on almost every placement nothing is due."""
    row = run(session, _PLACING, {"org_id": org_id, "email": email, "day": day,
                                  "now": now}).first()
    if row is None:
        return None
    return Placing(int(row[0]), str(row[1]), row[2], bool(row[3]), bool(row[4]))


def by_public_id(session: Session, *, org_id: int, public_id: str) -> Hold | None:
    """One organisation's hold by the id the API shows (another's is not found)."""
    return session.scalars(sa.select(Hold).where(
        Hold.org_id == org_id, Hold.public_id == public_id)).first()  # type: ignore[arg-type]


def with_email(session: Session, *, org_id: int, public_id: str) -> tuple[Hold, str] | None:
    """`by_public_id` with the email of the hold's person, in one query."""
    row = session.execute(sa.select(Hold, Person.email)
                          .join(Person, Person.id == Hold.person_id)  # type: ignore[arg-type]
                          .where(Hold.org_id == org_id,  # type: ignore[arg-type]
                                 Hold.public_id == public_id)).first()  # type: ignore[arg-type]
    return None if row is None else (row[0], str(row[1]))


def by_key(session: Session, *, org_id: int, key: str) -> Hold | None:
    """The hold placed under an idempotency key."""
    return session.scalars(sa.select(Hold).where(
        Hold.org_id == org_id, Hold.idempotency_key == key)).first()  # type: ignore[arg-type]


def claim(session: Session, *, hold: Hold, to: str, now: datetime,
          values: dict[str, Any] | None = None, unexpired: bool = True) -> bool:
    """Move an open hold to `to` with `values`, once: True for the one caller that did.

    `unexpired`: only before its expiry (a capture or void); the release of an expired
    hold claims it after. On success `hold` shows the row as updated (nothing else of
    a hold changes, and it was open until this update): it need not be read back.
    """
    changes = {"state": to, "closed_at": now, **(values or {})}
    # Prebuilt: the SET clause is the columns among the parameters.
    done = run(session, _CLAIM[unexpired], {"w_id": hold.id, "w_now": now, **changes})
    if done.rowcount != 1:
        return False
    _loaded(hold, changes)
    return True


_OPEN = sa.update(HOLD).where(HOLD.c.id == sa.bindparam("w_id"), HOLD.c.state == holds.OPEN)
_CLAIM = {True: _OPEN.where(HOLD.c.expires_at > sa.bindparam("w_now")),
          False: _OPEN.where(HOLD.c.expires_at <= sa.bindparam("w_now"))}


def claim_values(session: Session, *, hold: Hold, values: dict[str, Any]) -> None:
    """Record more of a state change this transaction claimed (the capture's split)."""
    run(session, sa.update(HOLD).where(HOLD.c.id == hold.id).values(**values))
    _loaded(hold, values)


def _loaded(hold: Hold, values: dict[str, Any]) -> None:
    # As a refresh would load them (no pending change for the session to flush).
    for name, value in values.items():
        set_committed_value(hold, name, value)


def due(session: Session, *, now: datetime, org_id: int | None = None,
        person_id: int | None = None, limit: int = 500) -> list[Hold]:
    """Open holds past their expiry, oldest first (for the release sweep)."""
    query = sa.select(Hold).where(Hold.state == holds.OPEN,  # type: ignore[arg-type]
                                  Hold.expires_at <= now)  # type: ignore[arg-type]
    if org_id is not None:
        query = query.where(Hold.org_id == org_id)  # type: ignore[arg-type]
    if person_id is not None:
        query = query.where(Hold.person_id == person_id)  # type: ignore[arg-type]
    return list(session.scalars(query.order_by(Hold.expires_at, Hold.id).limit(limit)))  # type: ignore[arg-type]


def open_of(session: Session, *, org_id: int, person_id: int) -> list[Hold]:
    """A person's open holds (in flight, or expired and not yet released), newest first."""
    return list(session.scalars(sa.select(Hold).where(
        Hold.org_id == org_id, Hold.person_id == person_id,  # type: ignore[arg-type]
        Hold.state == holds.OPEN).order_by(Hold.id.desc())))  # type: ignore[union-attr]


def open_totals(session: Session, *, org_id: int) -> dict[tuple[str, str], int]:
    """(`held:<person>`, currency) -> the sum of that person's open holds."""
    rows = run(session, sa.select(HOLD.c.person_id, HOLD.c.currency, sa.func.sum(HOLD.c.amount))
               .where(HOLD.c.org_id == org_id, HOLD.c.state == holds.OPEN)
               .group_by(HOLD.c.person_id, HOLD.c.currency))
    return {(ledger.held(person_id), currency): int(total)
            for person_id, currency, total in rows}


def held_total(session: Session, *, org_id: int) -> dict[str, tuple[int, int]]:
    """currency -> (open holds, their total) for the organisation (finance's summary)."""
    rows = run(session, sa.select(HOLD.c.currency, sa.func.count(), sa.func.sum(HOLD.c.amount))
               .where(HOLD.c.org_id == org_id, HOLD.c.state == holds.OPEN)
               .group_by(HOLD.c.currency))
    return {currency: (int(count), int(total)) for currency, count, total in rows}


def spend_by_model_and_day(session: Session, *, org_id: int, person_id: int,
                           since: datetime) -> list[tuple[date, str, int]]:
    """(day, model, cost) of a person's usage since `since`, for the spend chart."""
    rows = run(session, sa.select(USAGE.c.created_at, USAGE.c.model, USAGE.c.cost)
               .where(USAGE.c.org_id == org_id, USAGE.c.person_id == person_id,
                      USAGE.c.created_at >= since))
    totals: dict[tuple[date, str], int] = {}
    for created_at, model, cost in rows:  # UTC datetimes (the column type converts)
        key = (created_at.date(), model)
        totals[key] = totals.get(key, 0) + int(cost)
    return [(day, model, cost) for (day, model), cost in sorted(totals.items())]


def overruns(session: Session, *, org_id: int) -> Sequence[Any]:
    """currency -> total overrun absorbed (captures whose cost the hold and wallet missed)."""
    return list(run(session, sa.select(HOLD.c.currency, sa.func.count(),
                                       sa.func.sum(HOLD.c.overrun))
                    .where(HOLD.c.org_id == org_id, HOLD.c.overrun > 0)
                    .group_by(HOLD.c.currency)))
