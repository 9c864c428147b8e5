"""The admin Webhooks page: add an endpoint (its secret shown once), bad input next to
its field, enable/disable, a test event, delete with a typed confirmation, the log, and
one organisation's admin kept out of another's endpoints."""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from wallet import db
from wallet.models import WebhookEndpoint, WebhookMessage

PAGE = "/orgs/acme/admin/webhooks"


def _add(client: FlaskClient, url: str, events: list[str], page: str = PAGE) -> Any:
    return support.post_form(client, page, {"url": url, "events": events})


def _endpoints(app: Flask) -> list[WebhookEndpoint]:
    with app.app_context():
        return list(db.session().scalars(sa.select(WebhookEndpoint)))


def _secret(html: str) -> str:
    found = re.search(r'value="(whsec_[^"]+)"', html)
    assert found, "no secret shown"
    return found.group(1)


def test_add_shows_the_secret_once(app: Flask, client: FlaskClient,
                                   world: support.World) -> None:
    support.login(client, world.acme_admin)
    assert client.get(PAGE).status_code == 200
    r = _add(client, "https://hooks.example.test/credits", ["note.redeemed", "balance.low"])
    assert r.status_code == 201
    html = r.get_data(as_text=True)
    secret = _secret(html)
    assert "shown only this once" in html
    [endpoint] = _endpoints(app)
    assert endpoint.event_types == ["note.redeemed", "balance.low"]
    later = client.get(PAGE).get_data(as_text=True)
    assert secret not in later and "hooks.example.test/credits" in later


def test_bad_input_is_shown_next_to_its_field(app: Flask, client: FlaskClient,
                                              world: support.World) -> None:
    support.login(client, world.acme_admin)
    for url, events, where, message in (
            ("ftp://files.example.test/", ["note.redeemed"], "url",
             "Use an http:// or https:// URL"),
            ("not a url", ["note.redeemed"], "url", "Use an http:// or https:// URL"),
            ("https://u:pw@example.test/", ["note.redeemed"], "url", "no user name"),
            ("", ["note.redeemed"], "url", "Enter the endpoint"),
            ("https://hooks.example.test/", [], "events", "Choose at least one event"),
            ("https://hooks.example.test/", ["note.stolen"], "events", "is not a valid choice")):
        r = _add(client, url, events)
        html = r.get_data(as_text=True)
        assert r.status_code == 422, (url, events)
        error = re.search(rf'<p class="error" id="{where}-error">([^<]*)</p>', html)
        assert error and message in error.group(1), (url, events, html[-3000:])
    assert _endpoints(app) == []


def test_disable_enable_test_and_delete(app: Flask, client: FlaskClient,
                                        world: support.World) -> None:
    support.login(client, world.acme_admin)
    _add(client, "https://hooks.example.test/a", ["note.redeemed"])
    [endpoint] = _endpoints(app)
    pid = endpoint.public_id
    r = support.post_form(client, f"{PAGE}/test", {"endpoint": pid}, page=PAGE)
    assert r.status_code == 302
    with app.app_context():
        [message] = db.session().scalars(sa.select(WebhookMessage))
        assert message.type == "webhook.test"
    html = client.get(PAGE).get_data(as_text=True)
    assert message.msg_id in html and "pending" in html  # the delivery log
    support.post_form(client, f"{PAGE}/disable", {"endpoint": pid}, page=PAGE)
    assert not _endpoints(app)[0].enabled
    support.post_form(client, f"{PAGE}/enable", {"endpoint": pid}, page=PAGE)
    assert _endpoints(app)[0].enabled
    r = support.post_form(client, f"{PAGE}/delete", {"endpoint": pid, "confirm": "yes"},
                          page=PAGE)
    assert r.status_code == 422 and "Type DELETE to confirm." in r.get_data(as_text=True)
    assert len(_endpoints(app)) == 1
    r = support.post_form(client, f"{PAGE}/delete", {"endpoint": pid, "confirm": "DELETE"},
                          page=PAGE)
    assert r.status_code == 302 and _endpoints(app) == []
    html = client.get(PAGE).get_data(as_text=True)
    assert message.msg_id in html  # the log keeps the message


def test_one_organisations_admin_cannot_see_or_change_anothers(
        app: Flask, client: FlaskClient, world: support.World) -> None:
    support.login(client, world.acme_admin)
    _add(client, "https://acme-hooks.example.test/", ["note.redeemed"])
    [endpoint] = _endpoints(app)
    client.post("/logout", data={"csrf_token": support.csrf_token(client, PAGE)})
    other = app.test_client()
    support.login(other, world.globex_admin)
    assert other.get(PAGE).status_code in (403, 404)
    mine = other.get("/orgs/globex/admin/webhooks").get_data(as_text=True)
    assert "acme-hooks" not in mine
    globex = "/orgs/globex/admin/webhooks"
    for action, data in (("disable", {}), ("test", {}), ("delete", {"confirm": "DELETE"})):
        r = support.post_form(other, f"{globex}/{action}",
                              {"endpoint": endpoint.public_id, **data}, page=globex)
        assert r.status_code in (302, 422)
        assert "no such webhook endpoint" in (
            r.get_data(as_text=True) if r.status_code == 422 else
            other.get(globex).get_data(as_text=True))
        r = support.post_form(other, f"{PAGE}/{action}",
                              {"endpoint": endpoint.public_id, **data}, page=globex)
        assert r.status_code in (403, 404)
    [still] = _endpoints(app)
    assert still.enabled
    with app.app_context():
        assert db.session().scalar(sa.select(sa.func.count()).select_from(WebhookMessage)) == 0
