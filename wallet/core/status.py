"""IETF Token Status List: packing, compression and the status list token's claims.

`status_list: {"bits": 2, "lst": base64url(zlib(bytes))}`, entries packed least
significant bit first: with 2 bits, entry 0 is bits 0-1 of byte 0, entry 3 bits 6-7.
Values (DESIGN §6): 0 valid, 1 revoked, 2 suspended, 3 redeemed.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wallet.core.errors import MalformedToken
from wallet.core.jose import b64url_decode, b64url_encode

VALID, REVOKED, SUSPENDED, REDEEMED = 0, 1, 2, 3
NAMES = {VALID: "valid", REVOKED: "revoked", SUSPENDED: "suspended", REDEEMED: "redeemed"}
BITS = 2
MIN_SIZE = 131_072
MAX_TTL = 300
TYP = "statuslist+jwt"


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
