"""Compact JWS, JWK and thumbprints (wallet.core.jose) against published known answers.

Vectors are copied from RFC 8032 §7.1 (Ed25519 TEST 1-3) and RFC 8037 Appendix A (JWK,
RFC 7638 thumbprint, JWS), so the tests need nothing outside the repository.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.core import jose
from wallet.core.errors import (
    BadSignature,
    MalformedToken,
    TokenTooLarge,
    UnknownKey,
    UnsupportedAlg,
    WalletError,
)

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# -- RFC 8032 §7.1 -------------------------------------------------------------------------

RFC8032 = [  # (name, secret, public, message, signature), all hex
    ("TEST 1",
     "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
     "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bac"
     "c61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("TEST 2",
     "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
     "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e"
     "458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("TEST 3",
     "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
     "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290"
     "ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
]

# -- RFC 8037 Appendix A ---------------------------------------------------------------------

A1_PRIVATE_JWK = {"kty": "OKP", "crv": "Ed25519",
                  "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
                  "d": "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}
A2_PUBLIC_JWK = {"kty": "OKP", "crv": "Ed25519",
                 "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
A3_CANONICAL = '{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}'
A3_SHA256_HEX = "90facafea9b1556698540f70c0117a22ea37bd5cf3ed3c47093c1707282b4b89"
A3_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
A4_PAYLOAD = b"Example of Ed25519 signing"
A4_JWS = ("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
          "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg")

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def _a1_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(jose.b64url_decode(A1_PRIVATE_JWK["d"]))


def _flip_bit(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _raw_token(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes,
               key: Ed25519PrivateKey = KEY) -> str:
    """Sign any header and payload (jose.sign only signs alg EdDSA, by design)."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    p = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = jose.b64url_encode(h) + "." + jose.b64url_encode(p)
    return signing_input + "." + jose.b64url_encode(key.sign(signing_input.encode()))


def _code(exc: pytest.ExceptionInfo[WalletError]) -> str:
    return exc.value.code


# -- RFC 8032 ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "secret", "public", "message", "signature"), RFC8032,
                         ids=[v[0] for v in RFC8032])
def test_rfc8032_known_answers(name: str, secret: str, public: str, message: str,
                               signature: str) -> None:
    """RFC 8032 §7.1: the published signature, verified through Jws.verify."""
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    pub = key.public_key()
    assert pub.public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    # The project's JWK of this key carries exactly the published public bytes.
    jwk = jose.public_jwk(key)
    assert jose.b64url_decode(jwk["x"]).hex() == public
    imported = jose.load_public_jwk(jwk)
    good = jose.Jws({}, {}, bytes.fromhex(message), bytes.fromhex(signature))
    good.verify(imported)


@pytest.mark.parametrize(("name", "secret", "public", "message", "signature"), RFC8032,
                         ids=[v[0] for v in RFC8032])
def test_rfc8032_flipped_bits_fail(name: str, secret: str, public: str, message: str,
                                   signature: str) -> None:
    """Any single flipped bit of the signature (or of a non-empty message) fails."""
    pub = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
    sig, msg = bytes.fromhex(signature), bytes.fromhex(message)
    for bit in range(0, 512, 7):
        with pytest.raises(BadSignature) as exc:
            jose.Jws({}, {}, msg, _flip_bit(sig, bit)).verify(pub)
        assert _code(exc) == "bad_signature"
    for bit in range(len(msg) * 8):
        with pytest.raises(InvalidSignature):
            pub.verify(sig, _flip_bit(msg, bit))
    with pytest.raises(BadSignature):
        jose.Jws({}, {}, msg + b"\x00", sig).verify(pub)


# -- RFC 8037 Appendix A / RFC 7638 ------------------------------------------------------------


def test_rfc8037_a1_a2_private_key_gives_the_published_public_jwk() -> None:
    """A.1 → A.2: the public JWK derived from `d` is exactly the published one."""
    assert jose.public_jwk(_a1_private_key()) == A2_PUBLIC_JWK
    assert jose.public_jwk(_a1_private_key().public_key()) == A2_PUBLIC_JWK


def test_rfc8037_a2_public_jwk_imports() -> None:
    key = jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK))
    assert key.jwk == A2_PUBLIC_JWK
    raw = key.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert raw == base64.urlsafe_b64decode(A2_PUBLIC_JWK["x"] + "=")
    assert jose.load_public_jwk(dict(A2_PUBLIC_JWK)).public_bytes(
        Encoding.Raw, PublicFormat.Raw) == raw


def test_rfc8037_a3_rfc7638_thumbprint() -> None:
    """A.3 (RFC 7638 §3): canonical JSON, its SHA-256, and the base64url thumbprint."""
    assert hashlib.sha256(A3_CANONICAL.encode()).hexdigest() == A3_SHA256_HEX
    assert jose.json_compact({"crv": "Ed25519", "kty": "OKP",
                              "x": A2_PUBLIC_JWK["x"]}).decode() == A3_CANONICAL
    assert jose.b64url_decode(A3_THUMBPRINT).hex() == A3_SHA256_HEX
    assert jose.thumbprint(A2_PUBLIC_JWK) == A3_THUMBPRINT
    # Member order and extra members do not change a thumbprint (RFC 7638 §3.2, §3.3).
    shuffled = {"x": A2_PUBLIC_JWK["x"], "kty": "OKP", "crv": "Ed25519", "use": "sig"}
    assert jose.thumbprint(shuffled) == A3_THUMBPRINT
    assert jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK)).kid == A3_THUMBPRINT
    assert jose.PublicKey.from_jwk({**A2_PUBLIC_JWK, "kid": A3_THUMBPRINT}).kid == A3_THUMBPRINT


def test_rfc8037_a4_sign_reproduces_the_published_jws() -> None:
    """A.4: Ed25519 is deterministic, so our JWS is the published one byte for byte."""
    assert jose.sign({"alg": "EdDSA"}, A4_PAYLOAD, _a1_private_key()) == A4_JWS


def test_rfc8037_a5_verifies() -> None:
    """A.5: the published JWS verifies with the A.2 key.

    `jose.parse` only parses JWTs (payload a JSON object, module docstring), and the
    Appendix A payload is plain text, so the parts are decoded with our base64url here.
    """
    header_b64, payload_b64, signature_b64 = A4_JWS.split(".")
    assert jose.json_object(jose.b64url_decode(header_b64)) == {"alg": "EdDSA"}
    assert jose.b64url_decode(payload_b64) == A4_PAYLOAD
    key = jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK)).key
    jws = jose.Jws({"alg": "EdDSA"}, {}, f"{header_b64}.{payload_b64}".encode(),
                   jose.b64url_decode(signature_b64))
    jws.verify(key)
    tampered = jws._replace(signing_input=jws.signing_input.replace(b"RXhh", b"RXhi"))
    with pytest.raises(BadSignature):
        tampered.verify(key)
    # parse() refuses it only because the payload is not a JSON object.
    with pytest.raises(MalformedToken) as exc:
        jose.parse(A4_JWS, typ=None)
    assert _code(exc) == "malformed"


def test_rfc8037_key_signs_a_jwt_that_parse_accepts_and_pyjwt_verifies() -> None:
    """The Appendix A key over a JSON payload: parse + verify, and PyJWT agrees."""
    token = jose.sign({"alg": "EdDSA"}, {"msg": "Example of Ed25519 signing"},
                      _a1_private_key())
    jws = jose.parse(token, typ=None)
    assert jws.header == {"alg": "EdDSA"}
    assert jws.payload == {"msg": "Example of Ed25519 signing"}
    jws.verify(jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK)).key)
    assert pyjwt.decode(token, key=pyjwt.PyJWK(dict(A2_PUBLIC_JWK)).key,
                        algorithms=["EdDSA"]) == {"msg": "Example of Ed25519 signing"}


def test_rfc9864_fully_specified_alg_name_is_accepted() -> None:
    """RFC 9864 §2: `Ed25519` names the same algorithm as `EdDSA` with this curve."""
    token = _raw_token({"alg": "Ed25519"}, {"a": 1})
    jose.parse(token, typ=None).verify(KEY.public_key())


# -- base64url (RFC 7515 §2, RFC 4648 §5) ----------------------------------------------------


@pytest.mark.parametrize(("text", "data"), [
    ("", b""), ("QQ", b"A"), ("QUI", b"AB"), ("QUJD", b"ABC"),
    ("-_-_", bytes.fromhex("fbffbf")),
    ("_w", b"\xff"), ("AP8", b"\x00\xff"),
])
def test_b64url_known_answers(text: str, data: bytes) -> None:
    assert jose.b64url_decode(text) == data
    assert jose.b64url_encode(data) == text


@pytest.mark.parametrize("bad", [
    "QQ==", "QUI=", "QQ=", "=QQ", "QUJD====",              # padding
    "+w", "/w", "a+b/",                                    # standard alphabet
    " QQ", "QQ ", "Q Q", "QQ\n", "\tQUJD", "QU\r\nJD",     # whitespace
    "QQé", "Q\u0410", "QUJ\u00a0", "\uff31\uff31",     # non-ASCII
    "Q", "QUJDR", "QUJDRUZHS",                             # length % 4 == 1
    "QR", "QX", "_x", "QUJ", "QUL", "QUJDRE",              # non-zero trailing bits
    "QQ.", "QQ~", "Q*", "QQ\x00",                          # other characters
])
def test_b64url_refuses_non_canonical(bad: str) -> None:
    with pytest.raises(MalformedToken) as exc:
        jose.b64url_decode(bad)
    assert _code(exc) == "malformed"


@settings(derandomize=True, database=None, max_examples=300)
@given(st.binary(max_size=80))
def test_b64url_round_trips(data: bytes) -> None:
    text = jose.b64url_encode(data)
    assert set(text) <= set(ALPHABET)
    assert jose.b64url_decode(text) == data
    assert text == base64.urlsafe_b64encode(data).decode().rstrip("=")


@settings(derandomize=True, database=None, max_examples=500)
@given(st.text(alphabet=ALPHABET + "+/= \n\té\x00", max_size=12)
       | st.text(max_size=8))
def test_b64url_decodes_only_canonical_text(text: str) -> None:
    """Whatever decodes re-encodes to exactly the same text; the rest is `malformed`."""
    try:
        data = jose.b64url_decode(text)
    except MalformedToken:
        return
    assert jose.b64url_encode(data) == text


# -- JSON (RFC 7515 §5.2 step 4: no duplicate member names; RFC 8259) --------------------------


@pytest.mark.parametrize("bad", [
    b'{"a":1,"a":1}', b'{"a":1,"a":2}', b'{"a":{"b":1,"b":2}}', b'{"a":[{"c":1,"c":1}]}',
    b'{"a":NaN}', b'{"a":Infinity}', b'{"a":-Infinity}', b'{"a":[NaN]}',
    b"[]", b'"text"', b"1", b"null", b"true",
    b"", b"{", b'{"a":1}x', b'{"a":1}{}', b"{'a':1}", b'{"a":1,}', b'{a:1}',
    b'\xef\xbb\xbf{"a":1}',                   # UTF-8 BOM
    b'{"a":"\xff"}', b'{"a":"\xc3"}',          # not UTF-8
    b'{"a":"x\ny"}', b'{"a":"\x01"}',          # raw control characters
    b'{"a":' + b"9" * 5000 + b"}",             # past Python's int digit limit
    b"[" * 50_000 + b"]" * 50_000,             # recursion
    b'{"a":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
])
def test_json_object_is_strict(bad: bytes) -> None:
    with pytest.raises(MalformedToken) as exc:
        jose.json_object(bad)
    assert _code(exc) == "malformed"


def test_json_object_accepts_plain_objects() -> None:
    assert jose.json_object(b'{"a":1,"b":{"a":1},"c":[1,"\\u00e9"],"d":1.5}') == {
        "a": 1, "b": {"a": 1}, "c": [1, "é"], "d": 1.5}
    assert jose.json_object(' {"é": "✓"} '.encode()) == {"é": "✓"}


def test_json_compact_refuses_nan() -> None:
    assert jose.json_compact({"b": 1, "a": [1, "é"]}) == '{"b":1,"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        jose.json_compact({"a": float("nan")})


# -- compact JWS parsing -----------------------------------------------------------------------


def test_sign_then_parse() -> None:
    token = jose.sign({"alg": "EdDSA", "typ": "x+jwt", "kid": "k"}, {"a": [1, 2]}, KEY)
    jws = jose.parse(token, typ="x+jwt")
    assert jws.header == {"alg": "EdDSA", "typ": "x+jwt", "kid": "k"}
    assert jws.payload == {"a": [1, 2]}
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()
    assert len(jws.signature) == 64
    jws.verify(KEY.public_key())
    assert jose.kid_of(jws) == "k"
    with pytest.raises(BadSignature):
        jws.verify(Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key())


def test_sign_refuses_other_algorithms() -> None:
    for alg in ("none", "HS256", "Ed25519", None):
        with pytest.raises(ValueError):
            jose.sign({"alg": alg}, {}, KEY)


@pytest.mark.parametrize(("header", "code"), [
    ({"alg": "none"}, "unsupported_alg"),
    ({"alg": "HS256"}, "unsupported_alg"),
    ({"alg": "RS256"}, "unsupported_alg"),
    ({"alg": "ES256"}, "unsupported_alg"),
    ({"alg": "eddsa"}, "unsupported_alg"),
    ({"alg": "Ed448"}, "unsupported_alg"),
    ({"alg": None}, "unsupported_alg"),
    ({"alg": 1}, "unsupported_alg"),
    ({"typ": "JWT"}, "unsupported_alg"),
    ({"alg": "EdDSA", "crit": ["exp"]}, "malformed"),
    ({"alg": "EdDSA", "jku": "https://evil.example/jwks"}, "malformed"),
    ({"alg": "EdDSA", "jwk": {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}}, "malformed"),
    ({"alg": "EdDSA", "x5u": "https://evil.example/cert"}, "malformed"),
    ({"alg": "EdDSA", "x5c": ["MIIB"]}, "malformed"),
])
def test_header_refusals(header: dict[str, Any], code: str) -> None:
    """docs/protocol.md §2 "JOSE rules (every signed thing)": EdDSA/Ed25519 only; no `crit`;
    issuer tokens carry no key or key URL."""
    token = _raw_token(header, {"a": 1})
    with pytest.raises(WalletError) as exc:
        jose.parse(token, typ=None)
    assert _code(exc) == code


@pytest.mark.parametrize("name", ["jku", "jwk", "x5u", "x5c"])
def test_key_headers_are_allowed_on_holder_tokens(name: str) -> None:
    token = _raw_token({"alg": "EdDSA", name: "x"}, {"a": 1})
    assert jose.parse(token, typ=None, issuer_token=False).header[name] == "x"


def test_header_alg_of_unhashable_type_is_unsupported_alg() -> None:
    """BUG: `alg not in ACCEPTED_ALGS` (a frozenset) raises TypeError for a list/object."""
    for alg in (["EdDSA"], {"EdDSA": 1}):
        token = _raw_token({"alg": alg}, {"a": 1})
        with pytest.raises(UnsupportedAlg) as exc:
            jose.parse(token, typ=None)
        assert _code(exc) == "unsupported_alg"


def test_typ_is_checked_only_when_asked() -> None:
    token = jose.sign({"alg": "EdDSA", "typ": "kb+jwt"}, {"a": 1}, KEY)
    assert jose.parse(token, typ=None).payload == {"a": 1}
    assert jose.parse(token, typ="kb+jwt").payload == {"a": 1}
    for typ in ("dc+sd-jwt", "KB+JWT", "JWT"):
        with pytest.raises(MalformedToken):
            jose.parse(token, typ=typ)
    untyped = jose.sign({"alg": "EdDSA"}, {"a": 1}, KEY)
    with pytest.raises(MalformedToken):
        jose.parse(untyped, typ="kb+jwt")


def test_parse_refusals() -> None:
    token = jose.sign({"alg": "EdDSA"}, {"a": 1}, KEY)
    h, p, s = token.split(".")
    cases: list[tuple[object, str]] = [
        (b"abc", "malformed"), (None, "malformed"), ("", "malformed"),
        (f"{h}.{p}", "malformed"), (f"{h}.{p}.{s}.", "malformed"),
        (f"{h}.{p}.{s}.{s}", "malformed"),
        (f"{h}=.{p}.{s}", "malformed"), (f"{h}.{p}.{s[:-2]}==", "malformed"),
        (f"{h}.{p}.{s} ", "malformed"), (f"{h}.{p}.{s}\n", "malformed"),
        (f"{h}.{p}.", "bad_signature"),
        (f"{h}.{p}.{jose.b64url_encode(jose.b64url_decode(s)[:63])}", "bad_signature"),
        (f"{h}.{p}.{s}AAAA", "bad_signature"),
        (f"{h}.{jose.b64url_encode(b'[1]')}.{s}", "malformed"),
        (f"{h}.{jose.b64url_encode(b'{}{}')}.{s}", "malformed"),
        (f"{jose.b64url_encode(b'[]')}.{p}.{s}", "malformed"),
        ('{"payload":"' + p + '","protected":"' + h + '","signature":"' + s + '"}',
         "unsupported_alg"),
        ('{"payload":"' + p + '","signatures":[]}', "unsupported_alg"),
    ]
    for text, code in cases:
        with pytest.raises(WalletError) as exc:
            jose.parse(text, typ=None)  # type: ignore[arg-type]
        assert _code(exc) == code, text


def test_kid_of() -> None:
    for header in ({"alg": "EdDSA"}, {"alg": "EdDSA", "kid": ""}, {"alg": "EdDSA", "kid": 7}):
        jws = jose.parse(_raw_token(header, {}), typ=None)
        with pytest.raises(UnknownKey) as exc:
            jose.kid_of(jws)
        assert _code(exc) == "unknown_key"


# -- size (docs/protocol.md §2 "JOSE rules (every signed thing)": nothing over 16 KiB) -------


def _token_of_length(length: int) -> str:
    """A valid signed token exactly `length` characters long."""
    base = len(jose.sign({"alg": "EdDSA", "p": ""}, {"pad": ""}, KEY))
    start = max(0, (length - base) * 3 // 4 - 8)
    for header_pad in range(4):
        for body_pad in range(start, length):
            token = jose.sign({"alg": "EdDSA", "p": "h" * header_pad},
                              {"pad": "x" * body_pad}, KEY)
            if len(token) == length:
                return token
            if len(token) > length:
                break
    raise AssertionError(f"no token of length {length}")


def test_size_limit() -> None:
    assert jose.MAX_TOKEN_BYTES == 16384
    at_limit = _token_of_length(jose.MAX_TOKEN_BYTES)
    jose.parse(at_limit, typ=None).verify(KEY.public_key())
    assert jose.check_size("a" * 16384) == "a" * 16384
    for text in ("a" * 16385, at_limit + "A", "{" * 20000, "." * 16385):
        with pytest.raises(TokenTooLarge) as exc:
            jose.parse(text, typ=None)
        assert _code(exc) == "too_large"
        assert exc.value.status == 413


def test_size_limit_counts_bytes_not_characters() -> None:
    """BUG: 9,000 two-byte characters are 18,000 bytes, over 16 KiB, yet pass check_size."""
    text = "é" * 9000
    assert len(text.encode("utf-8")) > jose.MAX_TOKEN_BYTES
    with pytest.raises(TokenTooLarge):
        jose.check_size(text)


# -- JWK import (RFC 8037 §2, RFC 7517) ------------------------------------------------------


def _x(raw: bytes) -> str:
    return jose.b64url_encode(raw)


GOOD_X = A2_PUBLIC_JWK["x"]


@pytest.mark.parametrize(("jwk", "code"), [
    (dict(A1_PRIVATE_JWK), "malformed"),                                   # private part
    ({**A2_PUBLIC_JWK, "d": ""}, "malformed"),
    ({**A2_PUBLIC_JWK, "kty": "EC"}, "malformed"),
    ({**A2_PUBLIC_JWK, "kty": "RSA"}, "malformed"),
    ({**A2_PUBLIC_JWK, "kty": "oct"}, "malformed"),
    ({"crv": "Ed25519", "x": GOOD_X}, "malformed"),
    ({**A2_PUBLIC_JWK, "crv": "Ed448"}, "malformed"),
    ({**A2_PUBLIC_JWK, "crv": "X25519"}, "malformed"),
    ({"kty": "OKP", "x": GOOD_X}, "malformed"),
    ({"kty": "OKP", "crv": "Ed25519"}, "malformed"),                       # no x
    ({"kty": "OKP", "crv": "Ed25519", "x": 5}, "malformed"),
    ({"kty": "OKP", "crv": "Ed25519", "x": _x(bytes(31))}, "malformed"),   # wrong length
    ({"kty": "OKP", "crv": "Ed25519", "x": _x(bytes(33))}, "malformed"),
    ({"kty": "OKP", "crv": "Ed25519", "x": _x(bytes(57))}, "malformed"),
    ({"kty": "OKP", "crv": "Ed25519", "x": GOOD_X + "="}, "malformed"),    # padded
    ({"kty": "OKP", "crv": "Ed25519", "x": GOOD_X[:-1] + "p"}, "malformed"),  # tail bits
    ({"kty": "OKP", "crv": "Ed25519", "x": GOOD_X.replace("_", "/")}, "malformed"),
    ({**A2_PUBLIC_JWK, "alg": "RS256"}, "unsupported_alg"),
    ({**A2_PUBLIC_JWK, "alg": "ES256"}, "unsupported_alg"),
    ({**A2_PUBLIC_JWK, "alg": "none"}, "unsupported_alg"),
    ({**A2_PUBLIC_JWK, "kid": "not-the-thumbprint"}, "malformed"),
    ({**A2_PUBLIC_JWK, "kid": A3_THUMBPRINT[:-1] + "A"}, "malformed"),
    ([A2_PUBLIC_JWK], "malformed"),
    ("jwk", "malformed"),
    (None, "malformed"),
])
def test_jwk_import_refusals(jwk: object, code: str) -> None:
    # Import the good key first so the refusal also holds on the cached path.
    jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK))
    with pytest.raises(WalletError) as exc:
        jose.PublicKey.from_jwk(jwk)
    assert _code(exc) == code
    if isinstance(jwk, dict) and "kid" not in jwk:
        with pytest.raises(WalletError) as exc2:
            jose.load_public_jwk(jwk)
        assert _code(exc2) == code


@pytest.mark.parametrize(("jwk", "code"), [
    ({"kty": "OKP", "crv": "Ed25519", "x": []}, "malformed"),
    ({"kty": "OKP", "crv": "Ed25519", "x": {"a": 1}}, "malformed"),
    ({**A2_PUBLIC_JWK, "alg": ["EdDSA"]}, "unsupported_alg"),
    ({**A2_PUBLIC_JWK, "alg": {}}, "unsupported_alg"),
])
def test_jwk_members_of_unhashable_type_are_refused(jwk: dict[str, Any], code: str) -> None:
    """BUG: a list/object `x` or `alg` is used as a dict key / set member → TypeError.

    These JWKs arrive in a note's `cnf.jwk`, so the TypeError escapes note verification
    before the signature is checked.
    """
    jose.PublicKey.from_jwk(dict(A2_PUBLIC_JWK))
    with pytest.raises(WalletError) as exc:
        jose.PublicKey.from_jwk(jwk)
    assert _code(exc) == code


def test_jwk_accepts_optional_members() -> None:
    for extra in ({"alg": "EdDSA"}, {"alg": "Ed25519"}, {"use": "sig"},
                  {"kid": A3_THUMBPRINT}):
        assert jose.PublicKey.from_jwk({**A2_PUBLIC_JWK, **extra}).kid == A3_THUMBPRINT


def test_jwks_keys() -> None:
    other = jose.public_jwk(KEY)
    jwks = {"keys": [{**A2_PUBLIC_JWK, "kid": A3_THUMBPRINT, "use": "sig"}, other]}
    keys = jose.jwks_keys(jwks)
    assert set(keys) == {A3_THUMBPRINT, jose.thumbprint(other)}
    assert keys[A3_THUMBPRINT].jwk == A2_PUBLIC_JWK
    for bad, code in [
        ([], "malformed"), ({}, "malformed"), ({"keys": {}}, "malformed"),
        ({"keys": [A1_PRIVATE_JWK]}, "malformed"),
        ({"keys": [other, {"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}, "malformed"),
        ({"keys": [{**other, "alg": "RS256"}]}, "unsupported_alg"),
        ({"keys": [{**other, "kid": A3_THUMBPRINT}]}, "malformed"),
    ]:
        with pytest.raises(WalletError) as exc:
            jose.jwks_keys(bad)
        assert _code(exc) == code, bad


# -- hostile JSON in the core parsers (issue 11, holes 8 and 9) ----------------------------------


def _nested(depth: int) -> bytes:
    return b'{"a":' + b"[" * depth + b"1" + b"]" * depth + b"}"


def test_json_nesting_is_limited_well_below_the_recursion_limit() -> None:
    """Tokens, JWKS, metadata and wallet files nest 4 levels at most; 100 levels parsed
    before (and a value the parser accepted could still break a later json.dumps)."""
    assert jose.json_object(_nested(jose.MAX_JSON_DEPTH - 1))["a"]
    for depth in (jose.MAX_JSON_DEPTH, 100, 900, 50_000):
        with pytest.raises(MalformedToken, match="nested") as exc:
            jose.json_object(_nested(depth))
        assert _code(exc) == "malformed"


def test_fifty_thousand_levels_are_malformed_even_deep_in_a_call_stack() -> None:
    import sys
    import threading

    outcome: list[object] = []

    def deep(n: int) -> None:
        if n:
            deep(n - 1)
            return
        try:
            jose.json_object(_nested(50_000))
        except MalformedToken as err:
            outcome.append(err)
        except RecursionError as err:  # the bug this test is about
            outcome.append(err)

    worker = threading.Thread(target=deep, args=(sys.getrecursionlimit() - 60,))
    worker.start()
    worker.join()
    assert len(outcome) == 1 and isinstance(outcome[0], MalformedToken)


@pytest.mark.parametrize("bad", [
    b'{"a":"x\\u0000y"}', b'{"a\\u0000":1}', b'{"a":["ok","\\u0000"]}',
    b'{"a":{"b":{"c":"\\u0000"}}}',
    b'{"a":"\\ud800"}', b'{"a":"\\udfff x"}', b'{"\\udc00":1}',  # lone surrogates
])
def test_nul_and_lone_surrogates_are_refused(bad: bytes) -> None:
    """Regression: NUL reached PostgreSQL (psycopg DataError, a 500); a lone surrogate
    cannot be encoded to UTF-8 at all."""
    with pytest.raises(MalformedToken) as exc:
        jose.json_object(bad)
    assert _code(exc) == "malformed"


def test_escaped_text_that_is_not_nul_is_kept() -> None:
    assert jose.json_object(b'{"a":"\\\\u0000","b":"\\u00e9\\ud83d\\ude00","c":"\\u0001"}') == {
        "a": "\\u0000", "b": "é😀", "c": "\x01"}


def test_json_value_is_as_strict_but_takes_any_value() -> None:
    assert jose.json_value(b'["a",{"b":1}]') == ["a", {"b": 1}]
    assert jose.json_value(b" null ") is None
    for bad in (b"[" * 50_000 + b"]" * 50_000, b'["\\u0000"]', b'[{"a":1,"a":2}]', b"NaN"):
        with pytest.raises(MalformedToken):
            jose.json_value(bad)


# -- JWKS size (issue 11, hole 9) -----------------------------------------------------------------


def _jwks(count: int) -> dict[str, Any]:
    return {"keys": [jose.public_jwk(Ed25519PrivateKey.from_private_bytes(
        i.to_bytes(32, "big"))) for i in range(1, count + 1)]}


def test_a_jwks_holds_at_most_32_keys() -> None:
    """Regression: a peer's 5,000-key JWKS was accepted (verification 20x slower, and the
    process-wide key cache flushed for everyone)."""
    assert jose.MAX_JWKS_KEYS == 32
    assert len(jose.jwks_keys(_jwks(32))) == 32
    for count in (33, 5000):
        with pytest.raises(MalformedToken, match="at most 32 keys") as exc:
            jose.jwks_keys(_jwks(count) if count < 100 else {"keys": [{}] * count})
        assert _code(exc) == "malformed"
