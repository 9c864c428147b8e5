"""Personal API tokens: shown once in the answer (never in a session), expiry, last use."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World

TOKEN = re.compile(r"ccw_[A-Za-z0-9_-]{43}")


def _create(client: FlaskClient, **fields: str) -> Any:
    return support.post_form(client, "/orgs/acme/tokens", {"label": "laptop", **fields})


def test_a_new_token_is_shown_in_the_answer_and_kept_in_no_session(
        app: Flask, client: FlaskClient, world: World) -> None:
    """Regression (issue 11, hole 2): the new token waited in the signed (not encrypted)
    session cookie for the next page, so a copy of the cookie revealed it."""
    from wallet import db
    from wallet.models import WebSession

    support.login(client, world.ada)
    r = _create(client)
    assert r.status_code == 200
    shown = TOKEN.findall(r.get_data(as_text=True))
    assert len(shown) == 1
    token = shown[0]
    cookies = " ".join(h for h in r.headers.getlist("Set-Cookie"))
    assert token not in cookies and token[4:20] not in cookies
    with app.app_context(), db.engine().connect() as c:
        stored = [str(row.data) for row in c.execute(sa.select(WebSession.__table__))]
    assert stored and all(token not in data for data in stored)
    # Shown once: the next page does not show it again.
    assert token not in client.get("/orgs/acme/tokens").get_data(as_text=True)
    assert client.get("/api/v1/orgs/acme/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_a_token_may_expire_and_then_answers_401(app: Flask, client: FlaskClient,
                                                 world: World) -> None:
    from wallet import clock

    fake = clock.FakeClock()
    clock.install(app, fake)
    support.login(client, world.ada)
    r = _create(client, expires_days="7")
    token = TOKEN.findall(r.get_data(as_text=True))[0]
    page = client.get("/orgs/acme/tokens").get_data(as_text=True)
    expires = (fake.now() + timedelta(days=7)).date().isoformat()
    assert expires in page
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/orgs/acme/me", headers=bearer).status_code == 200
    fake.advance(days=7, minutes=1)
    r = client.get("/api/v1/orgs/acme/me", headers=bearer)
    assert r.status_code == 401
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "unauthorized"
    assert "expired" in r.get_json()["detail"]


@pytest.mark.parametrize("days", ["0", "-3", "x", "100000"])
def test_a_wrong_expiry_is_refused_next_to_the_field(client: FlaskClient, world: World,
                                                     days: str) -> None:
    support.login(client, world.ada)
    r = _create(client, expires_days=days)
    assert r.status_code == 422
    assert not TOKEN.search(r.get_data(as_text=True))


def test_last_use_is_shown_on_the_tokens_page(client: FlaskClient, world: World) -> None:
    support.login(client, world.ada)
    token = TOKEN.findall(_create(client).get_data(as_text=True))[0]
    page = client.get("/orgs/acme/tokens").get_data(as_text=True)
    assert re.search(r'data-testid="last-used">—<', page)
    client.get("/api/v1/orgs/acme/me", headers={"Authorization": f"Bearer {token}"})
    page = client.get("/orgs/acme/tokens").get_data(as_text=True)
    assert re.search(r'data-testid="last-used">\d{4}-\d\d-\d\d', page)


def test_cli_tokens_may_expire(app: Flask, world: World,
                               capsys: pytest.CaptureFixture[str]) -> None:
    r = support.run_cli(app, capsys, "token", "create", "--org", "acme", "--email", world.ada,
                        "--expires-days", "30")
    assert r.exit_code == 0, r.err
    assert TOKEN.fullmatch(r.out.strip()) and "expires" in r.err
    r = support.run_cli(app, capsys, "token", "create", "--org", "acme", "--service",
                        "--expires-days", "0")
    assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 1
