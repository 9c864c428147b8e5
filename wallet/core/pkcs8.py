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

from wallet.core.errors import BadPassphrase

HOLDER_ROUNDS = 600_000

# Object identifiers (DER-encoded contents, without tag and length).
_PBES2 = bytes.fromhex("2a864886f70d01050d")  # 1.2.840.113549.1.5.13
_PBKDF2 = bytes.fromhex("2a864886f70d01050c")  # 1.2.840.113549.1.5.12
_HMAC_SHA256 = bytes.fromhex("2a864886f70d0209")  # 1.2.840.113549.2.9
_AES256_CBC = bytes.fromhex("60864801650304012a")  # 2.16.840.1.101.3.4.1.42


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


def decrypt(pem: bytes | str, passphrase: str) -> Ed25519PrivateKey:
    """Load an encrypted PKCS#8 PEM holding an Ed25519 key, or raise `BadPassphrase`."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    if b"ENCRYPTED PRIVATE KEY" not in data:
        raise BadPassphrase("the key is not an encrypted PKCS#8 PEM")
    try:
        key = serialization.load_pem_private_key(data, passphrase.encode("utf-8"))
    except (ValueError, TypeError):
        raise BadPassphrase("wrong passphrase, or the key file is damaged") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BadPassphrase("the key is not an Ed25519 key")
    return key
