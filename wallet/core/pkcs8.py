"""Encrypted PKCS#8 (RFC 5958) with PBES2 (RFC 8018): PBKDF2-HMAC-SHA256 and AES-256-CBC.

`cryptography` writes encrypted PKCS#8 with a fixed, low PBKDF2 cost (2,048 rounds),
which is fine for the server's random 64-character passphrase but too weak for a
passphrase a person chooses. This module writes the same standard structure with a
chosen cost (600,000 rounds by default, OWASP's 2023 figure for PBKDF2-HMAC-SHA256).
The cost travels inside the file, so `cryptography` and `openssl pkcs8` read it as is.
"""

from __future__ import annotations

import base64
import textwrap

from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from wallet.core.errors import BadPassphrase, Malformed

HOLDER_ROUNDS = 600_000

# Object identifiers (DER-encoded contents, without tag and length).
_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42


def _read(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    """Read one DER element with `tag` at `at`; return (contents, offset after it)."""
    if at + 2 > len(data) or data[at] != tag:
        raise BadPassphrase("the key file is damaged")
    length, at = data[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 0 < count <= 4 or at + count > len(data):
            raise BadPassphrase("the key file is damaged")
        length, at = int.from_bytes(data[at:at + count], "big"), at + count
    if at + length > len(data):
        raise BadPassphrase("the key file is damaged")
    return data[at:at + length], at + length


def pbkdf2_rounds(pem: bytes) -> int:
    """The PBKDF2 iteration count an encrypted PKCS#8 PEM asks for (PBES2 only)."""
    try:
        body = b"".join(line for line in pem.strip().splitlines()
                        if line and not line.startswith(b"-----"))
        der = base64.b64decode(body, validate=True)
    except (ValueError, TypeError):
        raise BadPassphrase("the key file is damaged") from None
    info, _ = _read(der, 0, 0x30)  # EncryptedPrivateKeyInfo
    algorithm, _ = _read(info, 0, 0x30)  # AlgorithmIdentifier (PBES2)
    oid, at = _read(algorithm, 0, 0x06)
    if oid != _PBES2:
        raise BadPassphrase("only PBES2-encrypted keys are accepted")
    params, _ = _read(algorithm, at, 0x30)
    kdf, _ = _read(params, 0, 0x30)
    kdf_oid, at = _read(kdf, 0, 0x06)
    if kdf_oid != _PBKDF2:
        raise BadPassphrase("only PBKDF2 key derivation is accepted")
    kdf_params, _ = _read(kdf, at, 0x30)
    _salt, at = _read(kdf_params, 0, 0x04)
    rounds, _ = _read(kdf_params, at, 0x02)
    if not rounds or len(rounds) > 8 or rounds[0] & 0x80:
        raise BadPassphrase("the key file is damaged")
    return int.from_bytes(rounds, "big")


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(encoded)]) + encoded + content


def _seq(*items: bytes) -> bytes:
    return _der(0x30, b"".join(items))


def _oid(content: bytes) -> bytes:
    return _der(0x06, content)


def _int(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _octets(value: bytes) -> bytes:
    return _der(0x04, value)


def encrypt(key: Ed25519PrivateKey, passphrase: str, *, salt: bytes, iv: bytes,
            rounds: int = HOLDER_ROUNDS) -> bytes:
    """Return `key` as an encrypted PKCS#8 PEM (`-----BEGIN ENCRYPTED PRIVATE KEY-----`).

    `salt` (16 bytes) and `iv` (16 bytes) come from the caller's random source.
    """
    if len(salt) != 16 or len(iv) != 16:
        raise ValueError("salt and iv are 16 random bytes each")
    if not passphrase:
        raise BadPassphrase("a passphrase is required")
    plain = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    derived = PBKDF2HMAC(hashes.SHA256(), 32, salt, rounds).derive(passphrase.encode("utf-8"))
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(derived), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    der = _seq(
        _seq(
            _oid(_PBES2),
            _seq(
                _seq(_oid(_PBKDF2), _seq(_octets(salt), _int(rounds),
                                         _seq(_oid(_HMAC_SHA256), b"\x05\x00"))),
                _seq(_oid(_AES256_CBC), _octets(iv)),
            ),
        ),
        _octets(ciphertext),
    )
    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return (f"-----BEGIN ENCRYPTED PRIVATE KEY-----\n{body}\n"
            "-----END ENCRYPTED PRIVATE KEY-----\n").encode("ascii")


# The file names its own cost. We write 600,000 rounds (holder keys) and 100,000
# (organisation keys); the cap leaves room to raise the figure and bounds what one
# upload can cost (about 0.1 s of CPU, against 1.2 s at 10,000,000 rounds).
MIN_ROUNDS, MAX_ROUNDS = 1_000, 1_000_000


def check_rounds(rounds: int) -> None:
    """Refuse a PBKDF2 cost outside what this project writes (`Malformed`)."""
    if not MIN_ROUNDS <= rounds <= MAX_ROUNDS:
        raise Malformed(f"the key asks for {rounds:,} PBKDF2 rounds; accepted are"
                        f" {MIN_ROUNDS:,} to {MAX_ROUNDS:,}")


def decrypt(pem: bytes | str, passphrase: str) -> Ed25519PrivateKey:
    """Load an encrypted PKCS#8 PEM holding an Ed25519 key, or raise `BadPassphrase`.

    An uploaded file could ask for billions of rounds (minutes of CPU), so the cost is
    read and bounded (`Malformed` outside it) before anything is derived.
    """
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if b"ENCRYPTED PRIVATE KEY" not in data:
        raise BadPassphrase("the key is not an encrypted PKCS#8 PEM")
    check_rounds(pbkdf2_rounds(data))
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode("utf-8"))
    except (ValueError, TypeError):
        raise BadPassphrase("wrong passphrase, or the key file is damaged") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadPassphrase("the key is not an Ed25519 key")
    return key
