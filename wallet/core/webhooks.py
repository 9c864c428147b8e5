"""Webhooks after the Standard Webhooks specification (https://www.standardwebhooks.com/).

Pure: message ids, secrets (`whsec_<base64>`), the signature of one delivery, the
payload's shape, the retry schedule, and the sealing of secrets at rest. Time, randomness
and keys are arguments.

Spec, "Signature scheme": the signed content is `{webhook-id}.{webhook-timestamp}.{body}`
(the body's exact bytes), signed with HMAC-SHA256 under the secret's bytes (the base64
after `whsec_`); `webhook-signature` is `v1,<base64 of the MAC>` (a space-separated list
when several secrets sign).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wallet.core.errors import Malformed

SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's marker, not a secret
SECRET_BYTES = 32  # the spec: between 24 and 64 bytes
MESSAGE_PREFIX = "msg_"
SIGNATURE_VERSION = "v1"
MAX_URL_LENGTH = 500

# The events an endpoint may subscribe to, with what their `data` carries (docs).
EVENT_TYPES: dict[str, str] = {
    "note.redeemed": "a note we issued was redeemed at another organisation",
    "honour.completed": "a note from another issuer was honoured into an engineer's wallet",
    "tranche.vested": "a vesting tranche was posted to an engineer's wallet",
    "settlement.received": "another organisation's settlement payment was received",
    "balance.low": "an engineer's available balance fell below the low-balance threshold",
    "note.expiring": "a note we issued expires soon and is still unredeemed",
    "alumni.window_closing": "a former engineer's window to export their credit closes soon",
}
TEST_EVENT = "webhook.test"  # sent by "Send test event"; not subscribable

# Spec, "Retry schedule" (the recommended one): after the first attempt, wait 5 s, 5 min,
# 30 min, 2 h, 5 h, 10 h and 10 h between attempts, then give up: 8 attempts over ~27 h.
RETRY_DELAYS: tuple[timedelta, ...] = tuple(timedelta(seconds=s) for s in (
    5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600))
MAX_ATTEMPTS = len(RETRY_DELAYS) + 1

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)


# -- ids and secrets -----------------------------------------------------------------------


def new_message_id(raw: bytes) -> str:
    """A message id (`msg_` and the url-safe base64 of `raw`, 16 random bytes)."""
    if len(raw) < 16:
        raise ValueError("a message id needs 16 random bytes")
    return MESSAGE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def new_secret(raw: bytes) -> str:
    """A signing secret in the spec's format: `whsec_` and the base64 of `raw`."""
    if not 24 <= len(raw) <= 64:
        raise ValueError("a webhook secret is 24 to 64 random bytes")
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def secret_bytes(secret: str) -> bytes:
    """The key bytes of a `whsec_` secret; `Malformed` when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise Malformed("a webhook secret starts with whsec_")
    try:
        raw = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise Malformed("a webhook secret is whsec_ followed by base64") from None
    if not 24 <= len(raw) <= 64:
        raise Malformed("a webhook secret holds 24 to 64 bytes")
    return raw


# -- signing -------------------------------------------------------------------------------


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` of one delivery: `v1,` and the base64 HMAC-SHA256 of
    `{id}.{timestamp}.{body}` under the secret's bytes (spec, "Signature scheme")."""
    content = f"{msg_id}.{int(timestamp)}.".encode() + body
    mac = hmac.new(secret_bytes(secret), content, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(mac).decode('ascii')}"


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt (the timestamp is the attempt's, in seconds)."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(timestamp)),
            "webhook-signature": signature(secret, msg_id, timestamp, body),
            "content-type": "application/json"}


def body(event_type: str, at: datetime, data: Mapping[str, Any]) -> bytes:
    """The payload: `{"type", "timestamp", "data"}` (spec, "Payload structure"), as the
    exact bytes stored once and sent on every attempt."""
    if at.tzinfo is None:
        raise ValueError("a webhook timestamp is an aware datetime")
    stamp = at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return json.dumps({"type": event_type, "timestamp": stamp, "data": dict(data)},
                      separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# -- delivery ------------------------------------------------------------------------------


def delivered(status: int) -> bool:
    """Whether an answer counts as delivered: any 2xx (spec: anything else is retried)."""
    return 200 <= status < 300


def next_attempt(attempts: int, now: datetime) -> datetime | None:
    """When to try again after attempt number `attempts` failed; None: give up."""
    if attempts < 1:
        raise ValueError("attempts are counted from 1")
    if attempts > len(RETRY_DELAYS):
        return None
    return now + RETRY_DELAYS[attempts - 1]


def crossed_below(before: int, after: int, threshold: int) -> bool:
    """Whether a debit took a balance from at or above `threshold` to below it (so
    `balance.low` is sent once per crossing, not on every spend below it)."""
    return before >= threshold > after


# -- what an admin types -------------------------------------------------------------------


def check_url(url: str) -> str:
    """An endpoint URL's shape (http or https, a host, no credentials); `Malformed`.
    Where it may point (public addresses only) is checked when delivering."""
    text = url.strip()
    if not text:
        raise Malformed("Enter the endpoint's URL.")
    if len(text) > MAX_URL_LENGTH:
        raise Malformed(f"Use a URL of at most {MAX_URL_LENGTH} characters.")
    try:
        parts = urlsplit(text)
        _port = parts.port
    except ValueError:
        raise Malformed("That is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Malformed("Use an http:// or https:// URL with a host name.")
    if parts.username or parts.password is not None:
        raise Malformed("Put no user name or password in the URL.")
    if parts.fragment:
        raise Malformed("Put no #fragment in the URL.")
    return text


def check_types(types: Iterable[str]) -> list[str]:
    """The event types subscribed to, known ones only, in the catalogue's order."""
    chosen = set(types)
    unknown = sorted(chosen - set(EVENT_TYPES))
    if unknown:
        raise Malformed(f"Unknown event type(s): {', '.join(unknown)}.")
    if not chosen:
        raise Malformed("Choose at least one event.")
    return [t for t in EVENT_TYPES if t in chosen]


# -- secrets at rest -----------------------------------------------------------------------

SEAL_VERSION = "v1"


def seal_key(passphrase: str, *, rounds: int = 100_000) -> bytes:
    """The AES-256 key that seals webhook secrets, derived from the key passphrase
    (PBKDF2-HMAC-SHA256 with a fixed label: derived once per process)."""
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode("utf-8"),
                               b"compute-credit-wallet webhook secrets v1", rounds)


def seal(key: bytes, secret: str, *, nonce: bytes, context: str) -> str:
    """Encrypt a secret for storage (AES-256-GCM, bound to `context`: the endpoint)."""
    if len(nonce) != 12:
        raise ValueError("AES-GCM takes a 12-byte nonce")
    sealed = AESGCM(key).encrypt(nonce, secret.encode("utf-8"), context.encode("utf-8"))
    return f"{SEAL_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def unseal(key: bytes, text: str, *, context: str) -> str:
    """Decrypt a sealed secret; `Malformed` when it is damaged or sealed under another key."""
    version, _, rest = text.partition(".")
    try:
        if version != SEAL_VERSION:
            raise ValueError(version)
        raw = base64.urlsafe_b64decode(rest.encode("ascii"))
        plain = AESGCM(key).decrypt(raw[:12], raw[12:], context.encode("utf-8"))
    except (ValueError, binascii.Error, InvalidTag):
        raise Malformed("the webhook secret cannot be decrypted: wrong"
                        " WALLET_KEY_PASSPHRASE or a damaged row") from None
    return plain.decode("utf-8")
