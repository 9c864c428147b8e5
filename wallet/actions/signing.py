"""An organisation as an issuer: its issuer id and its active key, ready to sign.

What issuing a note, a status list, a receipt or a redeem request needs; managing the
keys (generate, rotate, revoke) and publishing them is `wallet.actions.keys`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlmodel import Session

from wallet.core import issuers
from wallet.core.errors import KeyUnavailable
from wallet.keystore import keystore
from wallet.models import Organization, SigningKey
from wallet.store import keys as key_store


def issuer_id(org: Organization) -> str:
    """The organisation's issuer id: `WALLET_BASE_URL/orgs/<slug>` (docs/protocol.md)."""
    return issuer_id_of(org.slug)


def issuer_id_of(slug: str) -> str:
    """The issuer id of the organisation `slug`."""
    return issuers.issuer_id(current_app.config["WALLET_BASE_URL"], slug)


def signer(session: Session, *, org: Organization,
           rows: list[SigningKey] | None = None) -> tuple[str, Ed25519PrivateKey]:
    """The active key, ready to sign; `KeyUnavailable` when there is none.

    `rows` are the organisation's keys when the caller has loaded them already.
    """
    assert org.id is not None
    row = (next((r for r in rows if r.state == "active"), None) if rows is not None
           else key_store.active_key(session, org_id=org.id))
    if row is None:
        raise KeyUnavailable(f"{org.slug} has no active signing key; run"
                             f" 'wallet keys generate --org {org.slug}' (or rotate)")
    return row.kid, keystore().load(row, org_slug=org.slug)
