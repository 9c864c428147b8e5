"""Holds through the API: place, capture, void, expiry, replays, and bad input."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.grant_helpers import set_clock
from tests.support import World
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import orgs
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor
from wallet.core.ledger import fingerprint

CLI = Actor.cli()
ADA = "ada@example.test"
BASE = "/api/v1/orgs/acme/holds"


@pytest.fixture
def token(app: Flask, world: World) -> str:
    with app.app_context():
        made, _ = orgs.create_token(db.session(), slug="acme", email=None, actor=CLI)
        grant_actions.create_grant(db.session(), slug="acme", email=ADA, amount="10.00",
                                   actor=CLI)
    return made


def _send(client: FlaskClient, token: str, path: str, key: str | None,
          body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post(path, json=body if body is not None else {}, headers=headers)


def _hold(client: FlaskClient, token: str, key: str, **body: Any) -> Any:
    return _send(client, token, BASE, key, {"person": ADA, **body})


def _me(app: Flask) -> tuple[int, int]:
    from wallet.core import ledger
    from wallet.store import ledger as ledger_store
    from wallet.store import people

    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        found = people.member_by_email(s, org_id=org.id, email=ADA)
        assert found is not None and found[1].id is not None
        pid = found[1].id
        return (ledger_store.balance(s, org_id=org.id, name=ledger.wallet(pid), currency="USD"),
                ledger_store.balance(s, org_id=org.id, name=ledger.held(pid), currency="USD"))


def test_a_hold_reserves_the_worst_case_and_a_capture_settles_the_exact_cost(
        app: Flask, client: FlaskClient, token: str) -> None:
    # claude-sonnet-4: 3.00 in, 15.00 out, 0.30 cached input per million tokens.
    r = _hold(client, token, "h1", model="claude-sonnet-4", max_input_tokens=100_000,
              max_output_tokens=100_000)
    assert r.status_code == 201, r.get_json()
    hold = r.get_json()
    assert hold["amount"] == "1.80" and hold["state"] == "open" and hold["id"].startswith("hld_")
    assert hold["available"] == "8.20"
    assert _me(app) == (8_200_000, 1_800_000)
    r = _send(client, token, f"{BASE}/{hold['id']}/capture", "c1",
              {"input_tokens": 50_000, "cached_input_tokens": 40_000, "output_tokens": 1_001})
    assert r.status_code == 200, r.get_json()
    done = r.get_json()
    # 10,000 x 3.00 + 40,000 x 0.30 + 1,001 x 15.00 = 0.03 + 0.012 + 0.015015 -> 0.057015
    assert done["state"] == "captured" and done["cost"] == "0.057015"
    assert done["released"] == "1.742985" and done["overrun"] == "0.00"
    assert done["available"] == "9.942985"
    assert _me(app) == (9_942_985, 0)
    again = _send(client, token, f"{BASE}/{hold['id']}/capture", "c1",
                  {"input_tokens": 50_000, "cached_input_tokens": 40_000, "output_tokens": 1_001})
    assert again.get_json() == done and again.headers["Idempotent-Replayed"] == "true"
    other = _send(client, token, f"{BASE}/{hold['id']}/capture", "c2", {"amount": "1.00"})
    assert other.status_code == 409 and other.get_json()["code"] == "conflict"
    assert _me(app) == (9_942_985, 0)
    support.assert_ledger_sound(app)


def test_a_hold_that_does_not_fit_reserves_nothing(app: Flask, client: FlaskClient,
                                                   token: str) -> None:
    r = _hold(client, token, "big", amount="10.01")
    assert r.status_code == 422 and r.get_json()["code"] == "insufficient_funds"
    assert _me(app) == (10_000_000, 0)
    assert _hold(client, token, "fits", amount="10.00").status_code == 201
    assert _me(app) == (0, 10_000_000)
    support.assert_ledger_sound(app)


def test_a_cost_above_the_hold_takes_the_wallet_then_books_an_overrun(
        app: Flask, client: FlaskClient, token: str) -> None:
    first = _hold(client, token, "a", amount="4.00").get_json()
    second = _hold(client, token, "b", amount="5.00").get_json()
    assert _me(app) == (1_000_000, 9_000_000)
    r = _send(client, token, f"{BASE}/{first['id']}/capture", "ca", {"amount": "6.50"})
    done = r.get_json()
    # 4.00 from the hold, 1.00 from the wallet (all it had), 1.50 absorbed by the employer
    assert (done["cost"], done["released"], done["overrun"]) == ("6.50", "0.00", "1.50")
    assert done["available"] == "0.00"
    assert _me(app) == (0, 5_000_000)
    void = _send(client, token, f"{BASE}/{second['id']}/void", "vb")
    assert void.status_code == 200 and void.get_json()["released"] == "5.00"
    assert _send(client, token, f"{BASE}/{second['id']}/void", "vb2").status_code == 200
    assert _me(app) == (5_000_000, 0)
    support.assert_ledger_sound(app)


def test_an_expired_hold_releases_itself_and_refuses_a_capture(
        app: Flask, client: FlaskClient, token: str) -> None:
    set_clock(app, date(2027, 1, 4))
    hold = _hold(client, token, "e", amount="3.00", ttl_seconds=60).get_json()
    app.extensions[clock.EXTENSION].advance(seconds=61)
    shown = client.get(f"{BASE}/{hold['id']}", headers={"Authorization": f"Bearer {token}"})
    assert shown.get_json()["state"] == "expired"
    late = _send(client, token, f"{BASE}/{hold['id']}/capture", "late", {"amount": "1.00"})
    assert late.status_code == 409 and late.get_json()["state"] == "expired"
    assert _me(app) == (7_000_000, 3_000_000)  # not released yet: nobody swept
    # The next hold for ada sweeps first: the expired one's credit is available again.
    assert _hold(client, token, "next", amount="10.00").status_code == 201
    assert _me(app) == (0, 10_000_000)
    support.assert_ledger_sound(app)


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"model": "no-such-model", "max_input_tokens": 1, "max_output_tokens": 1}, 404,
     "not_found"),
    ({"model": "gpt-4o", "max_input_tokens": -1, "max_output_tokens": 1}, 400, "malformed"),
    ({"model": "gpt-4o", "max_input_tokens": 10**10, "max_output_tokens": 1}, 400,
     "malformed"),
    ({"model": "gpt-4o", "max_input_tokens": True, "max_output_tokens": 1}, 400, "malformed"),
    ({"model": "gpt-4o", "max_input_tokens": 1}, 400, "malformed"),
    ({"amount": "-1.00"}, 400, "malformed"),
    ({"amount": "1.00", "ttl_seconds": 3601}, 400, "malformed"),
    ({"amount": "1.00", "colour": "red"}, 400, "malformed"),
])
def test_bad_holds_are_clear_4xx_and_move_nothing(app: Flask, client: FlaskClient, token: str,
                                                  body: dict[str, Any], status: int,
                                                  code: str) -> None:
    r = _hold(client, token, "bad", **body)
    assert r.status_code == status, r.get_json()
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["code"] in (code, "amount_invalid")
    assert _me(app) == (10_000_000, 0)
    support.assert_ledger_sound(app)


def test_the_portal_shows_calls_in_progress_and_spend_per_model(
        app: Flask, client: FlaskClient, token: str) -> None:
    hold = _hold(client, token, "p1", model="gpt-4o", max_input_tokens=1_000,
                 max_output_tokens=1_000).get_json()
    _send(client, token, f"{BASE}/{hold['id']}/capture", "p1c",
          {"input_tokens": 1_000, "output_tokens": 500})  # 0.0025 + 0.005 = 0.0075
    _hold(client, token, "p2", amount="1.25")
    browser = app.test_client()
    support.login(browser, ADA)
    page = browser.get("/orgs/acme/wallet").get_data(as_text=True)
    assert 'data-testid="held">1.25 USD' in page
    assert "1 call in progress" in page
    assert 'data-testid="spend-chart"' in page and "<code>gpt-4o</code>" in page
    assert "0.0075 USD" in page
    me = client.get("/api/v1/orgs/acme/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code in (403, 200)  # a service token has no wallet of its own
    support.assert_ledger_sound(app)


@contextmanager
def _statements(app: Flask) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        seen.append(" ".join(sql.split()))

    engine = app.extensions["wallet.engine"]
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def test_a_write_stores_its_answer_in_one_statement_and_reads_prices_once_per_version(
        app: Flask, client: FlaskClient, token: str) -> None:
    """The key is not claimed ahead (the hold's own writes serialise duplicates): one
    INSERT of the answer per write. The price is kept per config version: a second
    placement reads no price row, and a price set since is the price used next."""
    body = {"model": "gpt-4o", "max_input_tokens": 1_000, "max_output_tokens": 1_000}
    assert _hold(client, token, "warm", **body).status_code == 201  # prices read, kept
    with _statements(app) as seen:
        hold = _hold(client, token, "k1", **body)
        assert hold.status_code == 201, hold.get_json()
        done = _send(client, token, f"{BASE}/{hold.get_json()['id']}/capture", "c1",
                     {"input_tokens": 10, "output_tokens": 10})
        assert done.status_code == 200 and done.get_json()["state"] == "captured"
    keyed = [s for s in seen if "idempotency_record" in s]
    assert len(keyed) == 2 and all(s.startswith("INSERT") for s in keyed), keyed
    assert not [s for s in seen if "FROM price" in s], seen
    with app.app_context():
        usage_actions.set_price(db.session(), slug="acme", model="gpt-4o",
                                input_price="1.00", output_price="1.00", actor=CLI)
    again = _hold(client, token, "k2", **body).get_json()
    assert again["amount"] == "0.002"  # 2,000 tokens at 1.00 per million
    support.assert_ledger_sound(app)


def test_a_key_still_in_flight_elsewhere_is_409_and_moves_nothing_until_its_lease_ends(
        app: Flask, client: FlaskClient, token: str) -> None:
    """A write runs before it stores its answer; a key some other request claimed and
    has not finished (a claim committed, its lease live) rolls that work back and
    answers 409, as a claiming request would; once the lease is over, it runs."""
    from wallet.store import idempotency as idempotency_store
    from wallet.store import people

    now = set_clock(app, date(2027, 2, 1))
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        body = {"person": ADA, "amount": "1.00"}
        assert idempotency_store.claim(
            s, org_id=org.id, scope="holds", key="busy", request_hash=fingerprint(body),
            now=now, lease=timedelta(seconds=60)) is None
        s.commit()
    r = _hold(client, token, "busy", amount="1.00")
    assert r.status_code == 409 and r.get_json()["code"] == "idempotency_in_flight"
    assert _me(app) == (10_000_000, 0)
    other = _hold(client, token, "busy", amount="2.00")
    assert other.status_code == 422 and other.get_json()["code"] == "idempotency_conflict"
    assert _me(app) == (10_000_000, 0)
    app.extensions[clock.EXTENSION].advance(seconds=61)
    taken = _hold(client, token, "busy", amount="1.00")
    assert taken.status_code == 201 and _me(app) == (9_000_000, 1_000_000)
    replay = _hold(client, token, "busy", amount="1.00")
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.get_json() == taken.get_json()
    support.assert_ledger_sound(app)
