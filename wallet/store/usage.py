"""The price catalogue of an organisation and its usage records."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet import clock
from wallet.models import Price, UsageRecord
from wallet.store._dialect import dialect_of, run

PRICE: sa.Table = Price.__table__  # type: ignore[attr-defined]
USAGE: sa.Table = UsageRecord.__table__  # type: ignore[attr-defined]
_PRICE_KEY = ("org_id", "model")
_PRICE_SET = ("input_per_mtok", "output_per_mtok", "currency", "source", "as_of", "updated_at")


def prices(session: Session, *, org_id: int) -> list[Price]:
    """Return the prices an organisation has set, by model."""
    return list(session.scalars(
        sa.select(Price).where(Price.org_id == org_id).order_by(Price.model)))  # type: ignore[arg-type]


def price(session: Session, *, org_id: int, model: str) -> sa.Row[Any] | None:
    """The price an organisation has set for one model: its model, per-million prices,
    currency, date and source (a row, not a model object: every hold placement asks)."""
    return run(session, _PRICE_OF, {"org_id": org_id, "model": model}).first()


_PRICE_OF = sa.select(PRICE.c.model, PRICE.c.input_per_mtok, PRICE.c.output_per_mtok,
                      PRICE.c.currency, PRICE.c.as_of, PRICE.c.source).where(
    PRICE.c.org_id == sa.bindparam("org_id"), PRICE.c.model == sa.bindparam("model"))


def upsert_price(session: Session, *, org_id: int, model: str, input_per_mtok: int,
                 output_per_mtok: int, currency: str, source: str, as_of: date) -> None:
    """Set a model's price (`INSERT … ON CONFLICT DO UPDATE`, one statement)."""
    dialect_of(session).upsert(session, PRICE, {
        "org_id": org_id, "model": model, "input_per_mtok": input_per_mtok,
        "output_per_mtok": output_per_mtok, "currency": currency, "source": source[:300],
        "as_of": as_of, "updated_at": clock.now()}, conflict=_PRICE_KEY, update=_PRICE_SET)


def record_by_key(session: Session, *, org_id: int, key: str) -> UsageRecord | None:
    """Return the usage record an idempotency key created."""
    return session.scalars(sa.select(UsageRecord).where(
        UsageRecord.org_id == org_id, UsageRecord.idempotency_key == key)).first()  # type: ignore[arg-type]


def add_record(session: Session, record: UsageRecord) -> UsageRecord:
    """Store a usage record and flush it."""
    session.add(record)
    session.flush()
    return record


def insert_record(session: Session, values: dict[str, Any]) -> None:
    """Store a usage record nobody reads back in this transaction (a hold's capture)."""
    run(session, _INSERT_USAGE, values)


_INSERT_USAGE = sa.insert(USAGE)


def recent(session: Session, *, org_id: int, person_id: int | None = None,
           limit: int = 50) -> list[UsageRecord]:
    """Return recent usage records, newest first."""
    query = sa.select(UsageRecord).where(UsageRecord.org_id == org_id)  # type: ignore[arg-type]
    if person_id is not None:
        query = query.where(UsageRecord.person_id == person_id)  # type: ignore[arg-type]
    return list(session.scalars(query.order_by(UsageRecord.id.desc()).limit(limit)))  # type: ignore[union-attr]


# -- exports (issue 15) --------------------------------------------------------------------

_PERSON: sa.Table = USAGE.metadata.tables["person"]


def usage_page(session: Session, *, org_id: int, since: datetime | None,
               before: datetime | None, after_id: int, limit: int) -> list[sa.Row[Any]]:
    """Usage records made in [since, before) with their person's email, oldest first, the
    `limit` after id `after_id` (keyset pages for an export)."""
    u, p = USAGE, _PERSON
    query = (sa.select(u.c.id, u.c.created_at, p.c.email, u.c.model, u.c.input_tokens,
                       u.c.output_tokens, u.c.cached_input_tokens, u.c.cost, u.c.currency,
                       u.c.transfer_id)
             .select_from(u.join(p, p.c.id == u.c.person_id))
             .where(u.c.org_id == org_id, u.c.id > after_id))
    if since is not None:
        query = query.where(u.c.created_at >= since)
    if before is not None:
        query = query.where(u.c.created_at < before)
    return list(run(session, query.order_by(u.c.id).limit(limit)).all())
