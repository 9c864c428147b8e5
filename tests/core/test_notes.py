"""Credit notes and presentations (wallet.core.notes): round trips, independent verifiers
(PyJWT and joserfc), a hand-computed sd_hash, and a generated tamper corpus in which
every case must fail with its exact error code and nothing but a WalletError may escape.

Formats: docs/protocol.md §3 "The credit note" (SD-JWT VC without disclosures) and §4
"Presentations (holder binding)" (RFC 9901 §4.3 KB-JWT); keys and their lifecycle:
docs/keys.md, "Lifecycle"; error codes: docs/protocol.md §8 "Error codes".
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import OKPKey
from joserfc.jwt import JWTClaimsRegistry

from wallet.core import jose, notes
from wallet.core.errors import NonceInvalid, UntrustedIssuer, WalletError
from wallet.core.money import Money

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
ISSUER = "https://issuer.example/orgs/acme"
UNTRUSTED = "https://evil.example/orgs/acme"
AUD = "https://verifier.example/orgs/globex"
IAT = 1_795_000_000
EXP = IAT + 365 * 86_400
NOW = IAT + 100
NONCE = "nonce-" + "Q" * 26
NONCE_22 = "n" * 22
NONCE_128 = "m" * 128
STATUS_URI = ISSUER + "/status/1"


def _key(seed: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes((seed + i) % 256 for i in range(32)))


ISSUER_KEY = _key(0)          # active
SECOND_KEY = _key(32)         # also published (e.g. the next key after a rotation)
RETIRED_KEY = _key(64)
COMPROMISED_KEY = _key(96)
UNPUBLISHED_KEY = _key(128)
HOLDER_KEY = _key(160)
OTHER_HOLDER_KEY = _key(192)
RETIRED_AT = IAT - 10_000
COMPROMISED_AT = IAT - 5_000


def _kid(key: Ed25519PrivateKey) -> str:
    return jose.thumbprint(jose.public_jwk(key))


# The issuer's JWKS as it would publish it (RFC 7517), and what a verifier makes of it.
JWKS: dict[str, Any] = {"keys": [
    {**jose.public_jwk(k), "kid": _kid(k), "use": "sig"}
    for k in (ISSUER_KEY, SECOND_KEY, RETIRED_KEY, COMPROMISED_KEY)
]}
_PUBLISHED = jose.jwks_keys(JWKS)
ISSUER_KEYS = notes.IssuerKeys(ISSUER, {
    _kid(ISSUER_KEY): notes.KeyInfo(_PUBLISHED[_kid(ISSUER_KEY)]),
    _kid(SECOND_KEY): notes.KeyInfo(_PUBLISHED[_kid(SECOND_KEY)]),
    _kid(RETIRED_KEY): notes.KeyInfo(_PUBLISHED[_kid(RETIRED_KEY)], retired_at=RETIRED_AT),
    _kid(COMPROMISED_KEY): notes.KeyInfo(_PUBLISHED[_kid(COMPROMISED_KEY)],
                                         compromised_at=COMPROMISED_AT),
})


def resolve(issuer: str) -> notes.IssuerKeys:
    """The verifier's trust list: one issuer."""
    if issuer == ISSUER:
        return ISSUER_KEYS
    raise UntrustedIssuer(f"{issuer[:80]} is not trusted")


def nonce_ok(nonce: str) -> None:
    """Nonces this verifier issued and has not spent."""
    if nonce not in (NONCE, NONCE_22, NONCE_128):
        raise NonceInvalid("unknown nonce")


def _note(*, key: Ed25519PrivateKey = ISSUER_KEY, kid: str | None = None, iat: int = IAT,
          exp: int = EXP, micros: int = 1_250_000_000, currency: str = "USD",
          holder: Ed25519PrivateKey = HOLDER_KEY, issuer: str = ISSUER, idx: int = 94_567,
          seed: int = 0) -> str:
    return notes.issue(
        issuer=issuer, jti=notes.new_jti(bytes([seed]) * 16), iat=iat, exp=exp,
        amount=Money(micros, currency), holder_jwk=jose.public_jwk(holder),
        status_uri=issuer + "/status/1", status_idx=idx, kid=kid or _kid(key), key=key)


NOTE = _note()
NOTE_JWT = NOTE[:-1]


def _present(note: str = NOTE, *, holder: Ed25519PrivateKey = HOLDER_KEY, aud: str = AUD,
             nonce: str = NONCE, iat: int = NOW) -> str:
    return notes.present(note, holder_key=holder, audience=aud, nonce=nonce, iat=iat)


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _sign(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
          key: Ed25519PrivateKey = ISSUER_KEY) -> str:
    """Sign any header/payload bytes (jose.sign only signs well-formed EdDSA headers)."""
    h = header if isinstance(header, bytes) else _json(header)
    p = payload if isinstance(payload, bytes) else _json(payload)
    signing_input = jose.b64url_encode(h) + "." + jose.b64url_encode(p)
    return signing_input + "." + jose.b64url_encode(key.sign(signing_input.encode()))


_DROP = object()


def _changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(base))
    for name, value in changes.items():
        if value is _DROP:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def _header(**changes: Any) -> dict[str, Any]:
    return _changed({"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": _kid(ISSUER_KEY)}, changes)


def _claims(**changes: Any) -> dict[str, Any]:
    return _changed(notes.decode(NOTE)["claims"], changes)


def _resigned(key: Ed25519PrivateKey = ISSUER_KEY, header: dict[str, Any] | None = None,
              **changes: Any) -> str:
    """A note with some claims changed, properly signed again (so only they are wrong)."""
    return _sign(header or _header(), _claims(**changes), key) + "~"


def _kb(note: str = NOTE, *, key: Ed25519PrivateKey = HOLDER_KEY,
        header: dict[str, Any] | None = None, **changes: Any) -> str:
    """A presentation with a hand-built KB-JWT."""
    claims = _changed({"iat": NOW, "aud": AUD, "nonce": NONCE,
                       "sd_hash": notes.sd_hash(note)}, changes)
    return note + _sign(header or {"alg": "EdDSA", "typ": "kb+jwt"}, claims, key)


def _b64(data: bytes) -> str:
    """base64url without padding, by the standard library (not by the code under test)."""
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _flip_first(part: str) -> str:
    """Change the first character (keeps the length and the canonical tail)."""
    return ("B" if part[0] == "A" else "A") + part[1:]


def outcome(call: Callable[[], object]) -> str:
    """Run a verification: its error code, or "valid". Any other exception fails the test."""
    try:
        call()
    except WalletError as err:
        return err.code
    except Exception as err:  # every refusal must be a WalletError with a stable code
        pytest.fail(f"{type(err).__name__} escaped instead of a WalletError: {err!r}")
    return "valid"


# -- round trip ------------------------------------------------------------------------------

NOTE_CHECKS = ["format", "algorithm", "issuer_trusted", "key", "signature", "validity", "amount"]
PRESENTATION_CHECKS = [*NOTE_CHECKS, "holder_binding", "audience", "nonce"]


def test_issue_then_verify() -> None:
    checks: notes.Checks = []
    note = notes.verify(NOTE, resolve=resolve, now=NOW, checks=checks)
    assert checks == [(name, True) for name in NOTE_CHECKS]
    assert note.jwt == NOTE_JWT and note.serialized == NOTE
    assert (note.issuer, note.iat, note.nbf, note.exp) == (ISSUER, IAT, IAT, EXP)
    assert note.jti == "urn:uuid:00000000-0000-4000-8000-000000000000"
    assert note.amount == Money(1_250_000_000, "USD")
    assert note.holder.jwk == jose.public_jwk(HOLDER_KEY)
    assert (note.status_uri, note.status_idx, note.kid) == (STATUS_URI, 94_567, _kid(ISSUER_KEY))
    assert note.as_json() == {
        "iss": ISSUER, "jti": note.jti, "iat": IAT, "nbf": IAT, "exp": EXP,
        "amount": {"value": "1250.00", "currency": "USD"}, "kid": _kid(ISSUER_KEY),
        "holder_jkt": _kid(HOLDER_KEY),
        "status": {"status_list": {"idx": 94_567, "uri": STATUS_URI}},
    }
    # Verifying without a checks list gives the same note.
    assert notes.verify(NOTE, resolve=resolve, now=NOW) == note


def test_note_format_matches_design() -> None:
    """docs/protocol.md §3 "The credit note", decoded with the standard library: header,
    claims, trailing "~"."""
    assert NOTE.endswith("~") and NOTE.count("~") == 1
    h, p, s = NOTE_JWT.split(".")
    header = json.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4)))
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    assert header == {"alg": "EdDSA", "typ": "dc+sd-jwt", "kid": _kid(ISSUER_KEY)}
    assert claims == {
        "iss": ISSUER, "vct": "urn:compute-credits:note:1",
        "jti": "urn:uuid:00000000-0000-4000-8000-000000000000",
        "iat": IAT, "nbf": IAT, "exp": EXP,
        "amount": {"value": "1250.00", "currency": "USD"},
        "cnf": {"jwk": jose.public_jwk(HOLDER_KEY)},
        "status": {"status_list": {"idx": 94_567, "uri": STATUS_URI}},
    }
    assert len(base64.urlsafe_b64decode(s + "==")) == 64
    assert notes.decode(NOTE) == {"header": header, "claims": claims}


def test_new_jti_is_a_version_4_uuid() -> None:
    assert notes.new_jti(bytes(16)) == "urn:uuid:00000000-0000-4000-8000-000000000000"
    assert notes.new_jti(b"\xff" * 16) == "urn:uuid:ffffffff-ffff-4fff-bfff-ffffffffffff"
    value = uuid.UUID(notes.new_jti(bytes(range(16)))[len("urn:uuid:"):])
    assert (value.version, value.variant) == (4, uuid.RFC_4122)


def test_present_then_verify_presentation() -> None:
    presentation = _present()
    note_part, _, kb = presentation.partition("~")
    assert note_part + "~" == NOTE
    assert kb.count(".") == 2
    checks: notes.Checks = []
    result = notes.verify_presentation(presentation, resolve=resolve, audience=AUD, now=NOW,
                                       nonce_ok=nonce_ok, checks=checks)
    assert checks == [(name, True) for name in PRESENTATION_CHECKS]
    assert (result.nonce, result.iat) == (NONCE, NOW)
    assert result.note == notes.verify(NOTE, resolve=resolve, now=NOW)
    decoded = notes.decode(presentation)
    assert decoded["kb_jwt"] == {
        "header": {"alg": "EdDSA", "typ": "kb+jwt"},
        "claims": {"iat": NOW, "aud": AUD, "nonce": NONCE, "sd_hash": notes.sd_hash(NOTE)},
    }
    # A presentation is also accepted where a note is expected (its note part is checked).
    assert notes.verify(presentation, resolve=resolve, now=NOW).jti == result.note.jti
    # Without nonce_ok only the nonce's form is checked.
    assert notes.verify_presentation(presentation, resolve=resolve, audience=AUD,
                                     now=NOW).nonce == NONCE


def test_present_refuses_a_presentation() -> None:
    assert outcome(lambda: _present(_present())) == "malformed"


def test_sd_hash_by_hand() -> None:
    """RFC 9901 §4.3.1: base64url (no padding) SHA-256 over the ASCII `<JWT>~`."""
    by_hand = _b64(hashlib.sha256((NOTE_JWT + "~").encode("ascii")).digest())
    assert len(by_hand) == 43 and "=" not in by_hand
    assert notes.sd_hash(NOTE) == by_hand
    kb = _present().split("~")[1]
    kb_claims = json.loads(base64.urlsafe_b64decode(kb.split(".")[1] + "=="))
    assert kb_claims["sd_hash"] == by_hand
    # The hash covers the "~": without it the value differs.
    assert _b64(hashlib.sha256(NOTE_JWT.encode()).digest()) != by_hand


def test_boundaries_that_still_verify() -> None:
    """The last second of every window still verifies (60 s skew, docs/protocol.md §5
    "Verification, in order")."""
    cases: list[tuple[str, Callable[[], object]]] = [
        ("expires in 1 s", lambda: notes.verify(NOTE, resolve=resolve, now=EXP + 59)),
        ("iat 60 s ahead", lambda: notes.verify(NOTE, resolve=resolve, now=IAT - 60)),
        ("retired key, 60 s after retirement", lambda: notes.verify(
            _note(key=RETIRED_KEY, iat=RETIRED_AT + 60), resolve=resolve, now=NOW)),
        ("retired key, before retirement", lambda: notes.verify(
            _note(key=RETIRED_KEY, iat=RETIRED_AT - 100), resolve=resolve, now=NOW)),
        ("compromised key, 1 s before compromise", lambda: notes.verify(
            _note(key=COMPROMISED_KEY, iat=COMPROMISED_AT - 1), resolve=resolve, now=NOW)),
        ("second published key", lambda: notes.verify(
            _note(key=SECOND_KEY), resolve=resolve, now=NOW)),
        ("smallest amount", lambda: notes.verify(_note(micros=1), resolve=resolve, now=NOW)),
        ("largest amount", lambda: notes.verify(
            _note(micros=10**12 * 10**6), resolve=resolve, now=NOW)),
        ("other currency", lambda: notes.verify(
            _note(currency="EUR"), resolve=resolve, now=NOW)),
        ("alg Ed25519 (RFC 9864)", lambda: notes.verify(
            _sign(_header(alg="Ed25519"), _claims()) + "~", resolve=resolve, now=NOW)),
        ("KB 6 min old", lambda: notes.verify_presentation(
            _present(iat=NOW - 360), resolve=resolve, audience=AUD, now=NOW)),
        ("KB 60 s ahead", lambda: notes.verify_presentation(
            _present(iat=NOW + 60), resolve=resolve, audience=AUD, now=NOW)),
        ("nonce of 22 chars", lambda: notes.verify_presentation(
            _present(nonce=NONCE_22), resolve=resolve, audience=AUD, now=NOW,
            nonce_ok=nonce_ok)),
        ("nonce of 128 chars", lambda: notes.verify_presentation(
            _present(nonce=NONCE_128), resolve=resolve, audience=AUD, now=NOW,
            nonce_ok=nonce_ok)),
    ]
    assert {name: outcome(call) for name, call in cases} == {name: "valid" for name, _ in cases}


def test_ignore_expiry_serves_only_expiry() -> None:
    late = EXP + 10**6
    assert notes.verify(NOTE, resolve=resolve, now=late, ignore_expiry=True).jwt == NOTE_JWT
    assert outcome(lambda: notes.verify(NOTE, resolve=resolve, now=IAT - 61,
                                        ignore_expiry=True)) == "not_yet_valid"
    h, p, s = NOTE_JWT.split(".")
    assert outcome(lambda: notes.verify(f"{h}.{p}.{_flip_first(s)}~", resolve=resolve,
                                        now=late, ignore_expiry=True)) == "bad_signature"


# -- independent verifiers (STYLE habit 7) ----------------------------------------------------


def _sample_notes() -> Iterator[tuple[str, Ed25519PrivateKey]]:
    holders = [HOLDER_KEY, OTHER_HOLDER_KEY, _key(7)]
    for i in range(6):
        holder = holders[i % 3]
        yield _note(key=(ISSUER_KEY, SECOND_KEY)[i % 2], micros=(i + 1) * 1_234_567,
                    holder=holder, idx=i * 7919, seed=i, iat=IAT + i), holder


def _joserfc_decode(token: str, jwk: dict[str, Any], alg: str = "EdDSA") -> Any:
    # joserfc warns that the name "EdDSA" is deprecated by RFC 9864; notes are signed with it
    # (docs/protocol.md §2 "JOSE rules (every signed thing)").
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RFC 9864")
        return jose_jwt.decode(token, OKPKey.import_key(jwk), algorithms=[alg])


def test_notes_verify_in_pyjwt() -> None:
    """Every note's JWT verifies in PyJWT with a key set built from our JWKS."""
    key_set = pyjwt.PyJWKSet.from_dict(JWKS)
    for note, _holder in _sample_notes():
        token = note[:-1]
        header = pyjwt.get_unverified_header(token)
        assert header["typ"] == "dc+sd-jwt"
        # PyJWT reads the wall clock; time claims are checked with a pinned `now` by
        # notes.verify and by joserfc's claims registry below.
        claims = pyjwt.decode(
            token, key=key_set[header["kid"]], algorithms=["EdDSA"], issuer=ISSUER,
            options={"require": ["exp", "iat", "nbf", "iss", "jti"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False})
        assert claims == notes.decode(note)["claims"]
        ours = notes.verify(note, resolve=resolve, now=NOW + 10)
        assert ours.amount.as_json() == claims["amount"]
    tampered = NOTE_JWT[:-2] + ("A" if NOTE_JWT[-2] != "A" else "B") + NOTE_JWT[-1]
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(tampered, key=key_set[_kid(ISSUER_KEY)], algorithms=["EdDSA"],
                     options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})


def test_notes_verify_in_joserfc() -> None:
    registry = JWTClaimsRegistry(now=NOW, leeway=60, iss={"essential": True, "value": ISSUER},
                                 jti={"essential": True}, exp={"essential": True},
                                 nbf={"essential": True}, iat={"essential": True})
    by_kid = {jwk["kid"]: jwk for jwk in JWKS["keys"]}
    for note, _holder in _sample_notes():
        token = note[:-1]
        header = pyjwt.get_unverified_header(token)
        decoded = _joserfc_decode(token, by_kid[header["kid"]])
        registry.validate(decoded.claims)
        assert decoded.header == notes.decode(note)["header"]
        assert decoded.claims == notes.decode(note)["claims"]
    with pytest.raises(BadSignatureError):
        _joserfc_decode(NOTE_JWT[:-3] + "AAA", by_kid[_kid(ISSUER_KEY)])


def test_kb_jwts_verify_in_pyjwt_and_joserfc() -> None:
    """Every KB-JWT verifies against the holder's public JWK; its sd_hash is the note's."""
    registry = JWTClaimsRegistry(now=NOW, leeway=60, aud={"essential": True, "value": AUD},
                                 iat={"essential": True}, nonce={"essential": True})
    for note, holder in _sample_notes():
        presentation = _present(note, holder=holder)
        kb = presentation.split("~")[1]
        holder_jwk = notes.decode(note)["claims"]["cnf"]["jwk"]
        assert holder_jwk == jose.public_jwk(holder)
        by_hand = _b64(hashlib.sha256(note.encode("ascii")).digest())
        claims = pyjwt.decode(kb, key=pyjwt.PyJWK(holder_jwk), algorithms=["EdDSA"],
                              audience=AUD, options={"require": ["iat", "aud"],
                                                     "verify_iat": False})
        assert claims == {"iat": NOW, "aud": AUD, "nonce": NONCE, "sd_hash": by_hand}
        assert pyjwt.get_unverified_header(kb) == {"alg": "EdDSA", "typ": "kb+jwt"}
        decoded = _joserfc_decode(kb, holder_jwk)
        registry.validate(decoded.claims)
        assert decoded.claims == claims
        assert notes.verify_presentation(presentation, resolve=resolve, audience=AUD,
                                         now=NOW, nonce_ok=nonce_ok).note.jwt == note[:-1]
    # The holder's key is what verifies: another key does not.
    kb = _present().split("~")[1]
    with pytest.raises(pyjwt.InvalidSignatureError):
        pyjwt.decode(kb, key=pyjwt.PyJWK(jose.public_jwk(OTHER_HOLDER_KEY)),
                     algorithms=["EdDSA"], audience=AUD, options={"verify_iat": False})


def test_tokens_from_other_libraries_verify_here() -> None:
    """Interop the other way: a note signed by PyJWT, one signed by joserfc with the
    RFC 9864 name `Ed25519`, and a KB-JWT signed by PyJWT all verify."""
    claims = _claims()
    by_pyjwt = pyjwt.encode(claims, ISSUER_KEY, algorithm="EdDSA",
                            headers={"typ": "dc+sd-jwt", "kid": _kid(ISSUER_KEY)}) + "~"
    private_jwk: dict[str, Any] = {**jose.public_jwk(ISSUER_KEY),
                   "d": _b64(ISSUER_KEY.private_bytes_raw())}
    by_joserfc = str(jose_jwt.encode(
        {"alg": "Ed25519", "typ": "dc+sd-jwt", "kid": _kid(ISSUER_KEY)}, claims,
        OKPKey.import_key(private_jwk), algorithms=["Ed25519"])) + "~"
    for note in (by_pyjwt, by_joserfc):
        assert notes.verify(note, resolve=resolve, now=NOW).jti == claims["jti"]
    kb = pyjwt.encode({"iat": NOW, "aud": AUD, "nonce": NONCE, "sd_hash": notes.sd_hash(NOTE)},
                      HOLDER_KEY, algorithm="EdDSA", headers={"typ": "kb+jwt"})
    assert notes.verify_presentation(NOTE + kb, resolve=resolve, audience=AUD, now=NOW,
                                     nonce_ok=nonce_ok).nonce == NONCE


# -- the tamper corpus -------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One tampered input and the exact code it must be refused with."""

    id: str
    text: object
    code: str
    presentation: bool = False
    now: int = NOW

    def run(self, checks: notes.Checks | None = None) -> str:
        if self.presentation:
            return outcome(lambda: notes.verify_presentation(
                self.text, resolve=resolve, audience=AUD, now=self.now, nonce_ok=nonce_ok,
                checks=checks))
        return outcome(lambda: notes.verify(self.text, resolve=resolve, now=self.now,
                                            checks=checks))


def _note_cases() -> Iterator[Case]:
    h, p, s = NOTE_JWT.split(".")
    kb_header = jose.b64url_encode(_json({"alg": "EdDSA", "typ": "kb+jwt"}))
    claims = _claims()
    pad = "x" * jose.MAX_TOKEN_BYTES

    # Serialisation and size (docs/protocol.md §2 "JOSE rules (every signed thing)" and
    # §3 "The credit note").
    yield Case("not a string", NOTE.encode(), "malformed")
    yield Case("none", None, "malformed")
    yield Case("empty", "", "malformed")
    yield Case("no tilde", NOTE_JWT, "malformed")
    yield Case("only a tilde", "~", "malformed")
    yield Case("disclosure present", NOTE_JWT + "~abc~", "malformed")
    yield Case("two disclosures", NOTE_JWT + "~WyJhIiwiYiJd~WyJjIl0~", "malformed")
    yield Case("empty disclosure", NOTE_JWT + "~~", "malformed")
    yield Case("two parts", f"{h}.{p}~", "malformed")
    yield Case("four parts", f"{h}.{p}.{s}.{s}~", "malformed")
    yield Case("oversized", _resigned(pad=pad), "too_large")
    yield Case("oversized garbage", "A" * 20_000 + "~", "too_large")
    flattened = json.dumps({"protected": h, "payload": p, "signature": s})
    yield Case("JWS JSON serialisation", flattened, "unsupported_alg")
    yield Case("JWS JSON serialisation with tilde", flattened + "~", "unsupported_alg")
    yield Case("JWS general JSON serialisation",
               json.dumps({"payload": p, "signatures": [{"protected": h, "signature": s}]}),
               "unsupported_alg")

    # base64url (RFC 7515 §2: unpadded, URL-safe alphabet, canonical).
    yield Case("header padded", f"{h}{'=' * (-len(h) % 4)}.{p}.{s}~", "malformed")
    yield Case("payload with +", f"{h}.+{p[1:]}.{s}~", "malformed")
    yield Case("payload with /", f"{h}.{p[:-1]}/.{s}~", "malformed")
    yield Case("signature padded", f"{h}.{p}.{s}==~", "malformed")
    yield Case("signature with space", f"{h}.{p}.{s[:40]} {s[41:]}~", "malformed")
    yield Case("payload with newline", f"{h}.{p[:50]}\n{p[50:]}.{s}~", "malformed")
    yield Case("non-ASCII in header", f"{h[:-1]}é.{p}.{s}~", "malformed")
    yield Case("signature trailing bits", f"{h}.{p}.{s[:-1]}B~", "malformed")
    yield Case("signature 63 bytes",
               f"{h}.{p}.{jose.b64url_encode(jose.b64url_decode(s)[:63])}~", "bad_signature")
    yield Case("signature empty", f"{h}.{p}.~", "bad_signature")

    # Header (RFC 7515 §4.1, docs/protocol.md §2 "JOSE rules (every signed thing)").
    yield Case("KB-JWT header swapped onto a note", f"{kb_header}.{p}.{s}~", "malformed")
    yield Case("KB-JWT header, re-signed",
               _sign({"alg": "EdDSA", "typ": "kb+jwt"}, claims) + "~", "malformed")
    yield Case("typ JWT", _resigned(header=_header(typ="JWT")), "malformed")
    yield Case("typ missing", _resigned(header=_header(typ=_DROP)), "malformed")
    yield Case("typ vc+sd-jwt", _resigned(header=_header(typ="vc+sd-jwt")), "malformed")
    yield Case("alg none", f"{jose.b64url_encode(_json(_header(alg='none')))}.{p}.~",
               "unsupported_alg")
    yield Case("alg none with signature", _resigned(header=_header(alg="none")),
               "unsupported_alg")
    yield Case("alg NONE", _resigned(header=_header(alg="NONE")), "unsupported_alg")
    hs256_input = f"{jose.b64url_encode(_json(_header(alg='HS256')))}.{p}"
    hs256 = hs256_input + "." + jose.b64url_encode(hashlib.sha256(
        hs256_input.encode()).digest())  # shape of an HMAC, keyed with nothing secret
    yield Case("alg HS256", hs256 + "~", "unsupported_alg")
    yield Case("alg RS256", _resigned(header=_header(alg="RS256")), "unsupported_alg")
    yield Case("alg ES256", _resigned(header=_header(alg="ES256")), "unsupported_alg")
    yield Case("alg missing", _resigned(header=_header(alg=_DROP)), "unsupported_alg")
    yield Case("alg lower case", _resigned(header=_header(alg="eddsa")), "unsupported_alg")
    yield Case("alg is a list", _resigned(header=_header(alg=["EdDSA"])), "unsupported_alg")
    yield Case("alg is an object", _resigned(header=_header(alg={"EdDSA": 1})),
               "unsupported_alg")
    yield Case("crit header", _resigned(header=_header(crit=["exp"])), "malformed")
    yield Case("jku header", _resigned(header=_header(jku=ISSUER + "/jwks.json")), "malformed")
    yield Case("jwk header", _resigned(header=_header(jwk=jose.public_jwk(ISSUER_KEY))),
               "malformed")
    yield Case("x5u header", _resigned(header=_header(x5u=ISSUER + "/cert.pem")), "malformed")
    yield Case("x5c header", _resigned(header=_header(x5c=["MIIBIjAN"])), "malformed")
    yield Case("duplicate kid in header", _sign(
        b'{"alg":"EdDSA","typ":"dc+sd-jwt","kid":"' + _kid(SECOND_KEY).encode() + b'","kid":"'
        + _kid(ISSUER_KEY).encode() + b'"}', claims) + "~", "malformed")

    # Keys (docs/keys.md, "Lifecycle"): looked up by kid only in the issuer's own JWKS
    # (docs/protocol.md §2 "JOSE rules (every signed thing)").
    yield Case("kid of another published key", _note(kid=_kid(SECOND_KEY)), "bad_signature")
    yield Case("kid unknown", _note(kid=_kid(UNPUBLISHED_KEY)), "unknown_key")
    yield Case("signed by an unpublished key", _note(key=UNPUBLISHED_KEY, kid=_kid(ISSUER_KEY)),
               "bad_signature")
    yield Case("unpublished key, own kid", _note(key=UNPUBLISHED_KEY), "unknown_key")
    yield Case("kid missing", _resigned(header=_header(kid=_DROP)), "unknown_key")
    yield Case("kid empty", _resigned(header=_header(kid="")), "unknown_key")
    yield Case("kid a number", _resigned(header=_header(kid=7)), "unknown_key")
    yield Case("retired key, 61 s after retirement",
               _note(key=RETIRED_KEY, iat=RETIRED_AT + 61), "key_revoked")
    yield Case("retired key, long after retirement", _note(key=RETIRED_KEY), "key_revoked")
    yield Case("compromised key, at compromise",
               _note(key=COMPROMISED_KEY, iat=COMPROMISED_AT), "key_revoked")
    yield Case("compromised key, after compromise",
               _note(key=COMPROMISED_KEY, iat=COMPROMISED_AT + 1), "key_revoked")
    yield Case("compromised kid on a note signed by the active key",
               _note(kid=_kid(COMPROMISED_KEY)), "key_revoked")
    yield Case("untrusted issuer", _note(issuer=UNTRUSTED), "untrusted_issuer")
    yield Case("untrusted issuer, own key", _note(issuer=UNTRUSTED, key=UNPUBLISHED_KEY),
               "untrusted_issuer")

    # Validity window (60 s skew).
    yield Case("expired", NOTE, "expired", now=EXP + 60)
    yield Case("long expired", NOTE, "expired", now=EXP + 10**6)
    yield Case("not yet valid", NOTE, "not_yet_valid", now=IAT - 61)
    yield Case("nbf in the future", _resigned(nbf=NOW + 61), "not_yet_valid")
    yield Case("iat in the future", _resigned(iat=NOW + 61), "not_yet_valid")

    # Claims (docs/protocol.md §3 "The credit note"), each re-signed with the real key so
    # only the claim is wrong.
    yield Case("extra claim", _resigned(sub="someone"), "malformed")
    for name in sorted(claims):
        yield Case(f"missing {name}", _sign(_header(), _claims(**{name: _DROP})) + "~",
                   "malformed")
    yield Case("vct wrong", _resigned(vct="urn:compute-credits:note:2"), "malformed")
    yield Case("iss not a URL", _resigned(iss="acme"), "malformed")
    yield Case("iss a list", _resigned(iss=[ISSUER]), "malformed")
    yield Case("jti not a uuid", _resigned(jti="note-1"), "malformed")
    yield Case("jti uuid v1", _resigned(jti="urn:uuid:00000000-0000-1000-8000-000000000000"),
               "malformed")
    yield Case("jti upper case", _resigned(jti="urn:uuid:ABCDEF00-0000-4000-8000-000000000000"),
               "malformed")
    yield Case("iat a string", _resigned(iat=str(IAT)), "malformed")
    yield Case("iat a float", _resigned(iat=IAT + 0.5), "malformed")
    yield Case("iat a bool", _resigned(iat=True), "malformed")
    yield Case("exp before nbf", _resigned(exp=IAT - 1), "malformed")
    yield Case("exp equals nbf", _resigned(exp=IAT), "malformed")
    yield Case("exp in milliseconds", _resigned(exp=EXP * 1000), "malformed")
    yield Case("nbf zero", _resigned(nbf=0), "malformed")
    yield Case("cnf extra member", _resigned(cnf={"jwk": jose.public_jwk(HOLDER_KEY), "kid": "x"}),
               "malformed")
    yield Case("cnf jwk private", _resigned(cnf={"jwk": {
        **jose.public_jwk(HOLDER_KEY), "d": _b64(HOLDER_KEY.private_bytes_raw())}}), "malformed")
    yield Case("cnf jwk X25519", _resigned(cnf={"jwk": {
        **jose.public_jwk(HOLDER_KEY), "crv": "X25519"}}), "malformed")
    yield Case("cnf jwk short x", _resigned(cnf={"jwk": {
        "kty": "OKP", "crv": "Ed25519", "x": _b64(bytes(31))}}), "malformed")
    yield Case("cnf jwk wrong kid", _resigned(cnf={"jwk": {
        **jose.public_jwk(HOLDER_KEY), "kid": _kid(ISSUER_KEY)}}), "malformed")
    yield Case("cnf jwk alg RS256", _resigned(cnf={"jwk": {
        **jose.public_jwk(HOLDER_KEY), "alg": "RS256"}}), "unsupported_alg")
    yield Case("cnf jwk x is a list", _resigned(cnf={"jwk": {
        "kty": "OKP", "crv": "Ed25519", "x": [jose.public_jwk(HOLDER_KEY)["x"]]}}), "malformed")
    yield Case("cnf jwk alg is a list", _resigned(cnf={"jwk": {
        **jose.public_jwk(HOLDER_KEY), "alg": ["EdDSA"]}}), "unsupported_alg")
    yield Case("status idx negative", _resigned(
        status={"status_list": {"idx": -1, "uri": STATUS_URI}}), "malformed")
    yield Case("status idx a string", _resigned(
        status={"status_list": {"idx": "1", "uri": STATUS_URI}}), "malformed")
    yield Case("status uri missing", _resigned(status={"status_list": {"idx": 1}}), "malformed")
    yield Case("status extra member", _resigned(
        status={"status_list": {"idx": 1, "uri": STATUS_URI}, "x": 1}), "malformed")

    # Strict JSON: hand-built payload bytes, properly signed.
    body = _json(claims)
    yield Case("duplicate amount (smuggling)", _sign(
        _header(), b'{"amount":{"value":"999999.00","currency":"USD"},' + body[1:]) + "~",
        "malformed")
    yield Case("duplicate iss", _sign(_header(), b'{"iss":"' + UNTRUSTED.encode() + b'",'
                                      + body[1:]) + "~", "malformed")
    jwk_x = jose.public_jwk(HOLDER_KEY)["x"].encode()
    yield Case("duplicate x in cnf.jwk", _sign(_header(), body.replace(
        b'"x":"' + jwk_x + b'"', b'"x":"' + jose.public_jwk(OTHER_HOLDER_KEY)["x"].encode()
        + b'","x":"' + jwk_x + b'"')) + "~", "malformed")
    yield Case("payload a list", _sign(_header(), b"[1]") + "~", "malformed")
    yield Case("payload not UTF-8", _sign(_header(), b'{"iss":"\xff"}') + "~", "malformed")
    yield Case("trailing garbage in payload", _sign(_header(), body + b"x") + "~", "malformed")

    # Amounts (docs/protocol.md §1 "Amounts"): a properly signed note with a bad amount.
    nan = json.dumps({**claims, "amount": {"value": float("nan"), "currency": "USD"}})
    assert "NaN" in nan
    yield Case("amount NaN token", _sign(_header(), nan.encode()) + "~", "malformed")
    inf = json.dumps({**claims, "iat": float("inf")})
    yield Case("iat Infinity token", _sign(_header(), inf.encode()) + "~", "malformed")
    for value in (1250.5, 1250, "-1250.00", "-0.01", "0", "0.00", "0.000000", "1e3", "1E3",
                  "1.1234567", "1000000000000.000001", "10000000000000", "NaN", "Infinity",
                  "1,250.00", " 1250.00", "01250.00", "", None, ["1250.00"]):
        yield Case(f"amount {value!r}", _resigned(amount={"value": value, "currency": "USD"}),
                   "amount_invalid")
    for amount in ({"value": "1.00", "currency": "usd"}, {"value": "1.00", "currency": "US"},
                   {"value": "1.00"}, {"value": "1.00", "currency": "USD", "x": 1},
                   "1250.00", 1250, None):
        yield Case(f"amount object {amount!r}", _resigned(amount=amount), "amount_invalid")


def _presentation_cases() -> Iterator[Case]:
    good = _present()
    kb = good.split("~")[1]
    kh, kp, ks = kb.split(".")
    note_header = NOTE_JWT.split(".")[0]
    other_note = _note(seed=9, micros=1_000_000)
    yield Case("missing KB-JWT", NOTE, "holder_binding_failed", True)
    yield Case("disclosure and KB-JWT", NOTE_JWT + "~abc~" + kb, "malformed", True)
    yield Case("KB-JWT as the note, verify", kb + "~", "malformed", False)
    yield Case("note errors come first", _present(_note(exp=NOW - 100, iat=NOW - 200)),
               "expired", True)
    yield Case("oversized presentation", _kb(pad="x" * jose.MAX_TOKEN_BYTES), "too_large", True)
    yield Case("wrong holder key", _present(holder=OTHER_HOLDER_KEY), "holder_binding_failed",
               True)
    yield Case("KB signed by the issuer", _present(holder=ISSUER_KEY), "holder_binding_failed",
               True)
    yield Case("note header on the KB-JWT", f"{NOTE}{note_header}.{kp}.{ks}",
               "holder_binding_failed", True)
    yield Case("KB typ JWT", _kb(header={"alg": "EdDSA", "typ": "JWT"}),
               "holder_binding_failed", True)
    yield Case("KB typ missing", _kb(header={"alg": "EdDSA"}), "holder_binding_failed", True)
    none_header = jose.b64url_encode(_json({"alg": "none", "typ": "kb+jwt"}))
    yield Case("KB alg none", f"{NOTE}{none_header}.{kp}.", "holder_binding_failed", True)
    yield Case("KB alg HS256", _kb(header={"alg": "HS256", "typ": "kb+jwt"}),
               "holder_binding_failed", True)
    yield Case("KB alg a list", _kb(header={"alg": ["EdDSA"], "typ": "kb+jwt"}),
               "holder_binding_failed", True)
    yield Case("KB signature flipped", f"{NOTE}{kh}.{kp}.{_flip_first(ks)}",
               "holder_binding_failed", True)
    yield Case("KB bad base64", f"{NOTE}{kh}.{kp}=.{ks}", "holder_binding_failed", True)
    yield Case("KB two parts", f"{NOTE}{kh}.{kp}", "holder_binding_failed", True)
    yield Case("sd_hash of another note", _kb(sd_hash=notes.sd_hash(other_note)),
               "holder_binding_failed", True)
    yield Case("KB of another note", NOTE + _present(other_note).split("~")[1],
               "holder_binding_failed", True)
    yield Case("sd_hash without the tilde",
               _kb(sd_hash=_b64(hashlib.sha256(NOTE_JWT.encode()).digest())),
               "holder_binding_failed", True)
    yield Case("sd_hash hex", _kb(sd_hash=hashlib.sha256(NOTE.encode()).hexdigest()),
               "holder_binding_failed", True)
    yield Case("sd_hash missing", _kb(sd_hash=_DROP), "holder_binding_failed", True)
    yield Case("KB extra claim", _kb(jti="x"), "holder_binding_failed", True)
    yield Case("KB iat a string", _kb(iat=str(NOW)), "holder_binding_failed", True)
    yield Case("KB iat a float", _kb(iat=NOW + 0.5), "holder_binding_failed", True)
    yield Case("stale KB (361 s)", _present(iat=NOW - 361), "holder_binding_failed", True)
    yield Case("stale KB (1 day)", _present(iat=NOW - 86_400), "holder_binding_failed", True)
    yield Case("KB in the future (61 s)", _present(iat=NOW + 61), "holder_binding_failed", True)
    yield Case("wrong audience", _present(aud=ISSUER), "audience_mismatch", True)
    yield Case("audience as a list", _kb(aud=[AUD]), "audience_mismatch", True)
    yield Case("audience trailing slash", _present(aud=AUD + "/"), "audience_mismatch", True)
    yield Case("nonce rejected by nonce_ok", _present(nonce="z" * 32), "nonce_invalid", True)
    yield Case("nonce of 21 chars", _present(nonce=NONCE_22[:-1]), "nonce_invalid", True)
    yield Case("nonce of 129 chars", _present(nonce=NONCE_128 + "m"), "nonce_invalid", True)
    yield Case("nonce not a string", _kb(nonce=12345678901234567890123), "nonce_invalid", True)
    yield Case("nonce missing", _kb(nonce=_DROP), "holder_binding_failed", True)


CORPUS = [*_note_cases(), *_presentation_cases()]


def test_corpus_ids_are_unique() -> None:
    assert len({case.id for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[c.id for c in CORPUS])
def test_tamper_corpus(case: Case) -> None:
    assert case.run() == case.code


# Which check a failing code is reported against (a JSON serialisation or a wrong-length
# signature is refused while parsing, i.e. by the format check).
_CHECK_OF = {
    "malformed": {"format"}, "too_large": {"format"}, "unsupported_alg": {"format", "algorithm"},
    "untrusted_issuer": {"issuer_trusted"}, "unknown_key": {"key"}, "key_revoked": {"key"},
    "bad_signature": {"signature", "format"}, "not_yet_valid": {"validity"},
    "expired": {"validity"}, "amount_invalid": {"amount"},
    "holder_binding_failed": {"holder_binding"}, "audience_mismatch": {"audience"},
    "nonce_invalid": {"nonce"},
}


def test_checks_report_each_check_once_in_order() -> None:
    """Every refusal's report: checks in the order of docs/protocol.md §5 "Verification, in
    order", each once, all passed but the last, and the last one is the check the error
    code belongs to."""
    problems = []
    for case in CORPUS:
        checks: notes.Checks = []
        try:
            code = case.run(checks)
        except pytest.fail.Exception:
            continue  # an exception that is not a WalletError: test_tamper_corpus shows it
        names = [name for name, _ in checks]
        order = [PRESENTATION_CHECKS.index(name) for name in names]
        if (len(set(names)) != len(names) or order != sorted(order) or not checks
                or checks[-1][1] or not all(ok for _, ok in checks[:-1])
                or names[-1] not in _CHECK_OF[code]):
            problems.append(f"{case.id} ({code}): {checks}")
    assert not problems, f"{len(problems)} reports, e.g.\n" + "\n".join(problems[:5])


def test_failure_reports() -> None:
    """Exact reports for one failure at each stage."""
    def report(case: Case) -> notes.Checks:
        checks: notes.Checks = []
        case.run(checks)
        return checks

    passed = [(name, True) for name in PRESENTATION_CHECKS]
    h, p, s = NOTE_JWT.split(".")
    assert report(Case("", f"{h}=.{p}.{s}~", "")) == [("format", False)]
    assert report(Case("", _resigned(header=_header(alg="RS256")), "")) == [
        *passed[:1], ("algorithm", False)]
    assert report(Case("", _note(issuer=UNTRUSTED), "")) == [*passed[:2], ("issuer_trusted", False)]
    assert report(Case("", _note(kid=_kid(UNPUBLISHED_KEY)), "")) == [*passed[:3], ("key", False)]
    assert report(Case("", f"{h}.{p}.{_flip_first(s)}~", "")) == [*passed[:4], ("signature", False)]
    assert report(Case("", NOTE, "", now=EXP + 60)) == [*passed[:5], ("validity", False)]
    assert report(Case("", _resigned(amount={"value": "0", "currency": "USD"}), "")) == [
        *passed[:6], ("amount", False)]
    assert report(Case("", _present(holder=OTHER_HOLDER_KEY), "", True)) == [
        *passed[:7], ("holder_binding", False)]
    assert report(Case("", _present(aud=ISSUER), "", True)) == [*passed[:8], ("audience", False)]
    assert report(Case("", _present(nonce="z" * 32), "", True)) == [*passed[:9], ("nonce", False)]


def test_missing_kb_does_not_report_unchecked_note_checks_as_passed() -> None:
    """BUG: without a KB-JWT, verify_presentation stops before verifying the note, yet
    reports every note check (signature included) as passed."""
    h, p, s = NOTE_JWT.split(".")
    forged = f"{h}.{p}.{_flip_first(s)}~"  # bad signature, and no KB-JWT
    checks: notes.Checks = []
    code = Case("", forged, "", True).run(checks)
    assert code in {"holder_binding_failed", "bad_signature"}
    assert ("signature", True) not in checks, checks


# -- flipped characters: every part, through the alphabet ---------------------------------------

_UUID_RE = re.compile(r"urn:uuid:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")
_EXTRA = " +/=é"  # characters outside the base64url alphabet


def _ref_b64(part: object) -> bytes | None:
    """RFC 7515 §2 base64url, independently: None unless unpadded and canonical."""
    if not isinstance(part, str) or len(part) % 4 == 1 or set(part) - set(ALPHABET):
        return None
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    return data if _b64(data) == part else None


def _ref_json(data: bytes | None) -> dict[str, Any] | None:
    """A JSON object without duplicate names or NaN/Infinity (RFC 7515 §5.2), else None."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in items}) != len(items):
            raise ValueError("duplicate member name")
        return dict(items)

    def constant(name: str) -> Any:
        raise ValueError(name)

    if data is None:
        return None
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=pairs,
                           parse_constant=constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _ref_int(value: object) -> bool:
    return type(value) is int


_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P


def _ref_point_ok(raw: bytes) -> bool:
    """RFC 8032 §5.1.3 decoding, independently, plus "not of order 1, 2, 4 or 8"
    (computed: [8]P is not the identity), the holder-key rule of issue 11, hole 7."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return False
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    if (x * x - x2) % _P or (x == 0 and sign):
        return False
    point = (x, y)
    for _ in range(3):
        (x1, y1) = point
        t = _D * x1 * x1 * y1 * y1 % _P
        point = (2 * x1 * y1 * pow(1 + t, -1, _P) % _P,
                 (y1 * y1 + x1 * x1) * pow(1 - t, -1, _P) % _P)
    return point != (0, 1)


def _ref_claims_code(c: dict[str, Any]) -> str | None:
    """Claim shapes of docs/protocol.md §3 "The credit note"; the amount's value is judged
    after the signature."""
    if set(c) != {"iss", "vct", "jti", "iat", "nbf", "exp", "amount", "cnf", "status"} \
            or c["vct"] != "urn:compute-credits:note:1" \
            or not isinstance(c["iss"], str) or not c["iss"].startswith(("https://", "http://")):
        return "malformed"
    m = _UUID_RE.fullmatch(c["jti"]) if isinstance(c["jti"], str) else None
    if m is None or uuid.UUID(m[1]).version != 4 or uuid.UUID(m[1]).variant != uuid.RFC_4122:
        return "malformed"
    iat, nbf, exp = c["iat"], c["nbf"], c["exp"]
    if not (_ref_int(iat) and _ref_int(nbf) and _ref_int(exp)
            and 0 < nbf < exp < 10**11 and 0 < iat < 10**11):
        return "malformed"
    cnf = c["cnf"]
    if not isinstance(cnf, dict) or set(cnf) != {"jwk"}:
        return "malformed"
    jwk = cnf["jwk"]
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" \
            or "d" in jwk:
        return "malformed"
    if jwk.get("alg", "EdDSA") not in ("EdDSA", "Ed25519"):
        return "unsupported_alg"
    raw = _ref_b64(jwk.get("x"))
    if raw is None or len(raw) != 32 or not _ref_point_ok(raw):
        return "malformed"
    canonical = json.dumps({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]},  # RFC 7638 §3
                           sort_keys=True, separators=(",", ":"))
    thumb = _b64(hashlib.sha256(canonical.encode()).digest())
    if "kid" in jwk and jwk["kid"] != thumb:
        return "malformed"
    st_ = c["status"]
    entry = st_.get("status_list") if isinstance(st_, dict) else None
    if not isinstance(entry, dict) or set(st_) != {"status_list"} or set(entry) != {"idx", "uri"} \
            or not _ref_int(entry["idx"]) or entry["idx"] < 0 or not isinstance(entry["uri"], str):
        return "malformed"
    return None


_RAW_KEYS: dict[str, tuple[Ed25519PublicKey, int | None, int | None]] = {
    _kid(ISSUER_KEY): (ISSUER_KEY.public_key(), None, None),
    _kid(SECOND_KEY): (SECOND_KEY.public_key(), None, None),
    _kid(RETIRED_KEY): (RETIRED_KEY.public_key(), RETIRED_AT, None),
    _kid(COMPROMISED_KEY): (COMPROMISED_KEY.public_key(), None, COMPROMISED_AT),
}


def _reference_code(token: str) -> str:
    """An independent model of note verification, stage by stage in the order of
    docs/protocol.md §5 "Verification, in order", up to the signature (a flipped character
    always breaks the signature or something before)."""
    parts = token.split(".")
    if len(parts) != 3:
        return "malformed"
    header = _ref_json(_ref_b64(parts[0]))
    if header is None:
        return "malformed"
    if header.get("alg") not in ("EdDSA", "Ed25519"):
        return "unsupported_alg"
    if {"crit", "jku", "jwk", "x5u", "x5c"} & set(header) or header.get("typ") != "dc+sd-jwt":
        return "malformed"
    claims = _ref_json(_ref_b64(parts[1]))
    signature = _ref_b64(parts[2])
    if claims is None or signature is None:
        return "malformed"
    if len(signature) != 64:
        return "bad_signature"
    code = _ref_claims_code(claims)
    if code is not None:
        return code
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        return "unknown_key"
    if claims["iss"] != ISSUER:
        return "untrusted_issuer"
    if kid not in _RAW_KEYS:
        return "unknown_key"
    key, retired_at, compromised_at = _RAW_KEYS[kid]
    if (compromised_at is not None and claims["iat"] >= compromised_at) \
            or (retired_at is not None and claims["iat"] > retired_at + 60):
        return "key_revoked"
    try:
        key.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        return "bad_signature"
    return "valid"


def _flips(token: str, part: int, positions: int, seed: int) -> Iterator[str]:
    """`token` with one character of one dot-separated part replaced, at sampled positions,
    by every other base64url character and a few characters outside the alphabet."""
    parts = token.split(".")
    text = parts[part]
    rng = random.Random(seed)
    where = sorted(set(rng.sample(range(len(text)), min(positions, len(text))))
                   | {0, len(text) - 1})
    for i in where:
        for char in ALPHABET + _EXTRA:
            if char != text[i]:
                changed = list(parts)
                changed[part] = text[:i] + char + text[i + 1:]
                yield ".".join(changed)


@pytest.mark.parametrize(("part", "positions"), [(0, 200), (1, 60), (2, 24)],
                         ids=["header", "payload", "signature"])
def test_flipped_characters_in_the_note(part: int, positions: int) -> None:
    """Each flip is refused with the code the reference model predicts (never valid)."""
    assert _reference_code(NOTE_JWT) == "valid"
    mismatches: list[str] = []
    seen: dict[str, int] = {}
    for token in _flips(NOTE_JWT, part, positions, seed=8032 + part):
        expected = _reference_code(token)
        assert expected != "valid", token
        got = outcome(partial(notes.verify, token + "~", resolve=resolve, now=NOW))
        seen[got] = seen.get(got, 0) + 1
        if got != expected:
            mismatches.append(f"{token}: got {got}, expected {expected}")
    assert mismatches[:10] == []
    assert sum(seen.values()) > 1000
    assert "malformed" in seen and len(seen) >= 2, seen


@pytest.mark.parametrize("part", [0, 1, 2], ids=["header", "payload", "signature"])
def test_flipped_characters_in_the_kb_jwt(part: int) -> None:
    note_part, _, kb = _present().partition("~")
    seen = set()
    for flipped in _flips(kb, part, 12, seed=9901 + part):
        got = outcome(partial(notes.verify_presentation, f"{note_part}~{flipped}",
                              resolve=resolve, audience=AUD, now=NOW, nonce_ok=nonce_ok))
        seen.add(got)
    assert seen == {"holder_binding_failed"}


# -- any signed JSON: only WalletError escapes -------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=4)
_PLACES = ["header.alg", "header.typ", "header.kid", "claims.iss", "claims.jti", "claims.iat",
           "claims.exp", "claims.amount", "claims.cnf", "claims.status", "jwk.x", "jwk.kty",
           "jwk.crv", "jwk.alg", "jwk.kid", "status_list.idx", "status_list.uri",
           "amount.value", "kb.aud", "kb.nonce", "kb.iat", "kb.sd_hash", "kbheader.alg"]


@settings(derandomize=True, database=None, max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_PLACES), _JSON)
def test_any_signed_json_is_refused_with_a_code(place: str, value: Any) -> None:
    """Whatever JSON value sits in any member, properly signed: a note, or a WalletError."""
    header, claims = _header(), _claims()
    kb_header = {"alg": "EdDSA", "typ": "kb+jwt"}
    kb_claims = {"iat": NOW, "aud": AUD, "nonce": NONCE, "sd_hash": ""}
    where, name = place.split(".")
    target = {"header": header, "claims": claims, "jwk": claims["cnf"]["jwk"],
              "status_list": claims["status"]["status_list"], "amount": claims["amount"],
              "kb": kb_claims, "kbheader": kb_header}[where]
    target[name] = value
    note = _sign(header, claims) + "~"
    if name != "sd_hash":
        kb_claims["sd_hash"] = notes.sd_hash(note)
    presentation = note + _sign(kb_header, kb_claims, HOLDER_KEY)
    outcome(lambda: notes.verify(note, resolve=resolve, now=NOW))
    outcome(lambda: notes.decode(presentation))
    outcome(lambda: notes.verify_presentation(presentation, resolve=resolve, audience=AUD,
                                              now=NOW, nonce_ok=nonce_ok))
