"""Presentation nonces: issued without storing anything, spent exactly once (DESIGN §7).

The format and its MAC are in `wallet.core.nonces`; spent nonces are rows
(`wallet.store.notes.spend_nonce`). The MAC key is derived from the instance secret
(`WALLET_SECRET_KEY`), so every process of an instance recognises every other's nonces.
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


def new_nonce(session: Session, *, slug: str) -> tuple[str, datetime]:
    """A fresh single-use nonce for presentations to organisation `slug`, and its expiry.

    Nothing is written; `NotFound` when there is no such organisation.
    """
    org_id = people.org_id_of(session, slug=slug)
    if org_id is None:
        raise NotFound(f"no organisation {slug!r}")
    ttl = timedelta(seconds=int(current_app.config["WALLET_NONCE_TTL_SECONDS"]))
    expires = int((utcnow() + ttl).timestamp())
    value = nonces.issue(_key(), org_id=org_id, expires=expires,
                         random=secrets.token_bytes(nonces.RANDOM_BYTES))
    return value, datetime.fromtimestamp(expires, UTC)


def usable(session: Session, *, org_id: int, value: str, consumer: str | None = None) -> bool:
    """Tell whether this organisation issued the nonce, and it is unexpired and unspent.

    A nonce spent by `consumer` (the same idempotent request retrying) still counts.
    Checking never spends.
    """
    if _expiry(org_id, value) is None:
        return False
    spender = note_store.nonce_spender(session, org_id=org_id, value=value)
    return spender is None or (consumer is not None and spender == consumer)


def spend(session: Session, *, org_id: int, value: str, consumer: str) -> bool:
    """Spend a nonce of this organisation in the caller's transaction, exactly once.

    False when it is not this organisation's, has expired, or another request spent
    it; a retry by `consumer` may spend it again. The caller commits.
    """
    expires = _expiry(org_id, value)
    if expires is None:
        return False
    return note_store.spend_nonce(session, org_id=org_id, value=value, expires_at=expires,
                                  now=utcnow(), consumer=consumer)


def _expiry(org_id: int, value: str) -> datetime | None:
    """When the organisation's nonce expires; None: not its nonce, or expired already."""
    expires = nonces.expiry(_key(), value, org_id=org_id)
    if expires is None:
        return None
    at = datetime.fromtimestamp(expires, UTC)
    return at if at > utcnow() else None


def _key() -> bytes:
    return _derived(str(current_app.config["SECRET_KEY"]))


@functools.lru_cache(maxsize=4)
def _derived(secret: str) -> bytes:
    return nonces.derive_key(secret)
