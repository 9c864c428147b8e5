"""Credit notes (SD-JWT VC without disclosures) and holder-bound presentations.

A note is `<issuer-signed JWT>~` (RFC 9901 with no disclosures, so also a plain JWT);
a presentation is `<issuer-signed JWT>~<KB-JWT>` (RFC 9901 §4.3): the KB-JWT is signed
with the key in the note's `cnf.jwk` and binds `aud`, `nonce`, `iat` and `sd_hash`.

Verification returns the note or raises a `VerificationError` with a stable code. When
given a `checks` list it appends `(name, ok)` for every check that ran, in order, so a
report can show exactly what was verified and where it stopped.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import jose
from wallet.core.errors import (
    AudienceMismatch,
    Expired,
    HolderBindingFailed,
    KeyRevoked,
    MalformedToken,
    NonceInvalid,
    NoteAmountInvalid,
    NotYetValid,
    UnknownKey,
    UnsupportedAlg,
    WalletError,
)
from wallet.core.money import Money, parse_money_json

VCT = "urn:compute-credits:note:1"
NOTE_TYP = "dc+sd-jwt"
KB_TYP = "kb+jwt"
SKEW = 60  # seconds of clock skew tolerated (docs/protocol.md §5 "Verification, in order")
KB_MAX_AGE = 300  # a KB-JWT's iat must be within the last 5 minutes
MIN_NONCE_CHARS = 22  # 22 base64url characters carry 132 bits
NOTE_CLAIMS = frozenset({"iss", "vct", "jti", "iat", "nbf", "exp", "amount", "cnf", "status"})
KB_CLAIMS = frozenset({"iat", "aud", "nonce", "sd_hash"})
_JTI = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")

Checks = list[tuple[str, bool]]


# -- issuer keys as a verifier sees them ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A published issuer key and the times that limit what it may have signed."""

    key: jose.PublicKey
    retired_at: int | None = None  # stopped signing (still verifies older tokens)
    compromised_at: int | None = None  # tokens with iat at or after this are invalid


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """What a verifier knows of one trusted issuer's keys."""

    issuer: str
    keys: Mapping[str, KeyInfo]

    def for_token(self, kid: str, iat: int) -> jose.PublicKey:
        """Return the key `kid` if it could have signed at `iat` (docs/keys.md, "Lifecycle")."""
        info = self.keys.get(kid)
        if info is None:
            raise UnknownKey(f"{self.issuer} publishes no key {kid[:64]!r}")
        if info.compromised_at is not None and iat >= info.compromised_at:
            raise KeyRevoked("the signing key was compromised before this token was issued")
        if info.retired_at is not None and iat > info.retired_at + SKEW:
            raise KeyRevoked("the signing key was retired before this token was issued")
        return info.key


Resolver = Callable[[str], IssuerKeys]
"""Return a trusted issuer's keys, or raise `UntrustedIssuer` / `UnknownIssuer`."""


# -- the note ----------------------------------------------------------------------------


class Note(NamedTuple):
    """A verified note's contents (a NamedTuple: immutable and cheap to build)."""

    jwt: str
    issuer: str
    jti: str
    iat: int
    nbf: int
    exp: int
    holder: jose.PublicKey
    status_uri: str
    status_idx: int
    kid: str
    amount: Money

    @property
    def serialized(self) -> str:
        """The SD-JWT form `<JWT>~`."""
        return self.jwt + "~"

    def as_json(self) -> dict[str, Any]:
        """The note's public facts, for reports."""
        return {
            "iss": self.issuer, "jti": self.jti, "iat": self.iat, "nbf": self.nbf,
            "exp": self.exp, "amount": self.amount.as_json(), "kid": self.kid,
            "holder_jkt": self.holder.kid,
            "status": {"status_list": {"idx": self.status_idx, "uri": self.status_uri}},
        }


def new_jti(random16: bytes) -> str:
    """Return a `urn:uuid:` (version 4) from 16 random bytes."""
    return "urn:uuid:" + str(uuid.UUID(bytes=random16, version=4))


def issue(*, issuer: str, jti: str, iat: int, exp: int, amount: Money,
          holder_jwk: Mapping[str, Any], status_uri: str, status_idx: int, kid: str,
          key: Ed25519PrivateKey) -> str:
    """Sign a credit note and return its SD-JWT serialisation `<JWT>~`."""
    holder = jose.PublicKey.from_jwk(dict(holder_jwk))
    header = {"alg": jose.SIGNING_ALG, "typ": NOTE_TYP, "kid": kid}
    payload = {
        "iss": issuer, "vct": VCT, "jti": jti, "iat": iat, "nbf": iat, "exp": exp,
        "amount": amount.as_json(), "cnf": {"jwk": holder.jwk},
        "status": {"status_list": {"idx": status_idx, "uri": status_uri}},
    }
    return jose.sign(header, payload, key) + "~"


def split(text: object) -> tuple[str, str | None]:
    """Split `<JWT>~` or `<JWT>~<KB-JWT>`; notes carry no disclosures."""
    token = jose.check_size(text)
    jwt, sep, rest = token.partition("~")
    if not sep or not jwt:
        raise MalformedToken("a note is an SD-JWT: <issuer-signed JWT>~")
    if "~" in rest:
        raise MalformedToken("credit notes carry no selective disclosures")
    return jwt, (rest or None)


def decode(text: object) -> dict[str, Any]:
    """Decode a note or presentation WITHOUT verifying it (for `wallet note inspect`)."""
    jwt, kb = split(text)
    note = jose.parse(jwt, typ=None)
    decoded: dict[str, Any] = {"header": dict(note.header), "claims": note.payload}
    if kb is not None:
        binding = jose.parse(kb, typ=None, issuer_token=False)
        decoded["kb_jwt"] = {"header": dict(binding.header), "claims": binding.payload}
    return decoded


def verify(text: object, *, resolve: Resolver, now: int, checks: Checks | None = None,
           ignore_expiry: bool = False) -> Note:
    """Verify a note (`<JWT>~`, or the note part of a presentation) as a verifier would.

    `ignore_expiry` serves only the issuer reissuing its own expired note.
    """
    stage = _Stages(checks) if checks is not None else _SILENT
    try:
        jwt, _kb = split(text)
    except WalletError:
        stage.failed()
        raise
    return _verify_jwt(jwt, resolve, now, stage, ignore_expiry)


def _verify_jwt(jwt: str, resolve: Resolver, now: int, stage: _Stages,
                ignore_expiry: bool = False) -> Note:
    try:
        try:
            jws = jose.parse(jwt, typ=NOTE_TYP)
        except UnsupportedAlg:
            stage.passed("format")
            stage.now = "algorithm"
            raise
        # A note whose claims are malformed fails "format"; "algorithm" is recorded only
        # once the whole token is known to be well formed.
        fields = _fields(jws)
        iss, jti, iat, nbf, exp, holder, uri, idx = fields
        stage.passed("format", "algorithm")
        stage.now = "issuer_trusted"
        keys = resolve(iss)
        stage.now = "key"
        kid = jose.kid_of(jws)
        key = keys.for_token(kid, iat)
        stage.now = "signature"
        jws.verify(key.key)
        stage.now = "validity"
        _check_window(iat, nbf, exp, now, ignore_expiry)
        stage.now = "amount"
        amount = _amount(jws.payload["amount"])
    except WalletError:
        stage.failed()
        raise
    stage.passed("issuer_trusted", "key", "signature", "validity", "amount")
    return Note(jwt, iss, jti, iat, nbf, exp, holder, uri, idx, kid, amount)


_SEQUENCE = ("format", "algorithm", "issuer_trusted", "key", "signature", "validity", "amount",
             "holder_binding", "audience", "nonce")


class _Stages:
    """Record checks in order without costing anything when nobody asked for them."""

    __slots__ = ("checks", "done", "now")

    def __init__(self, checks: Checks | None) -> None:
        self.checks = checks
        self.done: list[str] = []
        self.now = "format"

    def passed(self, *names: str) -> None:
        if self.checks is not None:
            for name in names:
                if name not in self.done:
                    self.done.append(name)
                    self.checks.append((name, True))

    def failed(self) -> None:
        if self.checks is not None:
            upto = _SEQUENCE.index(self.now)
            self.passed(*_SEQUENCE[:upto])
            self.checks.append((self.now, False))


# Shared by every verification that records no checks: it keeps nothing (its `now` is
# written by concurrent callers but never read, since `failed` returns at once).
_SILENT = _Stages(None)


_Fields = tuple[str, str, int, int, int, jose.PublicKey, str, int]


def _fields(jws: jose.Jws) -> _Fields:
    """Check every claim's shape except the amount's value (checked after the signature)."""
    p = jws.payload
    if p.keys() != NOTE_CLAIMS:
        extra, missing = sorted(set(p) - NOTE_CLAIMS), sorted(NOTE_CLAIMS - set(p))
        raise MalformedToken(f"note claims differ from {VCT}: missing {missing}, extra {extra}")
    if p["vct"] != VCT:
        raise MalformedToken(f"vct must be {VCT}")
    iss, jti = p["iss"], p["jti"]
    if not isinstance(iss, str) or not iss.startswith(("https://", "http://")):
        raise MalformedToken("iss must be an issuer id URL")
    if not isinstance(jti, str) or _JTI.fullmatch(jti) is None:
        raise MalformedToken("jti must be a urn:uuid (version 4)")
    iat, nbf, exp = p["iat"], p["nbf"], p["exp"]
    if not (_is_int(iat) and _is_int(nbf) and _is_int(exp) and 0 < nbf < exp < 10**11
            and 0 < iat < 10**11):
        raise MalformedToken("iat, nbf and exp must be integer seconds with exp after nbf")
    cnf, status = p["cnf"], p["status"]
    if type(cnf) is not dict or cnf.keys() != {"jwk"}:
        raise MalformedToken('cnf must be {"jwk": …}')
    holder = jose.PublicKey.from_jwk(cnf["jwk"])
    entry = status.get("status_list") if type(status) is dict else None
    if (type(entry) is not dict or status.keys() != {"status_list"}
            or entry.keys() != {"idx", "uri"} or not _is_int(entry["idx"])
            or entry["idx"] < 0 or not isinstance(entry["uri"], str)):
        raise MalformedToken('status must be {"status_list": {"idx": int, "uri": str}}')
    return iss, jti, iat, nbf, exp, holder, entry["uri"], entry["idx"]


def _amount(value: object) -> Money:
    try:
        return parse_money_json(value)
    except WalletError as err:
        raise NoteAmountInvalid(err.message) from None


def _check_window(iat: int, nbf: int, exp: int, now: int, ignore_expiry: bool = False) -> None:
    if nbf > now + SKEW or iat > now + SKEW:
        raise NotYetValid("the note is not valid yet")
    if now >= exp + SKEW and not ignore_expiry:
        raise Expired("the note has expired")


# -- presentations -----------------------------------------------------------------------


def sd_hash(note_text: str) -> str:
    """RFC 9901 §4.3.1: base64url SHA-256 of the ASCII `<issuer-signed JWT>~`."""
    return jose.b64url_encode(hashlib.sha256(note_text.encode("ascii")).digest())


def present(note_text: str, *, holder_key: Ed25519PrivateKey, audience: str, nonce: str,
            iat: int) -> str:
    """Sign a KB-JWT for one verifier and return the presentation `<JWT>~<KB-JWT>`."""
    jwt, kb = split(note_text)
    if kb is not None:
        raise MalformedToken("present a note, not a presentation")
    serialized = jwt + "~"
    payload = {"iat": iat, "aud": audience, "nonce": nonce, "sd_hash": sd_hash(serialized)}
    return serialized + jose.sign({"alg": jose.SIGNING_ALG, "typ": KB_TYP}, payload, holder_key)


@dataclass(frozen=True, slots=True)
class Presentation:
    """A verified presentation: the note, and the nonce it was bound to."""

    note: Note
    nonce: str
    iat: int


def verify_presentation(text: object, *, resolve: Resolver, audience: str, now: int,
                        nonce_ok: Callable[[str], None] | None = None,
                        checks: Checks | None = None, max_age: int = KB_MAX_AGE,
                        ignore_expiry: bool = False) -> Presentation:
    """Verify a presentation for `audience`: the note, then the holder's KB-JWT.

    `nonce_ok(nonce)` raises `NonceInvalid` when the verifier did not issue the nonce
    or it is spent or expired; without it only the nonce's form is checked.
    """
    stage = _Stages(checks) if checks is not None else _SILENT
    try:
        jwt, kb = split(text)
    except WalletError:
        stage.failed()
        raise
    note = _verify_jwt(jwt, resolve, now, stage, ignore_expiry)
    try:
        stage.now = "holder_binding"
        if kb is None:
            raise HolderBindingFailed("a presentation needs a KB-JWT after the ~")
        claims = _check_kb(kb, note, now, max_age)
        stage.passed("holder_binding")
        stage.now = "audience"
        if claims["aud"] != audience:
            raise AudienceMismatch(
                f"presentation is for {str(claims['aud'])[:200]!r}, not {audience!r}")
        stage.passed("audience")
        stage.now = "nonce"
        nonce = claims["nonce"]
        if not isinstance(nonce, str) or not MIN_NONCE_CHARS <= len(nonce) <= 128:
            raise NonceInvalid("the nonce must be a string of at least 128 bits")
        if nonce_ok is not None:
            nonce_ok(nonce)
        stage.passed("nonce")
    except WalletError:
        stage.failed()
        raise
    return Presentation(note, nonce, claims["iat"])


def _check_kb(kb: str, note: Note, now: int, max_age: int) -> dict[str, Any]:
    try:
        jws = jose.parse(kb, typ=KB_TYP, issuer_token=False)
        jws.verify(note.holder.key)
    except WalletError as err:
        raise HolderBindingFailed(f"KB-JWT: {err.message}") from None
    claims = jws.payload
    if set(claims) != KB_CLAIMS or not _is_int(claims["iat"]):
        raise HolderBindingFailed("KB-JWT claims must be exactly iat, aud, nonce and sd_hash")
    if claims["sd_hash"] != sd_hash(note.serialized):
        raise HolderBindingFailed("KB-JWT sd_hash does not match the note")
    if claims["iat"] > now + SKEW:
        raise HolderBindingFailed("KB-JWT is dated in the future")
    if claims["iat"] < now - max_age - SKEW:
        raise HolderBindingFailed("KB-JWT is older than 5 minutes; present again")
    return claims


# -- helpers -----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
