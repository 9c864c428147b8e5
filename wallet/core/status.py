"""IETF Token Status List: packing, compression and the status list token's claims.

`status_list: {"bits": 2, "lst": base64url(zlib(bytes))}`, entries packed least
significant bit first: with 2 bits, entry 0 is bits 0-1 of byte 0, entry 3 bits 6-7.
Values (docs/protocol.md §6 "Issuer documents"): 0 valid, 1 revoked, 2 suspended, 3 redeemed.

Sizes. Every entry an issuer hands out may turn non-zero (revoked, redeemed), and each
non-zero entry at a random index costs the token about 2.5 bytes (zlib, then base64url
twice), so an issuer bounds the notes it ever places in one list (`check_capacity`):
with 131,072 entries and at most 4,096 notes the token stays under 10.7 KB at worst,
well under the 16 KiB that verifiers applying the general token limit accept (about
7,600 notes would pass it). A verifier accepts status list tokens up to
`MAX_TOKEN_BYTES` (256 KiB), so a list from another issuer that grew past 16 KiB
still verifies.
"""

from __future__ import annotations

import functools
import random
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wallet.core.errors import MalformedToken
from wallet.core.jose import b64url_decode, b64url_encode, json_compact

VALID, REVOKED, SUSPENDED, REDEEMED = 0, 1, 2, 3
NAMES = {VALID: "valid", REVOKED: "revoked", SUSPENDED: "suspended", REDEEMED: "redeemed"}
BITS = 2
MIN_SIZE = 131_072
MAX_TTL = 300
TYP = "statuslist+jwt"
# A verifier's limit on a status list token (notes, receipts and requests keep
# `jose.MAX_TOKEN_BYTES`); the HTTP body limit of the transport applies as well.
MAX_TOKEN_BYTES = 256 * 1024
# An issuer keeps the worst case of each list's token under this: 3/4 of the 16 KiB
# that a verifier applying the general token limit accepts.
ISSUER_TARGET_BYTES = 12 * 1024
DEFAULT_MAX_NOTES = 4096
# What `worst_case_token_bytes` allows for the parts of a token other than `lst`.
_LONG_URI = "https://" + "u" * 248
_KID = "k" * 43  # an RFC 7638 SHA-256 thumbprint
_SIGNATURE_CHARS = 86  # 64 bytes in base64url


def pack(values: Sequence[int], bits: int = BITS) -> bytes:
    """Pack status values into bytes, least significant bits first."""
    _check_bits(bits)
    per_byte = 8 // bits
    out = bytearray((len(values) + per_byte - 1) // per_byte)
    for index, value in enumerate(values):
        if not 0 <= value < (1 << bits):
            raise ValueError(f"status {value} does not fit in {bits} bits")
        out[index // per_byte] |= value << ((index % per_byte) * bits)
    return bytes(out)


def unpack(data: bytes, bits: int = BITS) -> list[int]:
    """Unpack every entry of a packed status array."""
    _check_bits(bits)
    per_byte, mask = 8 // bits, (1 << bits) - 1
    return [(byte >> (slot * bits)) & mask for byte in data for slot in range(per_byte)]


def get(data: bytes, index: int, bits: int = BITS) -> int:
    """Return one entry's status value."""
    per_byte = 8 // bits
    if not 0 <= index < len(data) * per_byte:
        raise MalformedToken(f"status index {index} is outside the list")
    return (data[index // per_byte] >> ((index % per_byte) * bits)) & ((1 << bits) - 1)


def build(size: int, entries: Iterable[tuple[int, int]], bits: int = BITS) -> bytes:
    """Return a packed list of `size` entries, all valid except the (index, value) given."""
    _check_bits(bits)
    per_byte = 8 // bits
    out = bytearray((size + per_byte - 1) // per_byte)
    for index, value in entries:
        if not 0 <= index < size:
            raise ValueError(f"status index {index} is outside the list")
        if not 0 <= value < (1 << bits):
            raise ValueError(f"status {value} does not fit in {bits} bits")
        shift = (index % per_byte) * bits
        out[index // per_byte] = (out[index // per_byte] & ~(((1 << bits) - 1) << shift)) \
            | (value << shift)
    return bytes(out)


def compress(data: bytes) -> str:
    """zlib (RFC 1950) at the highest level, then base64url (the `lst` member)."""
    return b64url_encode(zlib.compress(data, 9))


def decompress(lst: str, *, max_bytes: int) -> bytes:
    """Inflate an `lst`, refusing anything that would expand past `max_bytes`."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive (zlib reads 0 as unlimited)")
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(b64url_decode(lst), max_bytes)
    except zlib.error:
        raise MalformedToken("status list is not valid zlib data") from None
    if inflater.unconsumed_tail or not inflater.eof:
        raise MalformedToken("status list is larger than allowed or truncated")
    if inflater.unused_data:
        raise MalformedToken("status list has bytes after its zlib stream")
    return data


def claims(*, uri: str, packed: bytes, iat: int, ttl: int, exp: int,
           bits: int = BITS) -> dict[str, Any]:
    """Return the claims of a status list token."""
    if not 0 < ttl <= MAX_TTL:
        raise ValueError("ttl must be 1-300 seconds")
    return {"sub": uri, "iat": iat, "exp": exp, "ttl": ttl,
            "status_list": {"bits": bits, "lst": compress(packed)}}


@functools.cache
def worst_case_token_bytes(size: int, notes: int) -> int:
    """The length of a list token with `notes` non-zero entries among `size`.

    What an issuer's list grows to when every note it placed there is dead: the indexes
    uniformly random (as the issuer draws them) and the values too (mixed values
    compress worst), at the real zlib level, with a 256-character URI. Deterministic
    (a fixed seed per size and count); different draws differ by under 1 %.
    """
    if not 0 <= notes <= size:
        raise ValueError("notes must be between 0 and the list size")
    rng = random.Random(f"{size}:{notes}")  # noqa: S311 - a reproducible sample, not a secret
    packed = build(size, ((index, rng.choice((REVOKED, SUSPENDED, REDEEMED)))
                          for index in rng.sample(range(size), notes)))
    header = {"alg": "EdDSA", "typ": TYP, "kid": _KID}
    payload = claims(uri=_LONG_URI, packed=packed, iat=9_999_999_999, ttl=MAX_TTL,
                     exp=9_999_999_999)
    return (len(b64url_encode(json_compact(header))) + len(b64url_encode(json_compact(payload)))
            + 2 + _SIGNATURE_CHARS)


def check_capacity(size: int, max_notes: int) -> None:
    """Refuse list settings that hide too little, or whose token could outgrow verifiers.

    `size` entries per list (at least `MIN_SIZE`, so an index says nothing about who
    holds the note), at most `max_notes` notes ever placed in one (at most half the
    list, so random draws stay cheap, and a worst case under `ISSUER_TARGET_BYTES`).
    """
    if size < MIN_SIZE:
        raise ValueError(f"a status list needs at least {MIN_SIZE} entries (got {size})")
    if not 0 < max_notes <= size // 2:
        raise ValueError(f"notes per status list must be 1-{size // 2} (got {max_notes})")
    worst = worst_case_token_bytes(size, max_notes)
    if worst > ISSUER_TARGET_BYTES:
        raise ValueError(f"{max_notes} notes in a list of {size} entries can make a {worst}-byte"
                         f" token (keep it under {ISSUER_TARGET_BYTES}): lower the notes per list")


@dataclass(frozen=True, slots=True)
class StatusList:
    """A verified status list's contents."""

    uri: str
    bits: int
    data: bytes
    ttl: int
    exp: int | None

    def status(self, index: int) -> int:
        """Return the status value of one entry."""
        return get(self.data, index, self.bits)


def read(payload: Mapping[str, Any], *, uri: str, now: int, max_bytes: int = 1 << 20,
         leeway: int = 60) -> StatusList:
    """Check a status list token's claims (signature already verified) and unpack it."""
    if payload.get("sub") != uri:
        raise MalformedToken("status list token is for another uri")
    exp, ttl = payload.get("exp"), payload.get("ttl", MAX_TTL)
    iat = payload.get("iat")
    if not _is_int(iat) or (exp is not None and not _is_int(exp)) or not _is_int(ttl):
        raise MalformedToken("status list token has malformed times")
    if exp is not None and now > exp + leeway:
        raise MalformedToken("status list token has expired")
    body = payload.get("status_list")
    if not isinstance(body, dict):
        raise MalformedToken("status_list must hold bits (1, 2, 4 or 8) and lst")
    bits = body.get("bits")
    if type(bits) is not int or bits not in (1, 2, 4, 8) or not isinstance(body.get("lst"), str):
        raise MalformedToken("status_list must hold bits (1, 2, 4 or 8) and lst")
    return StatusList(uri, bits, decompress(body["lst"], max_bytes=max_bytes),
                      min(int(ttl), MAX_TTL), exp)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_bits(bits: int) -> None:
    if bits not in (1, 2, 4, 8):
        raise ValueError("bits must be 1, 2, 4 or 8")
