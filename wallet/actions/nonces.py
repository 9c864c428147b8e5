"""Presentation nonces: issued without storing anything, spent exactly once.

The contract is docs/protocol.md §4 "Presentations (holder binding)".

The format and its MAC are in `wallet.core.nonces`; spent nonces are rows
(`wallet.store.notes.spend_nonce`). The MAC key is derived from the instance secret
(`WALLET_SECRET_KEY`), so every process of an instance recognises every other's nonces.

A nonce asked for by an authenticated engineer is bound to them. Honour spends only a
nonce bound to the person it credits, so a presentation that leaks credits nobody else;
verify (no side effects) accepts anonymous nonces and the caller's own bound ones.
"""

from __future__ import annotations

import functools
import secrets
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlmodel import Session

from wallet.actions._base import utcnow
from wallet.core import nonces
from wallet.core.errors import NotFound
from wallet.store import notes as note_store
from wallet.store import people


def new_nonce(session: Session, *, slug: str,
              person_id: int | None = None) -> tuple[str, datetime]:
    """A fresh single-use nonce for presentations to organisation `slug`, and its expiry.

    `person_id`: the authenticated engineer asking, to whom the nonce is bound (the
    caller has checked who they are); None: an anonymous nonce, good for verify only.
    Nothing is written; `NotFound` when there is no such organisation.
    """
    org_id = people.org_id_of(session, slug=slug)
    if org_id is None:
        raise NotFound(f"no organisation {slug!r}")
    ttl = timedelta(seconds=int(current_app.config["WALLET_NONCE_TTL_SECONDS"]))
    expires = int((utcnow() + ttl).timestamp())
    value = nonces.issue(_key(), org_id=org_id, expires=expires,
                         random=secrets.token_bytes(nonces.RANDOM_BYTES), person_id=person_id)
    return value, datetime.fromtimestamp(expires, UTC)


def usable(session: Session, *, org_id: int, value: str, person_id: int | None = None,
           consumer: str | None = None) -> bool:
    """Tell whether this organisation issued the nonce, and it is unexpired and unspent.

    Anonymous nonces count, and with `person_id` also those bound to that person (the
    authenticated caller's own). A nonce spent by `consumer` (the same idempotent
    request retrying) still counts. Checking never spends.
    """
    if _expiry(org_id, value, None) is None and (
            person_id is None or _expiry(org_id, value, person_id) is None):
        return False
    spender = note_store.nonce_spender(session, org_id=org_id, value=value)
    return spender is None or (consumer is not None and spender == consumer)


def spend(session: Session, *, org_id: int, value: str, consumer: str,
          person_id: int | None = None) -> bool:
    """Spend a nonce of this organisation in the caller's transaction, exactly once.

    The nonce must be bound to `person_id` (honour: the person credited), or be
    anonymous when it is None (reissue, which credits no one). False when it is not
    such a nonce of this organisation, has expired, or another request spent it; a
    retry by `consumer` may spend it again. The caller commits.
    """
    expires = _expiry(org_id, value, person_id)
    if expires is None:
        return False
    return note_store.spend_nonce(session, org_id=org_id, value=value, expires_at=expires,
                                  now=utcnow(), consumer=consumer)


def is_anonymous(org_id: int, value: str) -> bool:
    """Tell whether the value is an unexpired anonymous nonce of this organisation."""
    return _expiry(org_id, value, None) is not None


def _expiry(org_id: int, value: str, person_id: int | None) -> datetime | None:
    """When the nonce expires; None: not this organisation's (for this person, or
    anonymous when `person_id` is None), or expired already."""
    expires = nonces.expiry(_key(), value, org_id=org_id, person_id=person_id)
    if expires is None:
        return None
    at = datetime.fromtimestamp(expires, UTC)
    return at if at > utcnow() else None


def _key() -> bytes:
    return _derived(str(current_app.config["SECRET_KEY"]))


@functools.lru_cache(maxsize=4)
def _derived(secret: str) -> bytes:
    return nonces.derive_key(secret)
