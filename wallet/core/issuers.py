"""Issuer ids, and an issuer's keys as a verifier sees them (pure).

An organisation's issuer id is its instance's base URL, `/orgs/` and its slug. A verifier
learns an issuer's keys from one of two places: an organisation's own key rows (it
verifies its own notes), or the metadata and JWKS that a trust entry pinned from the
issuer (docs/protocol.md): retired keys keep verifying what they signed before they
retired, revoked keys what they signed before the compromise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from wallet.core import jose, notes
from wallet.core.errors import MalformedToken

ORGS = "/orgs/"


def issuer_id(base_url: str, slug: str) -> str:
    """The issuer id of organisation `slug` on the instance at `base_url`."""
    return f"{base_url}{ORGS}{slug}"


def local_slug(base_url: str, issuer: str) -> str | None:
    """The slug an issuer id names on the instance at `base_url`; None for another host."""
    prefix = base_url + ORGS
    return issuer[len(prefix):] if issuer.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """One of an organisation's own signing keys, as plain values (times in Unix seconds)."""

    kid: str
    public_jwk: Mapping[str, Any]
    retired_at: int | None = None
    compromised_at: int | None = None


def keys_from_rows(issuer: str, rows: Iterable[KeyRow]) -> notes.IssuerKeys:
    """An organisation's own keys as a verifier sees them (with retirement and compromise)."""
    return notes.IssuerKeys(issuer, {
        r.kid: notes.KeyInfo(jose.PublicKey.from_jwk(r.public_jwk), r.retired_at,
                             r.compromised_at)
        for r in rows
    })


def keys_from_pinned(issuer: str, metadata: Mapping[str, Any],
                     jwks: Mapping[str, Any]) -> notes.IssuerKeys:
    """A trusted issuer's keys from its pinned metadata and JWKS (each member type-checked:
    they are the peer's word)."""
    retired: dict[str, int | None] = {}
    for entry in _entries(metadata, "retired_keys"):
        kid = entry.get("kid")
        if not isinstance(kid, str):
            raise MalformedToken("metadata retired_keys entries need a kid")
        retired[kid] = _time(entry, "retired_at", required=False)
    infos: dict[str, notes.KeyInfo] = {}
    for kid, key in jose.jwks_keys(jwks).items():
        infos[kid] = notes.KeyInfo(key, retired.get(kid))
    for entry in _entries(metadata, "revoked_keys"):
        at = _time(entry, "compromised_at", required=True)
        key = jose.PublicKey.from_jwk(entry.get("jwk"))
        infos[key.kid] = notes.KeyInfo(key, None, at)
    return notes.IssuerKeys(issuer, infos)


def _entries(metadata: Mapping[str, Any], member: str) -> list[dict[str, Any]]:
    value = metadata.get(member, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise MalformedToken(f"metadata {member} must be a list of objects")
    return value


def _time(entry: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if type(value) is not int:
        raise MalformedToken(f"metadata key entries need an integer {name}")
    return value


def offline_keys(jwks_text: str) -> Callable[[str], notes.IssuerKeys]:
    """A resolver for verifying offline with a JWKS someone handed over: whatever issuer
    a token names, these keys (no retirement or compromise times: a JWKS carries none).
    `MalformedToken` when the text is not a JWKS we accept."""
    keys = jose.jwks_keys(jose.json_object(jwks_text.encode()))
    infos = {kid: notes.KeyInfo(key) for kid, key in keys.items()}
    return lambda issuer: notes.IssuerKeys(issuer, infos)
