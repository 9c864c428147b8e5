"""Fetching and checking an issuer's documents: its metadata and keys (what a trust entry
pins) and its status lists.

Everything here is the peer's word: each member is checked for its type before use, so a
peer's odd answer is a clear refusal (`malformed`, or `issuer_unavailable`), never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from wallet.core import jose, notes, status
from wallet.core.errors import IssuerUnavailable, MalformedToken, WalletError
from wallet.core.issuers import keys_from_pinned
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


def get_status_token(uri: str) -> str:
    """GET the status list token at `uri` (the network step, unverified), or raise
    `IssuerUnavailable` when the issuer did not answer it."""
    answer = transport_for(uri).request("GET", uri)
    if answer.status != 200:
        raise IssuerUnavailable(f"status list {shown(uri)} answered {answer.status}")
    return answer.body.decode("ascii", "replace").strip()


def read_status_token(uri: str, token: str, keys: notes.IssuerKeys, *,
                      now: int) -> status.StatusList:
    """Verify a status list token fetched from `uri` with the issuer's keys (no network);
    any failure is `IssuerUnavailable`."""
    try:
        jws = jose.parse(token, typ=status.TYP,
                         max_bytes=status.MAX_TOKEN_BYTES)  # its own, larger limit
        iat = jws.payload.get("iat")
        if type(iat) is not int:  # the peer's word: checked before it picks a key
            raise MalformedToken("status list token has malformed times")
        jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
        return status.read(jws.payload, uri=uri, now=now)
    except WalletError as err:
        raise IssuerUnavailable(f"status list {shown(uri)} did not verify:"
                                f" {err.message}") from None
