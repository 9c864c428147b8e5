"""Token status lists (wallet.core.status) against the IETF Token Status List examples.

Known answers from draft-ietf-oauth-status-list §4.1 (Status List): the 1-bit example
(16 statuses → bytes b9a3 → lst "eNrbuRgAAhcBXQ") and the 2-bit example (→ c944f9).
"""

from __future__ import annotations

import random
import zlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wallet.core import jose, status
from wallet.core.errors import MalformedToken, TokenTooLarge

BITS1_STATUSES = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1]
BITS1_HEX = "b9a3"
BITS1_LST = "eNrbuRgAAhcBXQ"
BITS2_STATUSES = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3]
BITS2_HEX = "c944f9"

URI = "https://issuer.example/orgs/acme/status/1"
NOW = 1_795_000_000


# -- known answers ---------------------------------------------------------------------------


def test_bits1_example() -> None:
    """§4.1, 1 bit per status: pack, unpack, get, build and the exact `lst`."""
    packed = status.pack(BITS1_STATUSES, 1)
    assert packed.hex() == BITS1_HEX
    assert status.unpack(packed, 1) == BITS1_STATUSES
    assert [status.get(packed, i, 1) for i in range(16)] == BITS1_STATUSES
    ones = [(i, 1) for i, v in enumerate(BITS1_STATUSES) if v]
    assert status.build(16, ones, 1) == packed
    # zlib level 9 of these two bytes is exactly the published string.
    assert status.compress(packed) == BITS1_LST
    assert status.decompress(BITS1_LST, max_bytes=2).hex() == BITS1_HEX


def test_bits1_lst_decodes_with_plain_zlib() -> None:
    """The published `lst` is base64url(zlib(b9a3)) by the standard library too."""
    assert zlib.decompress(jose.b64url_decode(BITS1_LST)).hex() == BITS1_HEX
    assert zlib.decompress(jose.b64url_decode(status.compress(bytes.fromhex(BITS1_HEX)))) \
        == bytes.fromhex(BITS1_HEX)


def test_bits2_example() -> None:
    """§4.1, 2 bits per status."""
    packed = status.pack(BITS2_STATUSES, 2)
    assert packed.hex() == BITS2_HEX
    assert status.unpack(packed, 2) == BITS2_STATUSES
    assert [status.get(packed, i, 2) for i in range(12)] == BITS2_STATUSES
    assert status.build(12, enumerate(BITS2_STATUSES), 2) == packed
    assert status.decompress(status.compress(packed), max_bytes=3) == packed


@pytest.mark.parametrize(("values", "bits", "hex_"), [
    ([1], 1, "01"), ([0, 1], 1, "02"), ([0] * 7 + [1], 1, "80"), ([0] * 8 + [1], 1, "0001"),
    ([3], 2, "03"), ([0, 1], 2, "04"), ([0, 0, 0, 3], 2, "c0"), ([0, 0, 0, 0, 2], 2, "0002"),
    ([0xF, 0x1], 4, "1f"), ([0x1, 0xF], 4, "f1"), ([5, 255, 0], 8, "05ff00"),
])
def test_least_significant_bit_first(values: list[int], bits: int, hex_: str) -> None:
    """§4.1: entry 0 occupies the least significant bits of byte 0."""
    packed = status.pack(values, bits)
    assert packed.hex() == hex_
    assert [status.get(packed, i, bits) for i in range(len(values))] == values


def test_values_and_names() -> None:
    assert (status.VALID, status.REVOKED, status.SUSPENDED, status.REDEEMED) == (0, 1, 2, 3)
    assert status.NAMES == {0: "valid", 1: "revoked", 2: "suspended", 3: "redeemed"}


# -- properties ------------------------------------------------------------------------------


@st.composite
def _lists(draw: st.DrawFn) -> tuple[int, list[int]]:
    bits = draw(st.sampled_from([1, 2, 4, 8]))
    values = draw(st.lists(st.integers(0, (1 << bits) - 1), max_size=70))
    return bits, values


@settings(derandomize=True, database=None, max_examples=300)
@given(_lists())
def test_pack_get_build_unpack_agree(case: tuple[int, list[int]]) -> None:
    bits, values = case
    packed = status.pack(values, bits)
    per_byte = 8 // bits
    assert len(packed) == -(-len(values) // per_byte)
    assert status.build(len(values), enumerate(values), bits) == packed
    unpacked = status.unpack(packed, bits)
    assert unpacked[:len(values)] == values
    assert set(unpacked[len(values):]) <= {0}
    assert [status.get(packed, i, bits) for i in range(len(values))] == values
    # Only non-zero entries need to be named; a later entry for an index overwrites.
    sparse = [(i, v) for i, v in enumerate(values) if v]
    assert status.build(len(values), sparse, bits) == packed
    overwritten = [(i, (1 << bits) - 1) for i, _ in enumerate(values)] + list(enumerate(values))
    assert status.build(len(values), overwritten, bits) == packed
    assert status.decompress(status.compress(packed), max_bytes=len(packed) or 1) == packed


def test_pack_and_build_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        status.pack([4], 2)
    with pytest.raises(ValueError):
        status.pack([-1], 2)
    for bits in (0, 3, 16):
        with pytest.raises(ValueError):
            status.pack([0], bits)
        with pytest.raises(ValueError):
            status.unpack(b"\x00", bits)
    for index in (-1, 8):
        with pytest.raises(ValueError):
            status.build(8, [(index, 1)], 2)


def test_build_refuses_values_that_do_not_fit() -> None:
    """BUG: build() writes an out-of-range value into the neighbouring entry.

    status.build(4, [(0, 4)], bits=2) returns b"\\x04": entry 0 stays 0 and entry 1
    becomes 1 (revoked). pack() refuses the same value with ValueError.
    """
    with pytest.raises(ValueError):
        status.build(4, [(0, 4)], 2)


def test_get_refuses_indexes_outside_the_list() -> None:
    packed = status.pack(BITS2_STATUSES, 2)
    for index in (-1, 12, 10_000):
        with pytest.raises(MalformedToken) as exc:
            status.get(packed, index, 2)
        assert exc.value.code == "malformed"


# -- decompression -----------------------------------------------------------------------------


def test_decompression_bomb_is_refused() -> None:
    """About 20 KB of zlib that would inflate to 16 MiB stops at `max_bytes`."""
    bomb = status.compress(bytes(16 << 20))
    assert len(bomb) < 40_000
    with pytest.raises(MalformedToken) as exc:
        status.decompress(bomb, max_bytes=1 << 20)
    assert exc.value.code == "malformed"


def test_decompress_limit_is_inclusive() -> None:
    data = bytes(range(256)) * 4
    lst = status.compress(data)
    assert status.decompress(lst, max_bytes=len(data)) == data
    with pytest.raises(MalformedToken):
        status.decompress(lst, max_bytes=len(data) - 1)


@pytest.mark.parametrize("lst", [
    "", "AAAA", "eNrbuRgAAhcBXQ==", "eNrbuRgAAhcBX", "eNrbuRgAAhc",
    jose.b64url_encode(zlib.compress(b"\x01\x02")[:-1]),       # truncated checksum
    jose.b64url_encode(b"\x78\xda" + b"\xff" * 8),               # not deflate
    jose.b64url_encode(zlib.compress(b"\x01", 9)[:2]),           # header only
    "eNrbuRgAAhcBXQ+", "eNrb uRgAAhcBXQ",
])
def test_decompress_refuses_bad_lst(lst: str) -> None:
    with pytest.raises(MalformedToken) as exc:
        status.decompress(lst, max_bytes=1 << 20)
    assert exc.value.code == "malformed"


# -- the status list token's claims ------------------------------------------------------------


def _claims(**changes: Any) -> dict[str, Any]:
    packed = status.build(status.MIN_SIZE, [(94567, status.REDEEMED), (1, status.REVOKED)])
    claims = status.claims(uri=URI, packed=packed, iat=NOW, ttl=300, exp=NOW + 3600)
    for key, value in changes.items():
        if value is _DROP:
            claims.pop(key)
        else:
            claims[key] = value
    return claims


_DROP = object()


def test_claims_then_read() -> None:
    claims = _claims()
    assert set(claims) == {"sub", "iat", "exp", "ttl", "status_list"}
    assert claims["status_list"]["bits"] == 2
    listed = status.read(claims, uri=URI, now=NOW + 10)
    assert (listed.uri, listed.bits, listed.ttl, listed.exp) == (URI, 2, 300, NOW + 3600)
    assert len(listed.data) == status.MIN_SIZE // 4
    assert listed.status(94567) == status.REDEEMED
    assert listed.status(1) == status.REVOKED
    assert listed.status(0) == status.VALID
    assert listed.status(status.MIN_SIZE - 1) == status.VALID
    with pytest.raises(MalformedToken):
        listed.status(status.MIN_SIZE)


def test_claims_refuses_bad_ttl() -> None:
    for ttl in (0, -1, 301):
        with pytest.raises(ValueError):
            status.claims(uri=URI, packed=b"\x00", iat=NOW, ttl=ttl, exp=NOW + 1)


def test_read_tolerances() -> None:
    """exp is honoured with 60 s leeway; exp and ttl are optional; ttl is capped at 300."""
    status.read(_claims(), uri=URI, now=NOW + 3600 + 60)
    assert status.read(_claims(exp=_DROP), uri=URI, now=NOW + 10**6).exp is None
    assert status.read(_claims(ttl=_DROP), uri=URI, now=NOW).ttl == 300
    assert status.read(_claims(ttl=86_400), uri=URI, now=NOW).ttl == 300
    one_bit = {**_claims(), "status_list": {"bits": 1, "lst": BITS1_LST}}
    assert [status.read(one_bit, uri=URI, now=NOW).status(i) for i in range(16)] \
        == BITS1_STATUSES


@pytest.mark.parametrize(("name", "changes"), [
    ("wrong sub", {"sub": URI + "0"}),
    ("missing sub", {"sub": _DROP}),
    ("expired", {"exp": NOW - 61}),
    ("exp not an int", {"exp": str(NOW + 3600)}),
    ("exp a float", {"exp": NOW + 3600.0}),
    ("iat missing", {"iat": _DROP}),
    ("iat a string", {"iat": str(NOW)}),
    ("iat a bool", {"iat": True}),
    ("ttl a string", {"ttl": "300"}),
    ("no status_list", {"status_list": _DROP}),
    ("status_list a list", {"status_list": [2, BITS1_LST]}),
    ("bits 0", {"status_list": {"bits": 0, "lst": BITS1_LST}}),
    ("bits 3", {"status_list": {"bits": 3, "lst": BITS1_LST}}),
    ("bits 16", {"status_list": {"bits": 16, "lst": BITS1_LST}}),
    ("bits a string", {"status_list": {"bits": "2", "lst": BITS1_LST}}),
    ("bits missing", {"status_list": {"lst": BITS1_LST}}),
    ("lst missing", {"status_list": {"bits": 1}}),
    ("lst not a string", {"status_list": {"bits": 1, "lst": 5}}),
    ("lst padded", {"status_list": {"bits": 1, "lst": BITS1_LST + "=="}}),
    ("lst not base64url", {"status_list": {"bits": 1, "lst": "eNrb+RgAAhcBXQ"}}),
    ("lst not zlib", {"status_list": {"bits": 1, "lst": "AAAAAAAA"}}),
])
def test_read_refusals(name: str, changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedToken) as exc:
        status.read(_claims(**changes), uri=URI, now=NOW)
    assert exc.value.code == "malformed"


def test_read_refuses_a_list_over_max_bytes() -> None:
    with pytest.raises(MalformedToken):
        status.read(_claims(), uri=URI, now=NOW, max_bytes=status.MIN_SIZE // 4 - 1)
    assert len(status.read(_claims(), uri=URI, now=NOW,
                           max_bytes=status.MIN_SIZE // 4).data) == status.MIN_SIZE // 4


# -- sizes: what an issuer may place in one list, what a verifier accepts ----------------------


def _real_token(size: int, notes: int, seed: int) -> str:
    """A signed list token with `notes` entries at random indexes, every one non-zero."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rng = random.Random(seed)
    placed = [(i, rng.choice((status.REVOKED, status.SUSPENDED, status.REDEEMED)))
              for i in rng.sample(range(size), notes)]
    key = Ed25519PrivateKey.generate()
    kid = jose.thumbprint(jose.public_jwk(key))
    uri = "https://wallet.example.com/orgs/" + "o" * 60 + "/status/2147483647"
    claims = status.claims(uri=uri, packed=status.build(size, placed), iat=NOW, ttl=300,
                           exp=NOW + 3600)
    return jose.sign({"alg": "EdDSA", "typ": status.TYP, "kid": kid}, claims, key)


@pytest.mark.parametrize("notes", [1, 1000, status.DEFAULT_MAX_NOTES, 6000])
def test_worst_case_estimate_is_at_least_any_real_token(notes: int) -> None:
    """The estimate an issuer's bound is checked against covers real tokens of that many
    non-zero entries (random indexes and values, the real zlib level, a long URI)."""
    estimate = status.worst_case_token_bytes(status.MIN_SIZE, notes)
    for seed in range(3):
        real = len(_real_token(status.MIN_SIZE, notes, seed))
        assert real <= estimate <= real * 1.05 + 400, (notes, real, estimate)


def test_the_default_bound_stays_well_under_what_every_verifier_accepts() -> None:
    """4,096 notes per 131,072-entry list: about 10.6 KB when every one is dead, against
    16 KiB for verifiers that apply the general token limit (and 256 KiB for ours)."""
    worst = status.worst_case_token_bytes(status.MIN_SIZE, status.DEFAULT_MAX_NOTES)
    assert worst <= status.ISSUER_TARGET_BYTES <= jose.MAX_TOKEN_BYTES * 3 // 4
    status.check_capacity(status.MIN_SIZE, status.DEFAULT_MAX_NOTES)
    # Twice the default would not fit in 16 KiB: the bound is what keeps lists small.
    assert status.worst_case_token_bytes(status.MIN_SIZE, 2 * status.DEFAULT_MAX_NOTES) \
        > jose.MAX_TOKEN_BYTES


@pytest.mark.parametrize(("size", "notes"), [
    (status.MIN_SIZE, 8000),          # ~16.8 KB at worst: over what verifiers accept
    (status.MIN_SIZE, 5600),          # ~13 KB: under 16 KiB but without the margin
    (status.MIN_SIZE, 65_536),        # the old rule (half the list): ~53 KB
    (1 << 20, status.DEFAULT_MAX_NOTES),  # a longer list costs more per entry: ~15 KB
    (status.MIN_SIZE // 2, 100),      # too few entries to hide who holds which note
    (status.MIN_SIZE, 0),
    (status.MIN_SIZE, -1),
])
def test_check_capacity_refuses_lists_that_could_outgrow_verifiers(size: int,
                                                                   notes: int) -> None:
    with pytest.raises(ValueError):
        status.check_capacity(size, notes)


def test_status_list_tokens_have_their_own_size_limit() -> None:
    """20,000 dead entries make a ~31 KB token: over the 16 KiB of notes, receipts and
    requests, under the 256 KiB a status list token may take; beyond that, refused."""
    token = _real_token(status.MIN_SIZE, 20_000, 1)
    assert jose.MAX_TOKEN_BYTES < len(token) < status.MAX_TOKEN_BYTES
    with pytest.raises(TokenTooLarge):
        jose.parse(token, typ=status.TYP)
    jws = jose.parse(token, typ=status.TYP, max_bytes=status.MAX_TOKEN_BYTES)
    assert status.read(jws.payload, uri=jws.payload["sub"], now=NOW).bits == 2
    huge = token + "A" * (status.MAX_TOKEN_BYTES - len(token) + 1)
    with pytest.raises(TokenTooLarge):
        jose.parse(huge, typ=status.TYP, max_bytes=status.MAX_TOKEN_BYTES)
    with pytest.raises(TokenTooLarge):  # still measured in UTF-8 bytes
        jose.check_size("é" * (status.MAX_TOKEN_BYTES // 2 + 1), max_bytes=status.MAX_TOKEN_BYTES)
    assert jose.check_size("é" * 4096) == "é" * 4096
