"""Presentation nonces: recognised by their MAC, stored only once spent, spent once."""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from tests import support
from tests.support import World
from wallet import clock, db
from wallet.actions import nonces as nonce_actions
from wallet.core import nonces
from wallet.models import Nonce
from wallet.store import notes as note_store
from wallet.store import people

KEY = nonces.derive_key("a test secret that is long enough to be one")
RANDOM = bytes(range(nonces.RANDOM_BYTES))


# -- the format (pure) ---------------------------------------------------------------------


def test_a_nonce_names_its_expiry_only_to_its_own_organisation_and_key() -> None:
    value = nonces.issue(KEY, org_id=7, expires=1_900_000_000, random=RANDOM)
    assert len(value) == nonces.LENGTH == 54
    assert nonces.expiry(KEY, value, org_id=7) == 1_900_000_000
    assert nonces.expiry(KEY, value, org_id=8) is None
    assert nonces.expiry(nonces.derive_key("another secret"), value, org_id=7) is None
    assert nonces.issue(KEY, org_id=7, expires=1_900_000_000, random=b"\x01" * 16) != value


@given(st.integers(0, 2**40), st.integers(1, 2**31), st.binary(min_size=16, max_size=16),
       st.integers(0, nonces.LENGTH - 1), st.sampled_from("AQgw_-z9"))
def test_changing_any_character_makes_a_nonce_foreign(expires: int, org_id: int, random: bytes,
                                                      at: int, char: str) -> None:
    value = nonces.issue(KEY, org_id=org_id, expires=expires, random=random)
    assert nonces.expiry(KEY, value, org_id=org_id) == expires
    changed = value[:at] + char + value[at + 1:]
    if changed != value:
        assert nonces.expiry(KEY, changed, org_id=org_id) is None


@pytest.mark.parametrize("value", ["", "x" * 54, "short", "A" * 53, "A" * 55, "é" * 54,
                                   "+" * 54, secrets.token_urlsafe(32)])
def test_anything_else_is_not_a_nonce(value: str) -> None:
    assert nonces.expiry(KEY, value, org_id=1) is None


def test_issue_wants_sixteen_random_bytes() -> None:
    with pytest.raises(ValueError, match="16 random bytes"):
        nonces.issue(KEY, org_id=1, expires=1, random=b"short")


# -- issuing and spending (both databases) ---------------------------------------------------


def _count(app: Flask) -> int:
    with app.app_context():
        return int(db.session().execute(sa.select(sa.func.count()).select_from(Nonce)).scalar_one())


def test_issuing_writes_nothing(app: Flask, world: World) -> None:
    """The endpoint is anonymous: asking for nonces must not grow the database."""
    client = app.test_client()
    issued = {client.post("/api/v1/orgs/acme/nonces").get_json()["nonce"] for _ in range(5)}
    assert len(issued) == 5
    assert _count(app) == 0
    assert client.post("/api/v1/orgs/nope/nonces").status_code == 404


def test_a_nonce_is_spent_once_by_its_organisation_and_again_only_by_the_same_consumer(
        app: Flask, world: World) -> None:
    client = app.test_client()
    value = client.post("/api/v1/orgs/acme/nonces").get_json()["nonce"]
    with app.app_context():
        s = db.session()
        acme = people.org_id_of(s, slug="acme")
        globex = people.org_id_of(s, slug="globex")
        assert acme is not None and globex is not None
        assert not nonce_actions.spend(s, org_id=globex, value=value, consumer="x")
        assert nonce_actions.usable(s, org_id=acme, value=value)
        assert nonce_actions.spend(s, org_id=acme, value=value, consumer="honour:1:k")
        s.commit()
        assert not nonce_actions.usable(s, org_id=acme, value=value)
        assert nonce_actions.usable(s, org_id=acme, value=value, consumer="honour:1:k")
        assert not nonce_actions.spend(s, org_id=acme, value=value, consumer="honour:2:k")
        assert nonce_actions.spend(s, org_id=acme, value=value, consumer="honour:1:k")
        s.commit()
    assert _count(app) == 1


def test_an_expired_nonce_is_refused(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        acme = people.org_id_of(s, slug="acme")
        assert acme is not None
        key = nonces.derive_key(app.config["SECRET_KEY"])
        old = nonces.issue(key, org_id=acme, expires=int(time.time()) - 1, random=RANDOM)
        assert not nonce_actions.usable(s, org_id=acme, value=old)
        assert not nonce_actions.spend(s, org_id=acme, value=old, consumer="c")
        s.rollback()
    assert _count(app) == 0


def test_concurrent_spenders_of_one_nonce_one_wins(app: Flask, world: World) -> None:
    """16 requests spend one nonce at once, each in its own transaction: exactly one wins."""
    client = app.test_client()
    value = client.post("/api/v1/orgs/acme/nonces").get_json()["nonce"]
    with app.app_context():
        acme = people.org_id_of(db.session(), slug="acme")
    assert acme is not None
    barrier = threading.Barrier(16)

    def attempt(i: int) -> bool:
        with app.app_context():
            s = db.session()
            barrier.wait()
            won = nonce_actions.spend(s, org_id=acme, value=value, consumer=f"honour:{i}")
            s.commit()
            return won

    with ThreadPoolExecutor(16) as pool:
        wins = list(pool.map(attempt, range(16)))
    assert wins.count(True) == 1
    assert _count(app) == 1


def test_spent_nonces_are_forgotten_once_expired(app: Flask, world: World) -> None:
    """Expired spent rows go when a nonce is spent, at most once per PURGE_EVERY_SECONDS
    per organisation and process; within that interval they stay (and stay unusable)."""
    fake = clock.install(app, clock.FakeClock())
    client = app.test_client()

    def spend_fresh(consumer: str) -> str:
        value = client.post("/api/v1/orgs/acme/nonces").get_json()["nonce"]
        with app.app_context():
            s = db.session()
            acme = people.org_id_of(s, slug="acme")
            assert acme is not None
            assert nonce_actions.spend(s, org_id=acme, value=value, consumer=consumer)
            s.commit()
        return value

    def values() -> list[str]:
        with app.app_context():
            return [v for (v,) in db.session().execute(sa.select(Nonce.value)).all()]

    old = [spend_fresh(f"c{i}") for i in range(3)]
    with app.app_context():
        s = db.session()
        s.execute(sa.update(Nonce).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        s.commit()
    fake.advance(note_store.PURGE_EVERY_SECONDS - 1)
    kept = spend_fresh("c3")
    assert sorted(values()) == sorted([*old, kept])  # within the interval: no purge yet
    fake.advance(1)
    fresh = spend_fresh("c4")
    assert sorted(values()) == sorted([kept, fresh])


def test_the_organisation_id_is_read_once_per_process_on_postgresql(app: Flask,
                                                                    world: World) -> None:
    statements: list[str] = []
    sa.event.listen(app.extensions["wallet.engine"], "before_cursor_execute",
                    lambda _c, _cur, sql, *_a: statements.append(sql))
    client = app.test_client()
    for _ in range(3):
        assert client.post("/api/v1/orgs/globex/nonces").status_code == 201
    reads = [q for q in statements if "FROM organization" in q]
    postgres = app.extensions["wallet.engine"].dialect.name == "postgresql"
    assert len(reads) == (1 if postgres else 3), statements
    support.assert_ledger_sound(app)
