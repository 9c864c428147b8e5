"""Webhooks (Standard Webhooks) for each organisation: the outbox, delivery, reminders,
and the admin's endpoints (docs: /work/notes/webhooks-docs.md until docs/ has them).

`emit` writes a message and one delivery per subscribed endpoint **in the caller's
transaction**: the event is committed with the change that caused it, or rolled back
with it. `deliver_due` (the every-minute job "deliver_webhooks") claims each due attempt
with a conditional update, POSTs it between transactions through the peers' HTTP
transport (total deadline, no redirects, http(s) only, public addresses unless
WALLET_FEDERATION_ALLOW_PRIVATE), and records the answer: 2xx delivered, anything else
tried again on the spec's schedule until it gives up. `remind_due` (the daily job
"webhook_reminders") emits note.expiring and alumni.window_closing, once per note or
membership (a unique event key).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.actions._base import Actor, atomic, commit, org_or_404, require_admin
from wallet.core import webhooks as core
from wallet.core.errors import Malformed, MalformedToken, NotFound, WalletError
from wallet.core.money import format_amount, parse_amount
from wallet.memo import memo
from wallet.models import Organization, Person, WebhookEndpoint
from wallet.peers import addresses, transports
from wallet.store import people
from wallet.store import webhooks as store

log = logging.getLogger(__name__)

# An attempt's lease: a worker that dies mid-attempt leaves it to be tried after this
# (longer than any request's deadline).
LEASE = timedelta(minutes=5)


# -- emitting (inside the caller's transaction) --------------------------------------------


def emit(session: Session, *, org_id: int, type: str, data: Mapping[str, Any],
         key: str | None = None, endpoint_ids: Sequence[int] | None = None) -> int:
    """Record an event for every enabled endpoint subscribed to `type`, in the caller's
    transaction (nothing when none is); how many deliveries. With `key`, the event is
    recorded once ever per organisation (a second emit records nothing)."""
    targets = list(endpoint_ids) if endpoint_ids is not None else store.subscribed(
        session, org_id=org_id, event_type=type)
    if not targets:
        return 0
    now = clock.now()
    message_id = store.add_message(session, {
        "msg_id": core.new_message_id(secrets.token_bytes(16)), "org_id": org_id,
        "type": type, "body": core.body(type, now, data).decode("utf-8"),
        "event_key": key, "created_at": now})
    if message_id is None:
        return 0  # emitted before
    store.add_deliveries(session, org_id=org_id, message_id=message_id,
                         endpoint_ids=targets, due=now)
    return len(targets)


def money(micros: int, currency: str) -> dict[str, str]:
    """An amount as payloads carry it: a decimal string and its currency."""
    return {"amount": format_amount(micros), "currency": currency}


def tranches_vested(session: Session, *, org_id: int, claimed: Iterable[Any]) -> int:
    """`tranche.vested`, one event per tranche posted (its id is the event's key)."""
    rows = list(claimed)
    targets = store.subscribed(session, org_id=org_id, event_type="tranche.vested") \
        if rows else []
    if not targets:
        return 0
    emails = _emails(session, {int(c.person_id) for c in rows})
    return sum(emit(session, org_id=org_id, type="tranche.vested", key=f"tranche:{c.id}",
                    endpoint_ids=targets, data={
                        "tranche_id": c.id, "grant_id": c.grant_id,
                        "person": emails.get(int(c.person_id), ""),
                        **money(c.amount, c.currency)}) for c in rows)


def debited(session: Session, *, org: Organization, person_id: int, email: str | None,
            after: int, amount: int) -> int:
    """`balance.low` when a debit of `amount` left `after` available and crossed the
    threshold (WALLET_WEBHOOK_LOW_BALANCE) on the way: once per crossing, not per spend."""
    threshold = low_balance_threshold()
    if threshold is None or amount <= 0 or not core.crossed_below(after + amount, after,
                                                                   threshold):
        return 0
    assert org.id is not None
    if email is None:
        email = _emails(session, {person_id}).get(person_id, "")
    return emit(session, org_id=org.id, type="balance.low", data={
        "person": email, "available": format_amount(after), "currency": org.currency,
        "threshold": format_amount(threshold)})


def low_balance_threshold() -> int | None:
    """The low-balance threshold in micros; None when it is off ("0" or empty)."""
    text = str(current_app.config.get("WALLET_WEBHOOK_LOW_BALANCE", "") or "").strip()
    if text in ("", "0", "0.00", "off"):
        return None
    return parse_amount(text)


def _emails(session: Session, person_ids: set[int]) -> dict[int, str]:
    p = Person.__table__  # type: ignore[attr-defined]
    return {int(r.id): str(r.email) for r in session.connection().execute(
        sa.select(p.c.id, p.c.email).where(p.c.id.in_(sorted(person_ids))))}


# -- the daily reminders -------------------------------------------------------------------


def remind_due(session: Session) -> int:
    """Emit note.expiring (notes expiring within WALLET_WEBHOOK_NOTE_EXPIRING_DAYS) and
    alumni.window_closing (windows closing within WALLET_WEBHOOK_ALUMNI_DAYS), each once
    per note or membership, in every organisation with endpoints; how many deliveries."""
    config = current_app.config
    note_days = timedelta(days=int(config["WALLET_WEBHOOK_NOTE_EXPIRING_DAYS"]))
    alumni_days = int(config["WALLET_WEBHOOK_ALUMNI_DAYS"])
    org_ids = store.org_ids(session)
    commit(session)
    count = 0
    for org_id in org_ids:
        now, today = clock.now(), clock.today()
        with atomic(session):
            org = store.organisation(session, org_id=org_id)
            if org is None:
                continue
            targets = store.subscribed(session, org_id=org_id, event_type="note.expiring")
            for n in store.notes_expiring(session, org_id=org_id, now=now,
                                          until=now + note_days) if targets else ():
                count += emit(session, org_id=org_id, type="note.expiring",
                              key=f"note.expiring:{n.jti}", endpoint_ids=targets, data={
                                  "note": n.jti, "person": n.email,
                                  "expires_at": _iso(n.expires_at),
                                  **money(n.amount, n.currency)})
            targets = store.subscribed(session, org_id=org_id,
                                       event_type="alumni.window_closing")
            window = timedelta(days=org.alumni_days)
            for m in store.alumni_ending(
                    session, org_id=org_id, ended_after=today - window,
                    ended_by=today - window + timedelta(days=alumni_days)) if targets else ():
                closes = m.ended_on + window
                count += emit(session, org_id=org_id, type="alumni.window_closing",
                              key=f"alumni.window_closing:{m.id}:{m.ended_on.isoformat()}",
                              endpoint_ids=targets, data={
                                  "person": m.email, "left_on": m.ended_on.isoformat(),
                                  "window_closes_on": closes.isoformat()})
    return count


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


# -- delivering ----------------------------------------------------------------------------


def deliver_due(session: Session, *, limit: int = 100) -> int:
    """Deliver the webhook messages whose next attempt is due; how many were tried (a
    sweep: safe to run twice, or in two workers at once)."""
    due = store.due(session, now=clock.now(), limit=limit)
    commit(session)  # ends the read: no transaction is held while endpoints answer
    return sum(1 for delivery_id in due if attempt(session, delivery_id=delivery_id)
               is not None)


def attempt(session: Session, *, delivery_id: int) -> str | None:
    """Make one attempt of a delivery if it is due: the state it is in afterwards, or None
    when it was not due (another worker took it, or it is finished)."""
    now = clock.now()
    with atomic(session):
        number = store.claim(session, delivery_id=delivery_id, now=now,
                             lease_until=now + LEASE)
        row = None if number is None else store.to_send(session, delivery_id=delivery_id)
    if number is None or row is None:
        return None
    status, error = _post(row)
    ended = clock.now()
    if status is not None and core.delivered(status):
        state, next_at = core.DELIVERED, None
    else:
        next_at = core.next_attempt(number, ended)
        state = core.PENDING if next_at is not None else core.FAILED
    with atomic(session):
        store.finish_attempt(session, delivery_id=delivery_id, attempt=number, state=state,
                             status=status, error=error, next_at=next_at, now=ended)
    return state


def _post(row: Any) -> tuple[int | None, str]:
    """POST one signed attempt (no transaction open); the answer's status or why none."""
    try:
        secret = core.unseal(_seal_key(), row.secret_sealed, context=row.public_id)
    except WalletError as err:
        log.error("webhook endpoint %s: %s", row.public_id, err.message)
        return None, err.message
    body = row.body.encode("utf-8")
    headers = core.headers(secret, row.msg_id, clock.unix(), body)
    del headers["content-type"]  # the transport's own argument
    try:
        answer = transports.http_transport().request(
            "POST", row.url, body=body, content_type="application/json", headers=headers)
    except WalletError as err:  # unreachable, past the deadline, refused by the policy
        return None, err.message
    return answer.status, "" if core.delivered(answer.status) else f"HTTP {answer.status}"


def _seal_key() -> bytes:
    """The key sealing endpoint secrets (derived from WALLET_KEY_PASSPHRASE once)."""
    passphrase = str(current_app.config["WALLET_KEY_PASSPHRASE"])
    found: bytes = memo("webhook-seal-key").get_or_set(
        "key", lambda: core.seal_key(passphrase))
    return found


# -- the admin's endpoints -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Created:
    """A new endpoint and its secret, shown once."""

    endpoint: WebhookEndpoint
    secret: str


def create_endpoint(session: Session, *, slug: str, url: str, types: Iterable[str],
                    actor: Actor) -> Created:
    """Add an endpoint; its secret (`whsec_…`) is returned once and stored sealed."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    url, chosen = core.check_url(url), core.check_types(types)
    try:
        addresses.check_url(url, transports.policy())
    except MalformedToken as err:
        raise Malformed(err.message) from None
    assert org.id is not None
    public_id = "whe_" + secrets.token_urlsafe(12)
    secret = core.new_secret(secrets.token_bytes(core.SECRET_BYTES))
    with atomic(session):
        endpoint_id = store.add_endpoint(session, {
            "public_id": public_id, "org_id": org.id, "url": url, "event_types": chosen,
            "secret_sealed": core.seal(_seal_key(), secret, nonce=secrets.token_bytes(12),
                                       context=public_id),
            "enabled": True, "created_by": actor.label[:254], "created_at": clock.now()})
        people.audit(session, org_id=org.id, actor=actor.label, action="webhook.add",
                     target=public_id, details={"url": url, "events": chosen})
    found = session.get(WebhookEndpoint, endpoint_id)
    assert found is not None
    return Created(found, secret)


def set_enabled(session: Session, *, slug: str, public_id: str, enabled: bool,
                actor: Actor) -> WebhookEndpoint:
    """Turn an endpoint on or off (off: nothing is sent to it; its deliveries wait)."""
    org, found = _endpoint(session, slug, public_id, actor)
    assert found.id is not None
    with atomic(session):
        store.set_enabled(session, endpoint_id=found.id, enabled=enabled)
        people.audit(session, org_id=org.id, actor=actor.label,
                     action="webhook.enable" if enabled else "webhook.disable",
                     target=public_id)
    session.refresh(found)
    return found


def delete_endpoint(session: Session, *, slug: str, public_id: str, actor: Actor) -> str:
    """Delete an endpoint and its pending deliveries; its URL."""
    org, found = _endpoint(session, slug, public_id, actor)
    assert found.id is not None
    url = found.url
    with atomic(session):
        store.delete_endpoint(session, endpoint_id=found.id)
        people.audit(session, org_id=org.id, actor=actor.label, action="webhook.delete",
                     target=public_id, details={"url": url})
    return url


def send_test(session: Session, *, slug: str, public_id: str, actor: Actor) -> None:
    """Queue a `webhook.test` event to this endpoint only (the next sweep sends it)."""
    org, found = _endpoint(session, slug, public_id, actor)
    assert found.id is not None and org.id is not None
    if not found.enabled:
        raise Malformed("Enable the endpoint first: nothing is sent to a disabled one.")
    with atomic(session):
        emit(session, org_id=org.id, type=core.TEST_EVENT, endpoint_ids=[found.id],
             data={"endpoint": public_id, "organisation": org.slug,
                   "sent_by": actor.label})


def listing(session: Session, *, org: Organization) -> list[WebhookEndpoint]:
    """The organisation's endpoints."""
    assert org.id is not None
    return store.endpoints(session, org_id=org.id)


def delivery_log(session: Session, *, org: Organization, limit: int = 50) -> list[Any]:
    """The latest messages and how their deliveries stand, newest first."""
    assert org.id is not None
    return store.log(session, org_id=org.id, limit=limit)


def _endpoint(session: Session, slug: str, public_id: str,
              actor: Actor) -> tuple[Organization, WebhookEndpoint]:
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    found = store.endpoint(session, org_id=org.id, public_id=public_id[:40])
    if found is None:
        raise NotFound("no such webhook endpoint")
    return org, found
