"""Fetching, checking and reading an issuer's metadata and keys (what a trust entry pins).

Everything here is the peer's word: each member is checked for its type before use, so a
peer's odd answer is a clear refusal (`malformed`, or `issuer_unavailable`), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wallet.core import jose, notes
from wallet.core.errors import IssuerUnavailable, MalformedToken
from wallet.peers.base import origin, shown
from wallet.peers.transports import check_peer_url, transport_for

ENDPOINTS = ("jwks_uri", "redeem_endpoint", "nonce_endpoint")


def well_known_url(issuer: str) -> str:
    """SD-JWT VC issuer metadata location: /.well-known/jwt-vc-issuer inserted before the path."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/jwt-vc-issuer{parts.path}"


def get_json(url: str) -> dict[str, Any]:
    """GET a JSON object, or raise `IssuerUnavailable`."""
    answer = transport_for(url).request("GET", url)
    if answer.status != 200:
        raise IssuerUnavailable(f"{shown(url)} answered {answer.status}")
    try:
        return jose.json_object(answer.body)
    except MalformedToken:
        raise IssuerUnavailable(f"{shown(url)} did not answer a JSON object") from None


@dataclass(frozen=True, slots=True)
class Pinned:
    """An issuer's metadata and keys, checked for consistency."""

    issuer: str
    metadata: dict[str, Any]
    jwks: dict[str, Any]


def fetch_issuer(issuer: str) -> Pinned:
    """Fetch and check an issuer's metadata and JWKS (for trust add and refresh)."""
    check_peer_url(issuer)
    metadata = get_json(well_known_url(issuer))
    check_metadata(issuer, metadata)
    jwks = get_json(metadata["jwks_uri"])
    keys_from_pinned(issuer, metadata, jwks)  # every key well-formed, every entry typed
    return Pinned(issuer, metadata, jwks)


def check_metadata(issuer: str, metadata: dict[str, Any]) -> None:
    """Refuse metadata that is not this issuer's, or whose members have the wrong types."""
    if metadata.get("issuer") != issuer:
        raise MalformedToken("the metadata's issuer differs from the issuer id asked for")
    home = origin(issuer)
    for member in ENDPOINTS:
        value = metadata.get(member)
        if not isinstance(value, str) or len(value) > 2000 or origin(value) != home:
            raise MalformedToken(f"metadata {member} must be a URL on {shown(home)}")
    if not isinstance(metadata.get("name", ""), str):
        raise MalformedToken("metadata name must be a string")


def _entries(metadata: dict[str, Any], member: str) -> list[dict[str, Any]]:
    value = metadata.get(member, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(e, dict) for e in value):
        raise MalformedToken(f"metadata {member} must be a list of objects")
    return value


def _time(entry: dict[str, Any], name: str, *, required: bool) -> int | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if type(value) is not int:
        raise MalformedToken(f"metadata key entries need an integer {name}")
    return value


def keys_from_pinned(issuer: str, metadata: dict[str, Any],
                     jwks: dict[str, Any]) -> notes.IssuerKeys:
    """Build a verifier's view of an issuer's keys from pinned metadata and JWKS."""
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
