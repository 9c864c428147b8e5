"""The redemption protocol between two organisations, as pure functions.

The contract is docs/protocol.md §10 "Redeeming between organisations".

Verifier B asks issuer A to redeem notes with a request JWS signed by B's org key:

    header  {"alg": "EdDSA", "typ": "cc-redeem+jwt", "kid": <B's kid>}
    claims  {"iss": B, "aud": A, "jti": "urn:uuid:…", "iat": …, "presentation": [<presentation>, …]}

A answers, per note, a receipt JWS signed by A's org key:

    header  {"alg": "EdDSA", "typ": "cc-receipt+jwt", "kid": <A's kid>}
    claims  {"iss": A, "aud": B, "jti": "urn:uuid:…", "iat": …, "sub": <note jti>,
             "amount": {"value", "currency"}, "status": "redeemed", "request_jti": …}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose, notes
from wallet.core.errors import AudienceMismatch, MalformedToken, NotYetValid, TooLarge
from wallet.core.money import Money, parse_money_json

REQUEST_TYP = "cc-redeem+jwt"
RECEIPT_TYP = "cc-receipt+jwt"
# Every token, requests included, stays within 16 KiB: eight presentations (about 1.1 KB
# each, a third more once base64url-encoded in the payload) fit with room to spare.
MAX_PRESENTATIONS = 8
REQUEST_MAX_AGE = 300


def request(*, verifier: str, issuer: str, jti: str, iat: int, presentations: list[str],
            kid: str, key: Ed25519PrivateKey, held: bool = False) -> str:
    """Sign B's redeem request to A. `held`: B checked these presentations when they
    were given and has held them since, because A could not be reached (a pending
    honour, docs/protocol.md §10): the claim `"pending": true` asks A to forgive the age
    of their key-binding JWTs."""
    claims: dict[str, Any] = {"iss": verifier, "aud": issuer, "jti": jti, "iat": iat,
                              "presentation": presentations}
    if held:
        claims["pending"] = True
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": REQUEST_TYP, "kid": kid}, claims, key)


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    """A verified redeem request."""

    verifier: str
    jti: str
    iat: int
    presentations: list[str]
    held: bool = False  # a pending honour's retry: presentations held by the verifier


def peek_verifier(token: object) -> tuple[jose.Jws, str]:
    """Parse a request enough to know who claims to send it (before choosing its key)."""
    jws = jose.parse(jose.check_size(token), typ=REQUEST_TYP)
    iss = jws.payload.get("iss")
    if not isinstance(iss, str) or not iss:
        raise MalformedToken("the redeem request names no iss")
    return jws, iss


def check_request(jws: jose.Jws, *, keys: notes.IssuerKeys, issuer: str, now: int) -> RedeemRequest:
    """Verify a redeem request's signature (with the sender's keys), audience and freshness."""
    p = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the redeem request needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("aud") != issuer:
        raise AudienceMismatch("the redeem request is addressed to another issuer")
    if iat > now + notes.SKEW:
        raise NotYetValid("the redeem request is dated in the future")
    if iat < now - REQUEST_MAX_AGE - notes.SKEW:
        raise MalformedToken("the redeem request is older than 5 minutes")
    jti, items = p.get("jti"), p.get("presentation")
    if not isinstance(jti, str) or not jti or len(jti) > 100:
        raise MalformedToken("the redeem request needs a jti")
    if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
        raise MalformedToken("presentation must be a non-empty list of presentations")
    if len(items) > MAX_PRESENTATIONS:
        raise TooLarge(f"at most {MAX_PRESENTATIONS} presentations per request")
    held = p.get("pending", False)
    if not isinstance(held, bool):
        raise MalformedToken("pending must be true or false")
    return RedeemRequest(str(p["iss"]), jti, iat, items, held)


def receipt(*, issuer: str, verifier: str, jti: str, iat: int, note_jti: str, amount: Money,
            request_jti: str, kid: str, key: Ed25519PrivateKey) -> str:
    """Sign A's receipt for one redeemed note."""
    return jose.sign({"alg": jose.SIGNING_ALG, "typ": RECEIPT_TYP, "kid": kid},
                     {"iss": issuer, "aud": verifier, "jti": jti, "iat": iat, "sub": note_jti,
                      "amount": amount.as_json(), "status": "redeemed",
                      "request_jti": request_jti}, key)


@dataclass(frozen=True, slots=True)
class Receipt:
    """A verified receipt."""

    token: str
    jti: str
    note_jti: str
    amount: Money


def check_receipt(token: object, *, keys: notes.IssuerKeys, verifier: str,
                  note: notes.Note) -> Receipt:
    """Verify A's receipt for `note` as B: signature, issuer, audience, note and amount."""
    jws = jose.parse(jose.check_size(token), typ=RECEIPT_TYP)
    p: dict[str, Any] = jws.payload
    iat = p.get("iat")
    if not isinstance(iat, int) or isinstance(iat, bool):
        raise MalformedToken("the receipt needs an integer iat")
    jws.verify(keys.for_token(jose.kid_of(jws), iat).key)
    if p.get("iss") != note.issuer or p.get("aud") != verifier:
        raise MalformedToken("the receipt is from another issuer or for another verifier")
    if p.get("sub") != note.jti or p.get("status") != "redeemed":
        raise MalformedToken("the receipt is for another note")
    amount = parse_money_json(p.get("amount"))
    if amount != note.amount:
        raise MalformedToken("the receipt's amount differs from the note's")
    if not isinstance(p.get("jti"), str):
        raise MalformedToken("the receipt needs a jti")
    return Receipt(str(token), p["jti"], note.jti, amount)
