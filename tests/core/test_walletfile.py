"""The portable wallet file's parser against hostile files (issue 11, holes 7, 8 and 9)."""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.core.test_pkcs8 import _forged
from wallet.core import jose, walletfile
from wallet.core.errors import BadPassphrase, Malformed

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NOTE = "eyJhbGciOiJFZERTQSJ9.e30.sig~"


def _file(**members: object) -> str:
    wallet = walletfile.create(KEY, "pw", [NOTE], salt=bytes(16), iv=bytes(16), rounds=1000)
    data = json.loads(wallet.to_json())
    data.update(members)
    return json.dumps(data)


def test_a_good_file_parses_and_unlocks() -> None:
    wallet = walletfile.parse(_file())
    assert wallet.notes == [NOTE]
    assert jose.public_jwk(wallet.unlock("pw")) == jose.public_jwk(KEY)
    with pytest.raises(BadPassphrase):
        wallet.unlock("not it")


@pytest.mark.parametrize("rounds", [10_000_000, 1_000_001, 2**31 - 1])
def test_a_file_that_asks_for_too_many_pbkdf2_rounds_is_malformed_before_any_work(
        rounds: int) -> None:
    """Regression: a wallet file could ask for 10,000,000 rounds (1.2 s of CPU per
    upload); now the parser refuses it, before a passphrase is even asked for."""
    text = _file(holder_key=_forged(rounds).decode())
    started = time.perf_counter()
    with pytest.raises(Malformed, match="PBKDF2 rounds") as exc:
        walletfile.parse(text)
    assert exc.value.code == "malformed"
    assert time.perf_counter() - started < 0.1


def test_a_damaged_holder_key_is_malformed_at_parse() -> None:
    with pytest.raises(Malformed, match="holder_key"):
        walletfile.parse(_file(holder_key="-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n"
                                          "-----END ENCRYPTED PRIVATE KEY-----\n"))


@pytest.mark.parametrize("depth", [50_000, 200])
def test_deeply_nested_files_are_malformed(depth: int) -> None:
    """A good file with one extra, deeply nested member (extra members are ignored)."""
    text = '{"x": ' + "[" * depth + "]" * depth + ", " + _file()[1:]
    with pytest.raises(Malformed) as exc:
        walletfile.parse(text)
    assert exc.value.code == "malformed"


@pytest.mark.parametrize("members", [
    {"notes": [NOTE, "eyJ\u0000~"]},
    {"holder_key": walletfile.create(KEY, "pw", [], salt=bytes(16), iv=bytes(16),
                                     rounds=1000).holder_key + "\u0000"},
    {"holder_jwk": {**jose.public_jwk(KEY), "n\u0000": 1}},
])
def test_nul_characters_are_refused(members: dict[str, object]) -> None:
    """Regression: NUL in a wallet file's strings reached the database (PostgreSQL
    refuses it: a psycopg DataError, a 500)."""
    with pytest.raises(Malformed):
        walletfile.parse(_file(**members))


def test_a_holder_jwk_that_is_a_small_order_point_is_refused() -> None:
    identity = {"kty": "OKP", "crv": "Ed25519", "x": "AQ" + "A" * 41}
    with pytest.raises(Malformed, match="small-order"):
        walletfile.parse(_file(holder_jwk=identity))
