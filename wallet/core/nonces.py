"""Presentation nonces that a verifier can check without having stored them.

The contract is docs/protocol.md §4 "Presentations (holder binding)".

A nonce is `base64url(expires ‖ random ‖ tag)`: the expiry as 8 big-endian bytes of Unix
seconds, 16 random bytes, and the first 16 bytes of HMAC-SHA256 over the organisation id,
the expiry and the random bytes — followed, for a nonce asked for by an authenticated
engineer, by that person's id — under a key derived from the instance's secret. So the
verifier recognises its own nonces (unforgeable without the secret, bound to one
organisation and, when bound, to one person, expiring when they say) and issuing one
writes nothing: the anonymous nonce endpoint cannot grow the database. What is stored
is the spending: a spent nonce is a row whose unique value refuses a second spend
(`wallet.store.notes.spend_nonce`).

The person is in the MAC, not in the nonce: a presentation shows nothing of who asked,
and checking a bound nonce needs the person it is claimed for (honour: the engineer
being credited). That is what keeps a leaked presentation from crediting anyone else.

Changing the instance's secret makes every nonce issued before the change invalid;
instances that serve one database must share it (as they must for sessions anyway).
"""

from __future__ import annotations

import hashlib
import hmac

from wallet.core import jose
from wallet.core.errors import MalformedToken

RANDOM_BYTES = 16  # 128 random bits (docs/protocol.md §4 "Presentations (holder binding)")
TAG_BYTES = 16
_EXPIRES_BYTES = 8
_RAW_BYTES = _EXPIRES_BYTES + RANDOM_BYTES + TAG_BYTES
LENGTH = len(jose.b64url_encode(bytes(_RAW_BYTES)))  # 54 characters
_CONTEXT = b"compute-credits nonce key v1"


def derive_key(secret: str | bytes) -> bytes:
    """The nonce MAC key, derived from the instance secret (never the secret itself)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, _CONTEXT, hashlib.sha256).digest()


def issue(key: bytes, *, org_id: int, expires: int, random: bytes,
          person_id: int | None = None) -> str:
    """A nonce of organisation `org_id` that expires at `expires` (Unix seconds).

    With `person_id` it is bound to that person: only they can spend it on honour.
    """
    if len(random) != RANDOM_BYTES:
        raise ValueError(f"a nonce needs {RANDOM_BYTES} random bytes")
    if person_id is not None and not 0 < person_id < 2**63:
        raise ValueError("a bound nonce needs a person id (a positive integer)")
    body = expires.to_bytes(_EXPIRES_BYTES, "big") + random
    return jose.b64url_encode(body + _tag(key, org_id, body, person_id))


def expiry(key: bytes, value: str, *, org_id: int, person_id: int | None = None) -> int | None:
    """When a nonce of this organisation expires; None when it is not one of its nonces.

    `person_id`: the nonce must be bound to this person; None: it must be anonymous.
    Anything malformed, issued for another organisation, another person or under
    another secret is None: the caller answers `nonce_invalid` without telling which.
    """
    if len(value) != LENGTH:
        return None
    try:
        raw = jose.b64url_decode(value)
    except MalformedToken:
        return None
    if len(raw) != _RAW_BYTES:
        return None
    body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
    if person_id is not None and not 0 < person_id < 2**63:
        return None
    if not hmac.compare_digest(tag, _tag(key, org_id, body, person_id)):
        return None
    return int.from_bytes(body[:_EXPIRES_BYTES], "big")


def _tag(key: bytes, org_id: int, body: bytes, person_id: int | None) -> bytes:
    # Anonymous: 32 bytes (the format before binding existed, so nonces issued across an
    # upgrade stay valid); bound: 40 bytes. Fixed-length fields, so the two never collide.
    message = org_id.to_bytes(8, "big", signed=False) + body
    if person_id is not None:
        message += person_id.to_bytes(8, "big", signed=False)
    return hmac.new(key, message, hashlib.sha256).digest()[:TAG_BYTES]
