"""Encrypted PKCS#8 with a chosen PBKDF2 cost, and refusals of hostile files."""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wallet.core import pkcs8
from wallet.core.errors import BadPassphrase, Malformed

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SALT, IV = bytes(16), bytes(range(16))


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def test_round_trip_and_the_cost_is_in_the_file() -> None:
    pem = pkcs8.encrypt(KEY, "correct horse", salt=SALT, iv=IV, rounds=20_000)
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert pkcs8.pbkdf2_rounds(pem) == 20_000
    assert _raw(pkcs8.decrypt(pem, "correct horse")) == _raw(KEY)
    with pytest.raises(BadPassphrase):
        pkcs8.decrypt(pem, "wrong horse")


def test_holder_keys_default_to_600000_rounds() -> None:
    pem = pkcs8.encrypt(KEY, "pw", salt=SALT, iv=IV)
    assert pkcs8.pbkdf2_rounds(pem) == pkcs8.HOLDER_ROUNDS == 600_000


def test_cryptographys_own_encrypted_pkcs8_is_read() -> None:
    pem = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"pw"))
    assert _raw(pkcs8.decrypt(pem, "pw")) == _raw(KEY)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_bytes(pkcs8.encrypt(KEY, "pw for openssl", salt=SALT, iv=IV, rounds=10_000))
    out = subprocess.run(["openssl", "pkey", "-in", str(path), "-passin", "pass:pw for openssl",
                          "-pubout"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("-----BEGIN PUBLIC KEY-----")


def _forged(rounds: int) -> bytes:
    """A PBES2 structure claiming `rounds`, with junk ciphertext (never derivable cheaply)."""
    der = pkcs8._seq(
        pkcs8._seq(pkcs8._oid(pkcs8._PBES2), pkcs8._seq(
            pkcs8._seq(pkcs8._oid(pkcs8._PBKDF2), pkcs8._seq(
                pkcs8._octets(SALT), pkcs8._int(rounds),
                pkcs8._seq(pkcs8._oid(pkcs8._HMAC_SHA256), b"\x05\x00"))),
            pkcs8._seq(pkcs8._oid(pkcs8._AES256_CBC), pkcs8._octets(IV)))),
        pkcs8._octets(bytes(48)))
    body = base64.encodebytes(der).decode()
    return ("-----BEGIN ENCRYPTED PRIVATE KEY-----\n" + body
            + "-----END ENCRYPTED PRIVATE KEY-----\n").encode()


@pytest.mark.parametrize("rounds", [2**31 - 1, 2**40, 10_000_000, 1_000_001, 999, 1])
def test_a_file_cannot_choose_an_absurd_cost(rounds: int) -> None:
    """Regression: a wallet file claiming 2**31 rounds pinned a worker for minutes, and
    2**40 made the library panic past every error handler; 10,000,000 rounds (1.2 s of
    CPU per upload) were still accepted. The cap sits near what we write (600,000), and
    the refusal is `malformed`, said before any key derivation."""
    started = time.perf_counter()
    with pytest.raises(Malformed, match="PBKDF2 rounds") as exc:
        pkcs8.decrypt(_forged(rounds), "anything")
    assert exc.value.code == "malformed"
    assert time.perf_counter() - started < 0.1


def test_the_cap_admits_what_we_write_with_room_to_raise_it() -> None:
    assert pkcs8.MAX_ROUNDS == 1_000_000 >= 1.5 * pkcs8.HOLDER_ROUNDS
    pem = pkcs8.encrypt(KEY, "pw", salt=SALT, iv=IV, rounds=pkcs8.MIN_ROUNDS)
    assert _raw(pkcs8.decrypt(pem, "pw")) == _raw(KEY)
    with pytest.raises(BadPassphrase):  # a cost within the cap: derived, then refused
        pkcs8.decrypt(_forged(pkcs8.MAX_ROUNDS // 100), "anything")


@pytest.mark.parametrize("pem", [
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nnot base64!\n-----END ENCRYPTED PRIVATE KEY-----\n",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
    b"",
])
def test_damaged_files_are_one_clean_error(pem: bytes) -> None:
    with pytest.raises(BadPassphrase):
        pkcs8.decrypt(pem, "pw")
