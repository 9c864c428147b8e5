"""Organisation signing keys: generate, rotate, revoke, publish (docs/keys.md).

Exactly one active key per organisation (a partial unique index enforces it). Rotation
retires the old key, which keeps verifying what it signed. Revocation records the time
the key was compromised: tokens it signed with `iat` at or after that time are invalid
everywhere, and this issuer also revokes its own notes signed in that window (their
value goes back to the engineers' wallets, who can export again under the new key).
The active key is revoked only with its replacement (`replace=True`: a new active key in
the same transaction), so an organisation is never left without a signing key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from wallet.actions import notes as note_actions
from wallet.actions._base import Actor, atomic, org_or_404, require_admin, utcnow
from wallet.actions.signing import issuer_id, issuer_id_of, signer
from wallet.core import jose
from wallet.core.errors import Conflict, Malformed, NotFound
from wallet.keystore import keystore
from wallet.models import Organization, SigningKey
from wallet.store import keys as key_store
from wallet.store import people

__all__ = [  # the issuer id and signer are `wallet.actions.signing`'s, read here by many
    "KeyChange", "fingerprint", "generate", "issuer_id", "issuer_id_of", "jwk_of", "jwks",
    "listing", "metadata", "revocable", "revoke", "rotate", "signer",
]


def fingerprint(jwk: dict[str, Any]) -> str:
    """A key fingerprint for comparing out of band: SHA-256 of the raw key, grouped hex."""
    digest = hashlib.sha256(jose.b64url_decode(jwk["x"])).hexdigest()
    return ":".join(digest[i:i + 4] for i in range(0, len(digest), 4))


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What a key command did."""

    key: SigningKey
    retired: SigningKey | None = None
    notes_revoked: int = 0
    replacement: SigningKey | None = None  # the new active key made by revoke(replace=True)


def generate(session: Session, *, slug: str, actor: Actor) -> KeyChange:
    """Create the organisation's first signing key."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    with atomic(session):
        if key_store.active_key(session, org_id=org.id) is not None:
            raise Conflict(f"{slug} already has an active key; use 'wallet keys rotate'")
        key = _new_key(session, org)
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action="key.generate",
                     target=key.kid)
    return KeyChange(key)


def rotate(session: Session, *, slug: str, actor: Actor) -> KeyChange:
    """Make a new active key; the old one is retired and keeps verifying."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    with atomic(session):
        old = key_store.active_key(session, org_id=org.id)
        _room_for_one_more(session, org)
        if old is not None:
            old.state, old.retired_at = "retired", utcnow()
            session.add(old)
            session.flush()
        key = _new_key(session, org)
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action="key.rotate",
                     target=key.kid, details={"retired": old.kid if old else None})
    return KeyChange(key, old)


def _new_key(session: Session, org: Organization) -> SigningKey:
    assert org.id is not None
    private = Ed25519PrivateKey.generate()
    public = jose.public_jwk(private)
    kid = jose.thumbprint(public)
    store = keystore()
    pem = store.save(org_slug=org.slug, kid=kid, key=private)
    row = SigningKey(org_id=org.id, kid=kid, state="active", public_jwk=public,
                     storage=store.storage, encrypted_pem=pem)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict("another key change for this organisation happened at the same time;"
                       " list the keys and try again") from None
    return row


def revocable(session: Session, *, slug: str, kid: str, replace: bool = False) -> SigningKey:
    """The key `revoke` would revoke, or the reason it refuses (a read, for asking first)."""
    org = org_or_404(session, slug)
    assert org.id is not None
    return _revocable(session, org, kid, replace)


def _revocable(session: Session, org: Organization, kid: str, replace: bool) -> SigningKey:
    assert org.id is not None
    row = key_store.key_by_kid(session, org_id=org.id, kid=kid)
    if row is None:
        raise NotFound(f"{org.slug} has no key {kid!r}")
    if row.state == "revoked":
        raise Conflict(f"key {kid} is already revoked")
    if row.state == "active" and not replace:
        raise Conflict(f"{kid} is {org.slug}'s active key: revoking it alone would leave"
                       f" {org.slug} with no signing key; revoke it with --rotate (a new"
                       " active key in the same step), or rotate first")
    return row


def revoke(session: Session, *, slug: str, kid: str, compromised_at: datetime,
           actor: Actor, reason: str = "", replace: bool = False) -> KeyChange:
    """Revoke a key as compromised at `compromised_at`; revoke our notes it signed since.

    The active key needs `replace=True`: a new active key is made in the same
    transaction (any other active key is retired, as by `rotate`).
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    if compromised_at.tzinfo is None:
        raise Malformed("the compromise time needs a timezone (e.g. 2026-11-27T10:00:00Z)")
    if compromised_at > utcnow():
        raise Malformed("the compromise time cannot be in the future")
    # Token times are whole seconds and verifiers refuse iat >= the compromise second;
    # round down so that this issuer revokes exactly the notes every verifier refuses.
    compromised_at = compromised_at.replace(microsecond=0)
    with atomic(session):
        row = _revocable(session, org, kid, replace)
        row.state, row.revoked_at, row.compromised_at = "revoked", utcnow(), compromised_at
        session.add(row)
        session.flush()
        retired = None
        if replace:
            retired = key_store.active_key(session, org_id=org.id)
            if retired is not None:  # another key was active: rotation retires it
                retired.state, retired.retired_at = "retired", utcnow()
                session.add(retired)
                session.flush()  # it leaves 'active' before the new key takes that place
        replacement = _new_key(session, org) if replace else None
        people.bump_config(session, org_id=org.id)
        count = note_actions.revoke_signed_since(
            session, org=org, kid=kid, since=compromised_at, actor=actor,
            reason="signing key compromised" + (f": {reason}" if reason else ""))
        people.audit(session, org_id=org.id, actor=actor.label, action="key.revoke",
                     target=kid, details={"compromised_at": compromised_at.isoformat(),
                                          "notes_revoked": count, "reason": reason,
                                          "replacement": replacement.kid if replacement
                                          else None})
    return KeyChange(row, retired=retired, notes_revoked=count, replacement=replacement)


def listing(session: Session, *, slug: str) -> list[SigningKey]:
    """Every key of an organisation, newest first."""
    org = org_or_404(session, slug)
    assert org.id is not None
    return key_store.keys_of(session, org_id=org.id)


def jwk_of(row: SigningKey) -> dict[str, str]:
    """The published form of a key: public JWK with kid, use and alg."""
    return {**row.public_jwk, "kid": row.kid, "use": "sig", "alg": jose.SIGNING_ALG}


# A retired key stays published while a note it signed may still be presented, and for a
# day after it was retired (caches, receipts in flight); after that nobody needs it, and
# dropping it keeps the JWKS within what verifiers accept (`jose.MAX_JWKS_KEYS`).
RETIRED_GRACE = timedelta(days=1)


def _published(session: Session, org: Organization,
               rows: list[SigningKey]) -> list[SigningKey]:
    """The active key and the retired keys that something still valid may need."""
    assert org.id is not None
    now = utcnow()
    live = key_store.kids_with_live_notes(session, org_id=org.id, now=now)
    return [r for r in rows if r.state == "active" or (
        r.state == "retired" and (r.kid in live or r.retired_at is None
                                  or r.retired_at > now - RETIRED_GRACE))]


def _room_for_one_more(session: Session, org: Organization) -> None:
    """Refuse a rotation whose JWKS would hold more keys than verifiers accept."""
    assert org.id is not None
    served = _published(session, org, key_store.keys_of(session, org_id=org.id))
    if len(served) >= jose.MAX_JWKS_KEYS:
        raise Conflict(f"{org.slug} already publishes {len(served)} keys and verifiers accept"
                       f" at most {jose.MAX_JWKS_KEYS} per JWKS; a retired key is dropped once"
                       " every note it signed has expired (and a day has passed)")


def jwks(session: Session, *, org: Organization) -> dict[str, Any]:
    """The organisation's JWKS: the active key and the retired keys still needed.

    Revoked keys are never served here (their public part is in the metadata's
    `revoked_keys`).
    """
    assert org.id is not None
    rows = _published(session, org, key_store.keys_of(session, org_id=org.id))
    return {"keys": [jwk_of(r) for r in rows]}


def metadata(session: Session, *, org: Organization) -> dict[str, Any]:
    """SD-JWT VC issuer metadata, with this project's members (docs/protocol.md)."""
    assert org.id is not None
    base = issuer_id(org)
    api = f"{current_app.config['WALLET_BASE_URL']}/api/v1/orgs/{org.slug}"
    rows = key_store.keys_of(session, org_id=org.id)
    return {
        "issuer": base,
        "jwks_uri": f"{base}/jwks.json",
        "name": org.name,
        "redeem_endpoint": f"{api}/redeem",
        "nonce_endpoint": f"{api}/nonces",
        "verify_endpoint": f"{api}/verify",
        # Revoked keys stay verifiable for what they signed *before* the compromise, so
        # their public part is published here (not in the JWKS that naive clients use).
        "revoked_keys": [
            {"kid": r.kid, "compromised_at": _epoch(r.compromised_at), "jwk": jwk_of(r)}
            for r in rows if r.state == "revoked"
        ],
        "retired_keys": [{"kid": r.kid, "retired_at": _epoch(r.retired_at)}
                         for r in _published(session, org, rows) if r.state == "retired"],
    }


def _epoch(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp())
