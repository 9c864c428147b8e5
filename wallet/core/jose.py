"""Compact JWS with EdDSA over Ed25519 (RFC 7515, RFC 8037), JWKs and RFC 7638 thumbprints.

Hand-written on `cryptography` on purpose: one algorithm, strict parsing, fast. What a
verifier refuses (docs/protocol.md §2 "JOSE rules (every signed thing)"):

- anything over 16 KiB (`too_large`), JWS JSON serialisation, `alg` other than `EdDSA`
  or its RFC 9864 name `Ed25519` — including `none` (`unsupported_alg`);
- non-canonical or padded base64url, non-UTF-8 or non-object JSON, duplicate member
  names, `NaN`/`Infinity`, a `crit` header, and on issuer tokens a `jku`, `jwk`, `x5u`
  or `x5c` header: keys are found only by `kid` in the issuer's own JWKS (`malformed`).

Public keys are imported once and cached by their `x` value, so verifying does not
re-parse a JWK per call.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from wallet.core.errors import (
    BadSignature,
    MalformedToken,
    TokenTooLarge,
    UnknownKey,
    UnsupportedAlg,
)

MAX_TOKEN_BYTES = 16 * 1024
ACCEPTED_ALGS = frozenset({"EdDSA", "Ed25519"})
SIGNING_ALG = "EdDSA"
FORBIDDEN_ISSUER_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c"})

_TO_STD = bytes.maketrans(b"-_", b"+/")
_TO_URL = bytes.maketrans(b"+/", b"-_")
# A base64url string of length 4n+2 (4n+3) carries 4 (2) unused bits in its last
# character; they must be zero, or two different strings would decode to one value.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TAIL_OK = {2: frozenset(_ALPHABET[::16]), 3: frozenset(_ALPHABET[::4])}
_PAD = {0: b"", 2: b"==", 3: b"="}


# -- base64url and JSON ------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Encode bytes as unpadded base64url."""
    return binascii.b2a_base64(data, newline=False).translate(_TO_URL).decode("ascii").rstrip("=")


def b64url_decode(text: str) -> bytes:
    """Decode strict, canonical, unpadded base64url or raise `MalformedToken`."""
    rest = len(text) % 4
    # The standard alphabet's "+", "/" and padding are not base64url; strict decoding
    # below refuses every other character outside the alphabet.
    if (rest == 1 or not text.isascii() or "+" in text or "/" in text or "=" in text
            or (rest and text[-1] not in _TAIL_OK[rest])):
        raise MalformedToken("invalid base64url")
    try:
        return binascii.a2b_base64(text.encode("ascii").translate(_TO_STD) + _PAD[rest],
                                   strict_mode=True)
    except binascii.Error:
        raise MalformedToken("invalid base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise MalformedToken("duplicate member name in JSON")
    return result


def _no_constants(name: str) -> Any:
    raise MalformedToken(f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def json_value(data: bytes) -> Any:
    """Parse UTF-8 JSON strictly (see `json_object`), whatever its top-level value."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedToken("invalid JSON") from None
    try:
        # Compact JSON (what every token carries) parses in one pass; anything else takes
        # the decoder's full path (surrounding whitespace), with the same strictness.
        value, end = _DECODER.raw_decode(text)
        if end != len(text):
            raise ValueError("text after the value")
    except RecursionError:
        raise MalformedToken(f"JSON nested more than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        try:
            value = _DECODER.decode(text)
        except RecursionError:
            raise MalformedToken(f"JSON nested more than {MAX_JSON_DEPTH} levels") from None
        except ValueError:
            raise MalformedToken("invalid JSON") from None
    # Cheap tests on the raw bytes decide whether the tree needs a walk: fewer brackets
    # than the depth limit cannot nest too deeply, and NUL or a lone surrogate can only
    # come from a \u escape (raw control characters are refused by the parser).
    strings = b"\\u" in data and (b"\\u0000" in data
                                  or _SURROGATE_ESCAPE.search(data) is not None)
    if strings or data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        _check_tree(value, strings)
    return value


def json_object(data: bytes) -> dict[str, Any]:
    """Parse a UTF-8 JSON object strictly, or raise `MalformedToken`.

    No duplicate member names, no NaN/Infinity, at most `MAX_JSON_DEPTH` levels of
    nesting (never a RecursionError, here or in whoever serialises the value again), and
    no NUL or lone surrogate in any string (they cannot be stored in PostgreSQL text, or
    encoded as UTF-8 at all).
    """
    value = json_value(data)
    if not isinstance(value, dict):
        raise MalformedToken("JSON value is not an object")
    return value


MAX_JSON_DEPTH = 32  # tokens, JWKS, metadata and wallet files nest 4 levels at most
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_tree(value: Any, strings: bool) -> None:
    """Walk a parsed value without recursion: its depth and, if asked, its strings."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise MalformedToken(f"JSON nested more than {MAX_JSON_DEPTH} levels")
            if isinstance(item, dict):
                if strings:
                    for name in item:
                        _check_text(name)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
        elif strings and isinstance(item, str):
            _check_text(item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise MalformedToken("JSON strings must not contain NUL (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedToken("JSON strings must not contain lone surrogates") from None


def json_compact(value: Any) -> bytes:
    """Serialise JSON compactly (no spaces), refusing NaN."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


# -- keys --------------------------------------------------------------------------------


def public_jwk(key: Ed25519PublicKey | Ed25519PrivateKey) -> dict[str, str]:
    """Return the public JWK (RFC 8037) of a key."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of an OKP JWK (base64url)."""
    canonical = json_compact({"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]})
    return b64url_encode(hashlib.sha256(canonical).digest())


# Ed25519 (RFC 8032 §5.1): p = 2^255 - 19, d = -121665/121666, and sqrt(-1) mod p.
_P = 2**255 - 19
_D = (-121665 * pow(121666, -1, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
# The eight points of order 1, 2, 4 or 8, canonically encoded (what libsodium refuses).
# A key among them (the identity above all) "verifies" signatures made without any
# private key: [S]B = R + [k]A holds for A = 0 whenever R = [S]B.
_SMALL_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0000000000000000000000000000000000000000000000000000000000000080",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
))


def check_point(raw: bytes) -> None:
    """Refuse an Ed25519 public key that is not a canonical, curve point of large order.

    RFC 8032 §5.1.3 decoding, strictly: y < p, a point on the curve, no sign bit on
    x = 0; then none of the eight small-order points. Once the encoding is known to be
    canonical, comparing bytes with the eight canonical encodings is exact. (Points of
    mixed order are not refused: signing with one still needs the private scalar.)
    """
    if raw in _SMALL_ORDER:
        raise MalformedToken("the Ed25519 public key is a small-order point, which would"
                             " accept signatures made without a private key")
    encoded = int.from_bytes(raw, "little")
    y, sign = encoded & ((1 << 255) - 1), encoded >> 255
    if y >= _P:
        raise MalformedToken("the Ed25519 public key is not canonically encoded (y >= p)")
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P:
        x = (x * _SQRT_M1) % _P
        if (v * x * x - u) % _P:
            raise MalformedToken("the Ed25519 public key is not a point on the curve")
    if x == 0 and sign:
        # x = 0 only at the identity and the point of order 2: these are their
        # non-canonical twins, small order too.
        raise MalformedToken("the Ed25519 public key is not canonically encoded"
                             " (a small-order point with the sign bit set)")


_KEY_CACHE: dict[str, Ed25519PublicKey] = {}
_KEY_CACHE_LIMIT = 4096


def load_public_jwk(jwk: object) -> Ed25519PublicKey:
    """Import an Ed25519 public JWK (cached), refusing private or foreign keys."""
    if not isinstance(jwk, dict):
        raise MalformedToken("a JWK must be a JSON object")
    x = jwk.get("x")
    cached = _KEY_CACHE.get(x) if isinstance(x, str) else None
    alg = jwk.get("alg", "EdDSA")
    alg_ok = isinstance(alg, str) and alg in ACCEPTED_ALGS
    if cached is not None and jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" \
            and "d" not in jwk and alg_ok:
        return cached
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise MalformedToken("only OKP Ed25519 keys are accepted")
    if "d" in jwk:
        raise MalformedToken("a public JWK must not contain a private part")
    if not alg_ok:
        raise UnsupportedAlg("the JWK names another algorithm")
    if not isinstance(x, str):
        raise MalformedToken("the JWK has no x")
    raw = b64url_decode(x)
    if len(raw) != 32:
        raise MalformedToken("an Ed25519 public key is 32 bytes")
    check_point(raw)
    key = Ed25519PublicKey.from_public_bytes(raw)
    if len(_KEY_CACHE) >= _KEY_CACHE_LIMIT:
        _KEY_CACHE.clear()
    _KEY_CACHE[x] = key
    return key


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A verification key with its `kid` (RFC 7638 thumbprint)."""

    kid: str
    key: Ed25519PublicKey
    jwk: dict[str, str]

    @classmethod
    def from_jwk(cls, jwk: object) -> PublicKey:
        """Import a public JWK (cached by `x`); its `kid`, if any, must be its thumbprint."""
        if type(jwk) is dict and jwk.keys() == _PLAIN_JWK_MEMBERS and type(jwk["x"]) is str \
                and jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519":
            hit = _PUBLIC_CACHE.get(jwk["x"])
            if hit is not None:
                return hit
        key = load_public_jwk(jwk)
        assert isinstance(jwk, dict)
        found = _PUBLIC_CACHE.get(jwk["x"])
        if found is None:
            public = {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]}
            found = cls(thumbprint(public), key, public)
            if len(_PUBLIC_CACHE) >= _KEY_CACHE_LIMIT:
                _PUBLIC_CACHE.clear()
            _PUBLIC_CACHE[jwk["x"]] = found
        if "kid" in jwk and jwk["kid"] != found.kid:
            raise MalformedToken("the JWK's kid is not its RFC 7638 thumbprint")
        return found


_PUBLIC_CACHE: dict[str, PublicKey] = {}
_PLAIN_JWK_MEMBERS = frozenset({"kty", "crv", "x"})
_HEADER_CACHE: dict[tuple[str, str | None, bool], dict[str, Any]] = {}


MAX_JWKS_KEYS = 32


def jwks_keys(jwks: object) -> dict[str, PublicKey]:
    """Map kid → key for every Ed25519 key of a JWKS (RFC 7517), refusing anything else.

    At most `MAX_JWKS_KEYS` keys: an issuer needs a handful (active and retired), and a
    peer publishing thousands would make every verification slower and flush the
    process-wide key cache for everyone. Counted before any key is imported.
    """
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise MalformedToken('a JWKS is an object with a "keys" array')
    if len(jwks["keys"]) > MAX_JWKS_KEYS:
        raise MalformedToken(f"a JWKS holds at most {MAX_JWKS_KEYS} keys; this one has"
                             f" {len(jwks['keys'])}")
    keys: dict[str, PublicKey] = {}
    for jwk in jwks["keys"]:
        key = PublicKey.from_jwk(jwk)
        keys[key.kid] = key
    return keys


# -- compact JWS -------------------------------------------------------------------------


def sign(header: Mapping[str, Any], payload: Mapping[str, Any] | bytes,
         key: Ed25519PrivateKey) -> str:
    """Produce a compact JWS with EdDSA."""
    if header.get("alg") != SIGNING_ALG:
        raise ValueError("this project signs with alg EdDSA only")
    body = payload if isinstance(payload, bytes) else json_compact(payload)
    signing_input = b64url_encode(json_compact(dict(header))) + "." + b64url_encode(body)
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode("ascii")))


class Jws(NamedTuple):
    """A parsed, not yet verified, compact JWS (a NamedTuple: immutable and cheap)."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify(self, key: Ed25519PublicKey) -> None:
        """Check the signature or raise `BadSignature`."""
        try:
            key.verify(self.signature, self.signing_input)
        except InvalidSignature:
            raise BadSignature("signature does not verify") from None


def check_size(token: object, *, max_bytes: int = MAX_TOKEN_BYTES) -> str:
    """Refuse non-strings, JWS JSON serialisation and anything over `max_bytes` (16 KiB;
    status list tokens have their own limit, `status.MAX_TOKEN_BYTES`)."""
    if not isinstance(token, str):
        raise MalformedToken("a token is a string")
    # Characters are bytes for ASCII; anything else is measured in UTF-8.
    if len(token) > max_bytes or (
            not token.isascii() and len(token.encode("utf-8", "surrogatepass")) > max_bytes):
        raise TokenTooLarge(f"tokens are limited to {max_bytes} bytes")
    if token[:1] == "{":
        raise UnsupportedAlg("JWS JSON serialisation is not supported; use compact")
    return token


def parse(token: str, *, typ: str | None, issuer_token: bool = True,
          max_bytes: int = MAX_TOKEN_BYTES) -> Jws:
    """Parse a compact JWS strictly and check its protected header.

    `typ` is the required media type (`None`: no `typ` check). Issuer tokens may not
    carry their own key or a key URL (`jku`, `jwk`, `x5u`, `x5c`).
    """
    check_size(token, max_bytes=max_bytes)
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("a compact JWS has three parts")
    header_b64, payload_b64, signature_b64 = parts
    header = _HEADER_CACHE.get((header_b64, typ, issuer_token))
    if header is None:
        header = _checked_header(header_b64, typ, issuer_token)
        if len(_HEADER_CACHE) >= _KEY_CACHE_LIMIT:
            _HEADER_CACHE.clear()
        # Safe to cache: the check is a pure function of these three values and callers
        # never mutate headers. Issuers reuse one header per key, so this usually hits.
        _HEADER_CACHE[(header_b64, typ, issuer_token)] = header
    payload = json_object(b64url_decode(payload_b64))
    signature = b64url_decode(signature_b64)
    if len(signature) != 64:
        raise BadSignature("an Ed25519 signature is 64 bytes")
    return Jws(header, payload, f"{header_b64}.{payload_b64}".encode("ascii"), signature)


def _checked_header(header_b64: str, typ: str | None, issuer_token: bool) -> dict[str, Any]:
    header = json_object(b64url_decode(header_b64))
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ACCEPTED_ALGS:
        raise UnsupportedAlg(f"algorithm {str(alg)[:20]!r} is not accepted; use EdDSA")
    if "crit" in header:
        raise MalformedToken("critical header parameters are not supported")
    if issuer_token and FORBIDDEN_ISSUER_HEADERS.intersection(header):
        raise MalformedToken("issuer tokens must not carry jku, jwk, x5u or x5c")
    if typ is not None and header.get("typ") != typ:
        raise MalformedToken(f"typ must be {typ}")
    return header


def kid_of(jws: Jws) -> str:
    """Return the header's `kid` or raise `UnknownKey`."""
    kid = jws.header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey("the token names no kid")
    return kid
