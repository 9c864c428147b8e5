"""Sign-in, sessions, CSRF and throttling."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World
from wallet import clock as wallet_clock
from wallet.clock import FakeClock


def test_sign_in_and_out(client: FlaskClient, world: World) -> None:
    assert client.get("/orgs/acme/wallet").status_code == 302  # to /login
    support.login(client, world.ada)
    page = client.get("/orgs/acme/wallet")
    assert page.status_code == 200
    assert "12,500.00 USD" not in page.get_data(as_text=True)  # world gives ada no grant
    assert "Your wallet at Acme AI" in page.get_data(as_text=True)
    token = support.csrf_token(client, "/orgs/acme/wallet")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/orgs/acme/wallet").status_code == 302


def test_wrong_password_is_one_clear_message(client: FlaskClient, world: World) -> None:
    token = support.csrf_token(client)
    r = client.post("/login", data={"email": world.ada, "password": "nope-nope-nope",
                                    "csrf_token": token})
    assert r.status_code == 401
    assert "Email or password is not correct." in r.get_data(as_text=True)
    # The same message for an unknown account: no account enumeration.
    r = client.post("/login", data={"email": "nobody@x.test", "password": "nope-nope-nope",
                                    "csrf_token": token})
    assert "Email or password is not correct." in r.get_data(as_text=True)


def test_session_cookie_attributes(client: FlaskClient, world: World) -> None:
    support.login(client, world.ada)
    cookie = client.get_cookie("wallet_session")
    assert cookie is not None
    assert cookie.http_only
    assert cookie.same_site == "Lax"
    assert not cookie.secure  # http://wallet.test in tests


@pytest.fixture
def https_config(app_config: dict[str, Any]) -> dict[str, Any]:
    return {**app_config, "WALLET_BASE_URL": "https://wallet.example"}


def test_cookie_is_secure_and_host_prefixed_over_https(https_config: dict[str, Any]) -> None:
    from wallet import create_app

    app = create_app(https_config)
    try:
        support.build_world(app)
        client = app.test_client()
        page = client.get("/login", base_url="https://wallet.example")
        token = support._CSRF.search(page.get_data(as_text=True))
        assert token
        r = client.post("/login", base_url="https://wallet.example",
                        headers={"Referer": "https://wallet.example/login"},
                        data={"email": "ada@example.test", "password": support.PASSWORD,
                              "csrf_token": token.group(1) or token.group(2)})
        assert r.status_code == 302
        header = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("__Host-wallet="))
        assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header
        assert "Path=/" in header and "Domain" not in header
        assert "max-age=63072000" in r.headers["Strict-Transport-Security"]
    finally:
        support.assert_ledger_sound(app)
        app.extensions["wallet.engine"].dispose()


def test_form_post_without_csrf_token_is_refused(client: FlaskClient, world: World) -> None:
    r = client.post("/login", data={"email": world.ada, "password": world.password})
    assert r.status_code == 400
    assert "form has expired" in r.get_data(as_text=True)
    support.login(client, world.acme_admin)
    r = client.post("/orgs/acme/admin/", data={"amount": "5.00", "idempotency_key": "x"})
    assert r.status_code == 400
    r = client.post("/orgs/acme/admin/", data={"amount": "5.00", "idempotency_key": "x",
                                               "csrf_token": "forged"})
    assert r.status_code == 400


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    """A movable clock for sign-in throttling: the app's one clock, faked."""
    fake = FakeClock()
    wallet_clock.install(app, fake)
    return fake


def _attempt(client: FlaskClient, email: str, password: str,
             address: str = "127.0.0.1") -> Any:
    page = client.get("/login", environ_base={"REMOTE_ADDR": address})
    match = support._CSRF.search(page.get_data(as_text=True))
    assert match
    return client.post("/login", environ_base={"REMOTE_ADDR": address},
                       data={"email": email, "password": password,
                             "csrf_token": match.group(1) or match.group(2)})


def test_a_stranger_cannot_lock_the_real_user_out(app: Flask, clock: FakeClock,
                                                  world: World) -> None:
    """Regression (issue 11, hole 5): five wrong passwords from anywhere locked the
    account for 15 minutes, again and again."""
    stranger = app.test_client()
    refused = 0
    for _ in range(40):
        r = _attempt(stranger, world.ada, "wrong-wrong-1", address="203.0.113.7")
        refused += r.status_code == 429
        clock.advance(1)
    assert refused > 20  # the stranger is slowed down...
    # ...and ada, at her own address, signs in at once.
    assert _attempt(app.test_client(), world.ada, world.password).status_code == 302


def test_failures_per_account_and_address_grow_delays(app: Flask, clock: FakeClock,
                                                      world: World) -> None:
    client = app.test_client()
    free = app.config["WALLET_LOGIN_FREE_FAILURES"]
    for _ in range(free):
        assert _attempt(client, world.ada, "wrong-wrong-1").status_code == 401
    waits = []
    for _ in range(4):
        r = _attempt(client, world.ada, world.password)  # even the right one must wait
        assert r.status_code == 429
        assert "Too many failed sign-ins" in r.get_data(as_text=True)
        wait = int(r.headers["Retry-After"])
        waits.append(wait)
        clock.advance(wait - 1)
        assert _attempt(client, world.ada, "wrong-wrong-1").status_code == 429
        clock.advance(1)
        assert _attempt(client, world.ada, "wrong-wrong-1").status_code == 401
    assert waits == [2, 4, 8, 16]
    # The delay is capped: hundreds of failures never become a lock.
    for _ in range(30):
        clock.advance(app.config["WALLET_LOGIN_MAX_DELAY_SECONDS"])
        assert _attempt(client, world.ada, "wrong-wrong-1").status_code == 401
    clock.advance(app.config["WALLET_LOGIN_MAX_DELAY_SECONDS"])
    assert _attempt(client, world.ada, world.password).status_code == 302
    # Success forgets this address's failures for the account.
    clock.advance(1)
    assert _attempt(app.test_client(), world.ada, "wrong-wrong-1").status_code == 401


def test_an_address_with_many_failures_is_slowed_not_locked(app: Flask, clock: FakeClock,
                                                           world: World) -> None:
    """Regression: 30 failures from one address (an office behind NAT) blocked everyone
    there for 15 minutes."""
    app.config["WALLET_LOGIN_FREE_FAILURES_PER_ADDRESS"] = 6
    client = app.test_client()
    for i in range(6):
        assert _attempt(client, f"ghost{i}@x.test", "wrong-wrong-1").status_code == 401
    r = _attempt(client, world.bob, world.password)
    assert r.status_code == 429
    wait = int(r.headers["Retry-After"])
    assert 0 < wait <= app.config["WALLET_LOGIN_MAX_ADDRESS_DELAY_SECONDS"]
    # Another address is unaffected; the office waits seconds, not a quarter of an hour.
    assert _attempt(app.test_client(), world.bob, world.password,
                    address="10.0.0.9").status_code == 302
    clock.advance(wait)
    assert _attempt(client, world.bob, world.password).status_code == 302


def test_failures_are_counted_across_processes(app: Flask, app_config: dict[str, Any],
                                               clock: FakeClock, world: World) -> None:
    from wallet import create_app

    other = create_app(app_config)  # another worker on the same database
    try:
        for _ in range(app.config["WALLET_LOGIN_FREE_FAILURES"]):
            assert _attempt(app.test_client(), world.ada, "wrong-wrong-1").status_code == 401
        assert _attempt(other.test_client(), world.ada, world.password).status_code == 429
    finally:
        other.extensions["wallet.engine"].dispose()


def test_changing_the_password_signs_out_other_sessions(app: Flask, client: FlaskClient,
                                                        world: World) -> None:
    from wallet import db, security
    from wallet.store import people

    support.login(client, world.ada)
    assert client.get("/orgs/acme/wallet").status_code == 200
    with app.app_context():
        s = db.session()
        person = people.person_by_email(s, email=world.ada)
        assert person is not None
        person.password_hash = security.hash_password("a brand new password")
        s.add(person)
        s.commit()
    assert client.get("/orgs/acme/wallet").status_code == 302


def test_invitation_sets_a_password_once(app: Flask, client: FlaskClient, world: World) -> None:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        added = orgs.add_person(db.session(), slug="acme", email="new@acme.test",
                                actor=Actor.cli())
    assert added.invite
    path = f"/invite/{added.invite}"
    r = support.post_form(client, path, {"password": "short", "confirm": "short"})
    assert r.status_code == 422 and "at least 10" in r.get_data(as_text=True)
    r = support.post_form(client, path, {"password": "long enough pw", "confirm": "long enough pw"})
    assert r.status_code == 302
    other = app.test_client()
    r = support.post_form(other, path, {"password": "another pw 123", "confirm": "another pw 123"})
    assert r.status_code == 401
    support.login(app.test_client(), "new@acme.test", "long enough pw")


def test_open_redirect_is_not_followed(client: FlaskClient, world: World) -> None:
    token = support.csrf_token(client)
    r = client.post("/login?next=//evil.example/x", data={
        "email": world.ada, "password": world.password, "csrf_token": token})
    assert r.status_code == 302
    assert r.headers["Location"] == "/"


def test_no_admin_can_take_over_an_account_of_another_organisation(
        app: Flask, client: FlaskClient, world: World) -> None:
    """Regression: an admin of one org re-invited acme's admin (added to their own org)
    and set that account's password through the link."""
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor
    from wallet.store import people

    with app.app_context():
        s = db.session()
        orgs.create_org(s, slug="evil", name="Evil", admin_email="mallory@evil.test",
                        actor=Actor.cli(), admin_password=world.password)
        orgs.add_person(s, slug="evil", email=world.acme_admin, actor=Actor.cli())
        victim = people.person_by_email(s, email=world.acme_admin)
        assert victim is not None
    support.login(client, "mallory@evil.test")
    r = support.post_form(client, f"/orgs/evil/admin/people/{victim.id}/invite", {},
                          page="/orgs/evil/admin/people")
    link = re.search(r"/invite/([A-Za-z0-9_-]+)", r.get_data(as_text=True))
    assert r.status_code == 200 and link  # evil may invite to evil...
    # ...but the link never sets the victim's password, and opens nothing of acme.
    mallory = app.test_client()
    r = support.post_form(mallory, f"/invite/{link.group(1)}",
                          {"password": "mallory's choice", "confirm": "mallory's choice"})
    assert r.status_code == 401
    assert mallory.get("/orgs/acme/wallet").status_code == 302
    support.login(app.test_client(), world.acme_admin)  # the victim's password still works
    # A reset link of evil sets the password but keeps evil only: acme is unconfirmed.
    r = support.post_form(client, f"/orgs/evil/admin/people/{victim.id}/reset", {},
                          page="/orgs/evil/admin/people")
    reset = re.search(r"/reset/([A-Za-z0-9_-]+)", r.get_data(as_text=True))
    assert reset
    r = support.post_form(mallory, f"/reset/{reset.group(1)}",
                          {"password": "mallory's choice", "confirm": "mallory's choice"})
    assert r.status_code == 302
    assert mallory.get("/orgs/evil/wallet").status_code == 200
    assert mallory.get("/orgs/acme/admin/").status_code == 404
    assert mallory.get("/orgs/acme/wallet").status_code == 404
