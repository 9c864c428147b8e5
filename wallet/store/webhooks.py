"""Webhook queries: endpoints, the outbox of messages and their deliveries. A delivery's
attempt is claimed by one conditional update (`WHERE state = 'pending' AND
next_attempt_at <= now`), so two workers never both send one attempt."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet.core import webhooks as core
from wallet.models import (
    Membership,
    Note,
    Organization,
    Person,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from wallet.store._dialect import dialect_of, run

ENDPOINT: sa.Table = WebhookEndpoint.__table__  # type: ignore[attr-defined]
MESSAGE: sa.Table = WebhookMessage.__table__  # type: ignore[attr-defined]
DELIVERY: sa.Table = WebhookDelivery.__table__  # type: ignore[attr-defined]


# -- endpoints -----------------------------------------------------------------------------


def add_endpoint(session: Session, values: dict[str, Any]) -> int:
    """Store a new endpoint; its row id."""
    return int(run(session, sa.insert(ENDPOINT).values(**values)
                   .returning(ENDPOINT.c.id)).scalar_one())


def endpoints(session: Session, *, org_id: int) -> list[WebhookEndpoint]:
    """An organisation's endpoints, oldest first."""
    return list(session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.org_id == org_id)  # type: ignore[arg-type]
        .order_by(WebhookEndpoint.id)))  # type: ignore[arg-type]


def endpoint(session: Session, *, org_id: int, public_id: str) -> WebhookEndpoint | None:
    """One organisation's endpoint by its public id (None for another's)."""
    return session.scalars(sa.select(WebhookEndpoint).where(
        WebhookEndpoint.org_id == org_id,  # type: ignore[arg-type]
        WebhookEndpoint.public_id == public_id)).first()  # type: ignore[arg-type]


def subscribed(session: Session, *, org_id: int, event_type: str) -> list[int]:
    """The ids of the organisation's enabled endpoints subscribed to `event_type`."""
    rows = run(session, sa.select(ENDPOINT.c.id, ENDPOINT.c.event_types).where(
        ENDPOINT.c.org_id == org_id, ENDPOINT.c.enabled.is_(True))).all()
    return [int(r.id) for r in rows if event_type in (r.event_types or ())]


def set_enabled(session: Session, *, endpoint_id: int, enabled: bool) -> None:
    """Turn an endpoint on or off (off: its pending deliveries wait, none is sent)."""
    run(session, sa.update(ENDPOINT).where(ENDPOINT.c.id == endpoint_id)
        .values(enabled=enabled))


def delete_endpoint(session: Session, *, endpoint_id: int) -> None:
    """Delete an endpoint and its deliveries (the messages stay in the log)."""
    run(session, sa.delete(DELIVERY).where(DELIVERY.c.endpoint_id == endpoint_id))
    run(session, sa.delete(ENDPOINT).where(ENDPOINT.c.id == endpoint_id))


# -- the outbox ----------------------------------------------------------------------------


def add_message(session: Session, values: dict[str, Any]) -> int | None:
    """Record a message; None when its `event_key` was recorded before (sent once)."""
    if values.get("event_key") is None:
        return int(run(session, sa.insert(MESSAGE).values(**values)
                       .returning(MESSAGE.c.id)).scalar_one())
    return dialect_of(session).insert_ignore(session, MESSAGE, values,
                                             ("org_id", "event_key"))


def add_deliveries(session: Session, *, org_id: int, message_id: int,
                   endpoint_ids: list[int], due: datetime) -> None:
    """One pending delivery of the message per endpoint, due at once."""
    run(session, sa.insert(DELIVERY), [
        {"org_id": org_id, "message_id": message_id, "endpoint_id": e, "state": core.PENDING,
         "attempts": 0, "next_attempt_at": due, "last_error": ""} for e in endpoint_ids])


# -- delivering ----------------------------------------------------------------------------


def due(session: Session, *, now: datetime, limit: int = 100) -> list[int]:
    """The ids of pending deliveries to enabled endpoints whose attempt is due."""
    return [int(i) for i in session.scalars(
        sa.select(DELIVERY.c.id).join(ENDPOINT, ENDPOINT.c.id == DELIVERY.c.endpoint_id)
        .where(DELIVERY.c.state == core.PENDING, DELIVERY.c.next_attempt_at <= now,
               ENDPOINT.c.enabled.is_(True))
        .order_by(DELIVERY.c.next_attempt_at).limit(limit))]


def claim(session: Session, *, delivery_id: int, now: datetime,
          lease_until: datetime) -> int | None:
    """Take the due attempt of a pending delivery, once: count it and push its next
    attempt to `lease_until` (a worker that dies mid-attempt is retried then). The
    attempt's number, or None when another worker took it or it is finished."""
    row = run(session, sa.update(DELIVERY).where(
        DELIVERY.c.id == delivery_id, DELIVERY.c.state == core.PENDING,
        DELIVERY.c.next_attempt_at <= now).values(
        attempts=DELIVERY.c.attempts + 1, next_attempt_at=lease_until, last_attempt_at=now)
        .returning(DELIVERY.c.attempts)).first()
    return None if row is None else int(row[0])


def to_send(session: Session, *, delivery_id: int) -> sa.Row[Any] | None:
    """What an attempt sends: the endpoint's URL and sealed secret, the message's id and
    body."""
    return run(session, sa.select(
        ENDPOINT.c.public_id, ENDPOINT.c.url, ENDPOINT.c.secret_sealed, MESSAGE.c.msg_id,
        MESSAGE.c.body).select_from(DELIVERY)
        .join(ENDPOINT, ENDPOINT.c.id == DELIVERY.c.endpoint_id)
        .join(MESSAGE, MESSAGE.c.id == DELIVERY.c.message_id)
        .where(DELIVERY.c.id == delivery_id)).first()


def finish_attempt(session: Session, *, delivery_id: int, attempt: int, state: str,
                   status: int | None, error: str, next_at: datetime | None,
                   now: datetime) -> bool:
    """Record how attempt number `attempt` ended: delivered, failed for good, or pending
    until `next_at`. Only the worker that claimed that attempt may (True when it did)."""
    values: dict[str, Any] = {"state": state, "last_status": status, "last_error": error[:300]}
    if next_at is not None:
        values["next_attempt_at"] = next_at
    if state != core.PENDING:
        values["closed_at"] = now
    done = run(session, sa.update(DELIVERY).where(
        DELIVERY.c.id == delivery_id, DELIVERY.c.state == core.PENDING,
        DELIVERY.c.attempts == attempt).values(**values))
    return bool(done.rowcount == 1)


# -- the delivery log ----------------------------------------------------------------------


def log(session: Session, *, org_id: int, limit: int = 50) -> list[sa.Row[Any]]:
    """The organisation's latest messages, one line per delivery (or per message that no
    endpoint was left to receive), newest first."""
    return list(run(session, sa.select(
        MESSAGE.c.msg_id, MESSAGE.c.type, MESSAGE.c.created_at, DELIVERY.c.state,
        DELIVERY.c.attempts, DELIVERY.c.last_status, DELIVERY.c.last_error,
        DELIVERY.c.next_attempt_at, ENDPOINT.c.url, ENDPOINT.c.public_id)
        .select_from(MESSAGE)
        .outerjoin(DELIVERY, DELIVERY.c.message_id == MESSAGE.c.id)
        .outerjoin(ENDPOINT, ENDPOINT.c.id == DELIVERY.c.endpoint_id)
        .where(MESSAGE.c.org_id == org_id)
        .order_by(MESSAGE.c.id.desc(), DELIVERY.c.id).limit(limit)).all())


# -- what the daily reminders read ---------------------------------------------------------


def notes_expiring(session: Session, *, org_id: int, now: datetime,
                   until: datetime) -> list[sa.Row[Any]]:
    """The organisation's active notes (issued here) that expire in [now, until)."""
    n = Note.__table__  # type: ignore[attr-defined]
    p = Person.__table__  # type: ignore[attr-defined]
    return list(run(session, sa.select(n.c.jti, n.c.amount, n.c.currency, n.c.expires_at,
                                       p.c.email)
                    .join(p, p.c.id == n.c.person_id)
                    .where(n.c.org_id == org_id, n.c.state == "active",
                           n.c.expires_at >= now, n.c.expires_at < until)
                    .order_by(n.c.expires_at)).all())


def alumni_ending(session: Session, *, org_id: int, ended_after: date,
                  ended_by: date) -> list[sa.Row[Any]]:
    """The memberships that ended in [ended_after, ended_by] (their window then closes
    within the reminder's days)."""
    m = Membership.__table__  # type: ignore[attr-defined]
    p = Person.__table__  # type: ignore[attr-defined]
    return list(run(session, sa.select(m.c.id, m.c.ended_on, p.c.email)
                    .join(p, p.c.id == m.c.person_id)
                    .where(m.c.org_id == org_id, m.c.ended_on.is_not(None),
                           m.c.ended_on >= ended_after, m.c.ended_on <= ended_by)
                    .order_by(m.c.ended_on)).all())


def org_ids(session: Session) -> list[int]:
    """Every organisation with an enabled endpoint."""
    return [int(i) for i in session.scalars(
        sa.select(ENDPOINT.c.org_id).where(ENDPOINT.c.enabled.is_(True)).distinct())]


def organisation(session: Session, *, org_id: int) -> Organization | None:
    """An organisation by id."""
    return session.get(Organization, org_id)
