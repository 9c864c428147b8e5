"""Sign-in, sessions, CSRF and throttling."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World


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


def test_login_is_throttled_per_account(app: Flask, client: FlaskClient, world: World) -> None:
    token = support.csrf_token(client)
    limit = app.config["WALLET_LOGIN_MAX_PER_ACCOUNT"]
    for _ in range(limit):
        r = client.post("/login", data={"email": world.ada, "password": "wrong-wrong-1",
                                        "csrf_token": token})
        assert r.status_code == 401
    # Even the right password is refused until the window passes.
    r = client.post("/login", data={"email": world.ada, "password": world.password,
                                    "csrf_token": token})
    assert r.status_code == 429
    assert "Too many failed sign-ins" in r.get_data(as_text=True)
    # Another account from another address is unaffected.
    other = app.test_client()
    support.login(other, world.bob)


def test_login_is_throttled_per_address(app: Flask, client: FlaskClient, world: World) -> None:
    app.config["WALLET_LOGIN_MAX_PER_ADDRESS"] = 3
    token = support.csrf_token(client)
    for i in range(3):
        r = client.post("/login", data={"email": f"ghost{i}@x.test", "password": "wrong-wrong-1",
                                        "csrf_token": token})
        assert r.status_code == 401
    r = client.post("/login", data={"email": world.bob, "password": world.password,
                                    "csrf_token": token})
    assert r.status_code == 429
    # The same account from a different client address can still sign in.
    other = app.test_client()
    page = other.get("/login", environ_base={"REMOTE_ADDR": "10.0.0.9"})
    match = support._CSRF.search(page.get_data(as_text=True))
    assert match
    r = other.post("/login", environ_base={"REMOTE_ADDR": "10.0.0.9"},
                   data={"email": world.bob, "password": world.password,
                         "csrf_token": match.group(1) or match.group(2)})
    assert r.status_code == 302


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
    assert r.status_code == 200 and "at least 10" in r.get_data(as_text=True)
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
        pending = orgs.add_person(s, slug="acme", email="pending@x.test", actor=Actor.cli())
        orgs.add_person(s, slug="evil", email="pending@x.test", actor=Actor.cli())
        assert victim is not None and pending.invite
    support.login(client, "mallory@evil.test")
    for person_id in (victim.id, pending.person.id):
        r = support.post_form(client, f"/orgs/evil/admin/people/{person_id}/invite", {},
                              page="/orgs/evil/admin/people")
        assert r.status_code == 302 and "/invite/" not in r.get_data(as_text=True)
    # The victim's password still works; no invitation can replace it.
    support.login(app.test_client(), world.acme_admin)
    with app.app_context():
        s = db.session()
        assert people.person_by_email(s, email=world.acme_admin).invite_hash is None
        # The operator may still re-issue a lost link for a person without a password.
        token = orgs.invite_again(s, slug="acme", email="pending@x.test", actor=Actor.cli())
    assert support.post_form(app.test_client(), f"/invite/{token}", {
        "password": "long enough pw", "confirm": "long enough pw"}).status_code == 302
