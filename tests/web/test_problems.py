"""Problem documents: one title per type; the headers HTTP asks for (Allow, WWW-Authenticate)."""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, abort
from flask.testing import FlaskClient
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import default_exceptions

import wallet
from tests import fed_support
from tests.support import World
from wallet.core.errors import ERROR_CODES, Refusal, RowsInvalid, WalletError


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def _import_everything() -> None:
    """Define every WalletError subclass, wherever it lives."""
    for info in pkgutil.walk_packages(wallet.__path__, "wallet."):
        if ".migrations" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _instances() -> list[WalletError]:
    _import_everything()
    errors: list[WalletError] = [WalletError()]
    for cls in _all_subclasses(WalletError):
        if issubclass(cls, RowsInvalid):
            errors.append(cls([(2, "bad row")]))
        elif issubclass(cls, Refusal):
            errors += [cls(code, "passed on") for code in (*ERROR_CODES, "peer_specific")]
        else:
            errors.append(cls())
    return errors


def _raising_app(app: Flask) -> None:
    """Routes that make each handler answer: every HTTP error, CSRF, database, a bug."""
    def http(code: int) -> None:
        abort(code)

    def csrf() -> None:
        raise CSRFError("The CSRF token is missing.")

    def data_error() -> None:
        raise sa.exc.DataError("SELECT 1", {}, ValueError("NUL"))

    def lost() -> None:
        raise sa.exc.OperationalError("SELECT 1", {}, ValueError("gone"),
                                      connection_invalidated=True)

    def bug() -> None:
        raise RuntimeError("a bug")

    app.add_url_rule("/api/v1/_test/http/<int:code>", "t_http", http)
    for name, view in (("csrf", csrf), ("data", data_error), ("lost", lost), ("bug", bug)):
        app.add_url_rule(f"/api/v1/_test/{name}", f"t_{name}", view)


def test_every_problem_type_has_exactly_one_title(app: Flask) -> None:
    from wallet.web.errors import from_error

    _raising_app(app)
    titles: dict[str, set[str]] = defaultdict(set)
    with app.test_request_context("/api/v1/x"):
        instances = _instances()
        assert len(instances) > 40
        for err in instances:
            body = from_error(err).get_json()
            assert body["type"].endswith("/" + err.code) and body["code"] == err.code
            titles[body["type"]].add(body["title"])
    client = app.test_client()
    answers = [client.get(f"/api/v1/_test/http/{code}") for code in sorted(default_exceptions)]
    answers += [client.get(f"/api/v1/_test/{name}") for name in ("csrf", "data", "lost", "bug")]
    answers += [client.post("/api/v1/openapi.json"), client.get("/api/v1/nothing")]
    for r in answers:
        assert r.mimetype == "application/problem+json", r.status_code
        body = r.get_json()
        assert body["status"] == r.status_code
        titles[body["type"]].add(body["title"])
    ambiguous = {t: sorted(v) for t, v in titles.items() if len(v) > 1}
    assert ambiguous == {}
    assert len(titles) >= len(ERROR_CODES)


def test_a_problem_keeps_the_specific_words_in_its_detail(app: Flask) -> None:
    from wallet.core.errors import MalformedToken, TokenTooLarge
    from wallet.web.errors import from_error

    with app.test_request_context("/api/v1/x"):
        token = from_error(MalformedToken()).get_json()
        big = from_error(TokenTooLarge()).get_json()
    assert token["title"] == "Request or token is malformed"
    assert token["detail"] == "Token is malformed"
    assert big["title"] == "Input is too large" and big["detail"] == "Token is too large"


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/api/v1/orgs/acme/verify", {"POST"}),
    ("DELETE", "/api/v1/orgs/acme/me/notes", {"GET", "POST"}),
    ("PUT", "/login", {"GET", "POST"}),
    ("GET", "/logout", {"POST"}),
])
def test_405_names_the_allowed_methods(client: FlaskClient, method: str, path: str,
                                       allowed: set[str]) -> None:
    r = client.open(path, method=method)
    assert r.status_code == 405
    methods = {m.strip() for m in r.headers["Allow"].split(",")}
    assert allowed <= methods and method not in methods


def test_401_carries_a_bearer_challenge(app: Flask, client: FlaskClient, world: World) -> None:
    r = client.get("/api/v1/orgs/acme/me")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Bearer realm="{app.config["WALLET_BASE_URL"]}"'
    bad = client.get("/api/v1/orgs/acme/me", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"] == (
        f'Bearer realm="{app.config["WALLET_BASE_URL"]}", error="invalid_token"')
    token = fed_support.api_token(app, "acme")
    ok = client.get("/api/v1/orgs/acme/me", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and "WWW-Authenticate" not in ok.headers


def test_every_401_the_app_answers_has_a_challenge(client: FlaskClient, world: World) -> None:
    answers: list[Any] = [
        client.post("/api/v1/orgs/acme/honour", json={"presentations": ["x"]},
                    headers={"Idempotency-Key": "k"}),
        client.post("/api/v1/orgs/acme/usage", json={}, headers={"Idempotency-Key": "k"}),
        client.get("/api/v1/orgs/acme/me/notes", headers={"Authorization": "Basic eDp5"}),
    ]
    for r in answers:
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
