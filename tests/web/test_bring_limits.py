"""Bringing a wallet file in: cheap-denial-of-service caps (issue 11, holes 8 and 9).

Each upload of a wallet file makes the server derive a key from the passphrase (PBKDF2,
the cost named by the file). Regressions: a file could ask for 10,000,000 rounds (1.2 s
of CPU per upload), uploads were not limited at all, and pasting 50,000-level JSON on
the same page was a RecursionError 500. Both databases.
"""

from __future__ import annotations

import io
import secrets
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.core.test_pkcs8 import _forged
from tests.support import World
from wallet.core import walletfile

BRING = "/orgs/globex/bring"
LIMIT = 3


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WALLET_BRING_PER_MINUTE": LIMIT}


def _wallet(rounds: int = 1000) -> bytes:
    key = Ed25519PrivateKey.generate()
    wallet = walletfile.create(key, "the right passphrase", ["eyJhbGciOiJFZERTQSJ9.e30.c2ln~"],
                               salt=secrets.token_bytes(16), iv=secrets.token_bytes(16),
                               rounds=rounds)
    return wallet.to_json().encode()


WRONG = "a wrong guess"


def _upload(client: FlaskClient, data: bytes, passphrase: str = WRONG) -> Any:
    return support.post_form(client, BRING, {
        "w-wallet": (io.BytesIO(data), "mine.ccwallet"), "w-passphrase": passphrase,
        "w-idempotency_key": secrets.token_hex(8)}, content_type="multipart/form-data")


def _signed_in(app: Flask, email: str, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    support.login(client, email)
    return client


def test_bringing_wallets_in_is_limited_per_person_not_per_address(app: Flask,
                                                                   world: World) -> None:
    """A passphrase guesser (or a CPU burner) gets LIMIT uploads a minute, whatever
    address or session they use; other people are not affected."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        orgs.add_person(db.session(), slug="globex", email="mallory@globex.test",
                        password=support.PASSWORD, actor=Actor.cli())
    data = _wallet()
    ada = _signed_in(app, world.ada, "192.0.2.1")
    for _ in range(LIMIT):
        answer = _upload(ada, data)
        assert answer.status_code == 400
        assert "wrong passphrase" in answer.get_data(as_text=True).lower()
    refused = _upload(ada, data)
    assert refused.status_code == 429
    assert "too many wallet files" in refused.get_data(as_text=True).lower()
    # Another session at another address: still ada, still refused.
    elsewhere = _signed_in(app, world.ada, "198.51.100.7")
    assert _upload(elsewhere, data).status_code == 429
    # The same address, another person: not limited by ada's attempts.
    mallory = _signed_in(app, "mallory@globex.test", "192.0.2.1")
    assert _upload(mallory, data).status_code == 400
    # Pasting presentations (no key derivation) is not counted.
    pasted = support.post_form(ada, BRING, {"p-presentations": "[]",
                                            "p-idempotency_key": "p1"})
    assert pasted.status_code == 400 and "too many" not in pasted.get_data(as_text=True)


def test_a_wallet_file_asking_for_ten_million_rounds_is_refused_at_once(
        app: Flask, world: World) -> None:
    ada = _signed_in(app, world.ada, "192.0.2.1")
    data = walletfile.parse(_wallet()).to_json()
    import json

    hostile = json.loads(data)
    hostile["holder_key"] = _forged(10_000_000).decode()
    started = time.perf_counter()
    answer = _upload(ada, json.dumps(hostile).encode(), "the right passphrase")
    elapsed = time.perf_counter() - started
    assert answer.status_code == 400
    assert "10,000,000 PBKDF2 rounds" in answer.get_data(as_text=True)
    assert elapsed < 1.0


def test_pasting_deeply_nested_json_is_a_readable_refusal(app: Flask, world: World) -> None:
    ada = _signed_in(app, world.ada, "192.0.2.1")
    for text in ("[" * 50_000 + "]" * 50_000, '{"presentations": ["x\\u0000y"]}'):
        answer = support.post_form(ada, BRING, {"p-presentations": text,
                                                "p-idempotency_key": secrets.token_hex(4)})
        assert answer.status_code == 400, answer.status_code
        assert "wallet note present" in answer.get_data(as_text=True)
