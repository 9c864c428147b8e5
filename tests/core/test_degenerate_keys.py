"""Degenerate Ed25519 public keys are refused wherever a JWK is accepted (wallet.core.jose).

Regression (issue 11, hole 7): a note could be bound to the identity point
`x = AQAAAA…A`; its "holder" then signs any KB-JWT without a private key, because
`[S]B = R + [k]A` holds for `A = 0` whenever `R = [S]B`. Every small-order point
(the eight points of order 1, 2, 4 and 8) has the same defect for some messages, and
non-canonical encodings of them (x = 0 with the sign bit set, y ≥ p) slip past a
blocklist that compares bytes. The encodings below are the well-known list that
libsodium refuses (`ge25519_has_small_order`, after Chalkias et al., "Taming the many
EdDSAs", 2020); each is re-derived here with independent Edwards arithmetic, so the
known answers are checked, not copied.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from wallet.core import jose, notes
from wallet.core.errors import MalformedToken, WalletError
from wallet.core.money import Money

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)

# The eight points of order dividing 8, canonically encoded (little-endian y, sign of x
# in the top bit).
SMALL_ORDER = {
    "identity (order 1)": "0100000000000000000000000000000000000000000000000000000000000000",
    "order 2 (y = -1)": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order 4 (y = 0, +x)": "0000000000000000000000000000000000000000000000000000000000000000",
    "order 4 (y = 0, -x)": "0000000000000000000000000000000000000000000000000000000000000080",
    "order 8 (a)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8 (b)": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8 (c)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8 (d)": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
# Other byte strings that lenient decoders map to small-order points.
NON_CANONICAL_SMALL = {
    "identity, sign bit": "0100000000000000000000000000000000000000000000000000000000000080",
    "order 2, sign bit": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "y = p (order 4)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p, sign bit (order 4)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "y = p + 1 (identity)": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p + 1, sign bit set": "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
}
# y ≥ p that are not small order but still not canonical.
Y_AT_LEAST_P = {f"y = p + {k}": (P + k).to_bytes(32, "little").hex() for k in (2, 3, 9, 18)}


# -- independent Edwards arithmetic (RFC 8032 §5.1), for the test only ----------------------


def _recover_x(y: int, sign: int) -> int | None:
    """RFC 8032 §5.1.3 step 2-4, leniently (y is reduced mod p first)."""
    y %= P
    u, v = (y * y - 1) % P, (D * y * y + 1) % P
    x = (u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P)) % P
    if (v * x * x - u) % P != 0:
        x = (x * SQRT_M1) % P
    if (v * x * x - u) % P != 0:
        return None
    if x & 1 != sign:
        x = (P - x) % P
    return x


def _decode(hexed: str) -> tuple[int, int] | None:
    raw = int.from_bytes(bytes.fromhex(hexed), "little")
    y, sign = raw & ((1 << 255) - 1), raw >> 255
    x = _recover_x(y, sign)
    return None if x is None else (x, y % P)


def _add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P,
            (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def _times8(point: tuple[int, int]) -> tuple[int, int]:
    for _ in range(3):
        point = _add(point, point)
    return point


def test_the_known_small_order_encodings_are_what_they_say() -> None:
    """Every listed encoding decodes (leniently) to a point P with [8]P = identity, and the
    canonical ones are the eight distinct points of order dividing 8."""
    points = set()
    for name, hexed in {**SMALL_ORDER, **NON_CANONICAL_SMALL}.items():
        point = _decode(hexed)
        assert point is not None, name
        assert _times8(point) == (0, 1), name
        if name in SMALL_ORDER:
            points.add(point)
    assert len(points) == 8
    for name, hexed in Y_AT_LEAST_P.items():
        assert int.from_bytes(bytes.fromhex(hexed), "little") >= P, name


def _jwk(hexed: str) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": jose.b64url_encode(bytes.fromhex(hexed))}


def _not_on_curve() -> str:
    y = next(y for y in range(2, 100) if _recover_x(y, 0) is None)
    return y.to_bytes(32, "little").hex()


DEGENERATE = {**SMALL_ORDER, **NON_CANONICAL_SMALL, **Y_AT_LEAST_P,
              "not on the curve": _not_on_curve()}


@pytest.mark.parametrize("name", sorted(DEGENERATE))
def test_degenerate_public_keys_are_refused_everywhere_a_jwk_is_read(name: str) -> None:
    jwk = _jwk(DEGENERATE[name])
    for load in (jose.PublicKey.from_jwk, jose.load_public_jwk,
                 lambda j: jose.jwks_keys({"keys": [j]})):
        with pytest.raises(MalformedToken) as exc:
            load(dict(jwk))
        assert exc.value.code == "malformed"
    with pytest.raises(MalformedToken):  # with a kid: the same refusal, not a kid mismatch
        jose.PublicKey.from_jwk({**jwk, "kid": jose.thumbprint(jwk)})


def test_the_identity_point_is_refused_with_a_message_that_says_why() -> None:
    with pytest.raises(MalformedToken, match="small-order"):
        jose.PublicKey.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": "AQ" + "A" * 41})


def _vectors() -> dict[str, Any]:
    path = Path("/work/shared/vectors/published.json")
    if path.exists():
        return dict(json.loads(path.read_text()))
    return {"rfc8032_ed25519": [], "rfc8037_appendix_a": {}}


def test_published_public_keys_are_still_accepted() -> None:
    """RFC 8032 §7.1 TEST 1-3 and RFC 8037 Appendix A (our copies, and the shared file)."""
    publics = {"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
               "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
               "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025"}
    publics |= {v["public"] for v in _vectors()["rfc8032_ed25519"]}
    for hexed in publics:
        assert jose.PublicKey.from_jwk(_jwk(hexed)).jwk == _jwk(hexed)
    assert jose.PublicKey.from_jwk({"kty": "OKP", "crv": "Ed25519",
                                    "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"})


@given(st.binary(min_size=32, max_size=32))
def test_every_real_key_is_accepted(seed: bytes) -> None:
    public = jose.public_jwk(Ed25519PrivateKey.from_private_bytes(seed))
    assert jose.PublicKey.from_jwk(public).jwk == public


# -- the attack, end to end in the core -------------------------------------------------------

ISSUER = "https://credits.example/orgs/acme"
VERIFIER = "https://credits.example/orgs/globex"
ISSUER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
IDENTITY_JWK = _jwk(SMALL_ORDER["identity (order 1)"])
# R = identity, S = 0: [0]B = R + [k]·identity for every k, whatever the message.
KEYLESS_SIGNATURE = jose.b64url_encode(bytes.fromhex(SMALL_ORDER["identity (order 1)"])
                                       + bytes(32))


def _resolve(issuer: str) -> notes.IssuerKeys:
    key = jose.PublicKey.from_jwk(jose.public_jwk(ISSUER_KEY))
    return notes.IssuerKeys(issuer, {key.kid: notes.KeyInfo(key)})


def _note_bound_to(holder_jwk: dict[str, str], now: int) -> str:
    """A note signed by the real issuer key with `cnf.jwk` = holder_jwk (no checks)."""
    kid = jose.thumbprint(jose.public_jwk(ISSUER_KEY))
    payload = {"iss": ISSUER, "vct": notes.VCT, "jti": notes.new_jti(bytes(16)), "iat": now,
               "nbf": now, "exp": now + 3600, "amount": Money(10_000_000, "USD").as_json(),
               "cnf": {"jwk": holder_jwk},
               "status": {"status_list": {"idx": 1, "uri": f"{ISSUER}/status/1"}}}
    return jose.sign({"alg": "EdDSA", "typ": notes.NOTE_TYP, "kid": kid}, payload,
                     ISSUER_KEY) + "~"


def test_a_keyless_kb_jwt_bound_to_the_identity_point_is_refused() -> None:
    now = 1_800_000_000
    note = _note_bound_to(IDENTITY_JWK, now)
    kb_header = jose.b64url_encode(jose.json_compact({"alg": "EdDSA", "typ": notes.KB_TYP}))
    kb_payload = jose.b64url_encode(jose.json_compact({
        "iat": now, "aud": VERIFIER, "nonce": "n" * 43, "sd_hash": notes.sd_hash(note)}))
    presentation = f"{note}{kb_header}.{kb_payload}.{KEYLESS_SIGNATURE}"
    checks: notes.Checks = []
    with pytest.raises(WalletError) as exc:
        notes.verify_presentation(presentation, resolve=_resolve, audience=VERIFIER, now=now,
                                  checks=checks)
    assert exc.value.code == "malformed"
    assert checks == [("format", False)]
    with pytest.raises(MalformedToken):
        notes.verify(note, resolve=_resolve, now=now)


def test_an_issuer_cannot_bind_a_note_to_a_degenerate_key() -> None:
    with pytest.raises(MalformedToken):
        notes.issue(issuer=ISSUER, jti=notes.new_jti(bytes(16)), iat=1, exp=2,
                    amount=Money(1, "USD"), holder_jwk=IDENTITY_JWK,
                    status_uri=f"{ISSUER}/status/1", status_idx=0, kid="k", key=ISSUER_KEY)
