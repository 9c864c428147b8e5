"""Hold queries: insert once per key, claim a state change once, totals for the checker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet.core import holds, ledger
from wallet.models import Hold, UsageRecord
from wallet.store._dialect import dialect_of, run

HOLD: sa.Table = Hold.__table__  # type: ignore[attr-defined]
USAGE: sa.Table = UsageRecord.__table__  # type: ignore[attr-defined]


def insert(session: Session, values: dict[str, Any]) -> int | None:
    """Insert a hold unless one exists under its (org, idempotency key); the new id."""
    return dialect_of(session).insert_ignore(session, HOLD, values,
                                             ("org_id", "idempotency_key"))


def by_public_id(session: Session, *, org_id: int, public_id: str) -> Hold | None:
    """One organisation's hold by the id the API shows (another's is not found)."""
    return session.scalars(sa.select(Hold).where(
        Hold.org_id == org_id, Hold.public_id == public_id)).first()  # type: ignore[arg-type]


def by_key(session: Session, *, org_id: int, key: str) -> Hold | None:
    """The hold placed under an idempotency key."""
    return session.scalars(sa.select(Hold).where(
        Hold.org_id == org_id, Hold.idempotency_key == key)).first()  # type: ignore[arg-type]


def claim(session: Session, *, hold_id: int, to: str, now: datetime,
          values: dict[str, Any] | None = None, unexpired: bool = True) -> bool:
    """Move an open hold to `to` with `values`, once: True for the one caller that did.

    `unexpired`: only before its expiry (a capture or void); the release of an expired
    hold claims it after.
    """
    where = [HOLD.c.id == hold_id, HOLD.c.state == holds.OPEN]
    where.append(HOLD.c.expires_at > now if unexpired else HOLD.c.expires_at <= now)
    done = run(session, sa.update(HOLD).where(*where).values(
        state=to, closed_at=now, **(values or {})))
    return bool(done.rowcount == 1)


def claim_values(session: Session, *, hold_id: int, values: dict[str, Any]) -> None:
    """Record more of a state change this transaction claimed (the capture's split)."""
    run(session, sa.update(HOLD).where(HOLD.c.id == hold_id).values(**values))


def due(session: Session, *, now: datetime, org_id: int | None = None,
        person_id: int | None = None, limit: int = 500) -> list[Hold]:
    """Open holds past their expiry, oldest first (for the release sweep)."""
    query = sa.select(Hold).where(Hold.state == holds.OPEN,  # type: ignore[arg-type]
                                  Hold.expires_at <= now)  # type: ignore[arg-type]
    if org_id is not None:
        query = query.where(Hold.org_id == org_id)  # type: ignore[arg-type]
    if person_id is not None:
        query = query.where(Hold.person_id == person_id)  # type: ignore[arg-type]
    return list(session.scalars(query.order_by(Hold.expires_at).limit(limit)))  # type: ignore[arg-type]


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
