"""Hostile input at the boundary: NUL bytes and deep JSON are a 4xx, never a 500.

PostgreSQL refuses NUL in text (`psycopg.DataError`); SQLite stores it. Either way a NUL
anywhere in a request (path, query, form field, JSON string or key, header) is refused
before any view runs: problem+json `malformed` for machines, a readable page for people.
The walk below covers every route of the URL map, like tests/web/test_isolation.py.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World

NUL = "a\x00b"
QUERY_KEYS = ("page", "q", "state", "next", "kind", "issuer", "x")
SKIP = {"static"}

# A plausible body per JSON endpoint, so that a NUL in one member reaches the code that
# would store or look it up (the others being well-formed).
JWK = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
JSON_BODIES: dict[str, list[dict[str, Any]]] = {
    "api.export_note": [{"amount": "1.00", "currency": "USD", "holder_jwk": JWK}],
    "api.honour": [{"presentations": ["x~y"]}],
    "api.verify": [{"note": "x~"}, {"presentations": ["x~y"]}],
    "api.reissue": [{"presentation": "x~y"}],
    "api.redeem": [{"request": "x.y.z"}],
    "api.usage": [{"person": "ada@example.test", "model": "gpt-x", "input_tokens": 1,
                   "output_tokens": 1}],
    "api.nonces": [{}],
}


def _plausible(name: str) -> str:
    """A value that gets a form field past its own validation, by the field's name."""
    lowered = name.lower()
    for hint, value in (("email", "nul-probe@acme.test"), ("amount", "1.00"), ("cap", "1.00"),
                        ("currenc", "USD"), ("date", "2026-01-01"), ("start", "2026-01-01"),
                        ("compromised", "2026-01-01T00:00:00Z"), ("months", "12"),
                        ("every", "month"), ("role", "engineer"), ("direction", "paid"),
                        ("mode", "jwk"), ("issuer", "http://wallet.test/orgs/globex"),
                        ("price", "1.00"), ("password", "long enough password"),
                        ("confirm", "long enough password")):
        if hint in lowered:
            return value
    return "x"


def _json_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _json_paths(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _json_paths(v, (*path, i))]
    return [path] if isinstance(value, str) else []


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return copy


_FIELD = re.compile(r'<(?:input|textarea|select)\b[^>]*\bname="([^"]+)"([^>]*)>')


def _fields(html: str) -> dict[str, str]:
    """Form fields on a page, with their rendered value or a plausible one."""
    fields = {}
    for name, rest in _FIELD.findall(html):
        if name == "csrf_token" or 'type="file"' in rest:
            continue
        value = re.search(r'\bvalue="([^"]*)"', rest)
        fields[name] = value.group(1) if value and value.group(1) else _plausible(name)
    return fields


def _rules(app: Flask) -> list[tuple[str, str, list[str], set[str]]]:
    rules = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP:
            continue
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        rules.append((rule.endpoint, rule.rule, sorted(rule.arguments), methods))
    return sorted(rules)


def _path(rule: str, nul_in: str | None = None) -> str | None:
    """Fill a rule's arguments: valid ones, or a NUL in `nul_in` (None: not possible)."""
    def fill(match: re.Match[str]) -> str:
        converter, name = match.group(1), match.group(2)
        if name == nul_in:
            return "" if converter else "ac%00me"
        if converter and converter.startswith("int"):
            return "1"
        return "acme" if name == "slug" else "x"

    path = re.sub(r"<(?:([a-z]+(?:\([^)]*\))?):)?([a-z_]+)>", fill, rule)
    if nul_in is not None and "%00" not in path:
        return None  # an int converter: a NUL cannot match the route
    return path


def _tokens(app: Flask, world: World) -> tuple[str, str]:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        personal, _ = orgs.create_token(db.session(), slug="acme", email=world.acme_admin,
                                        actor=Actor.cli())
        service, _ = orgs.create_token(db.session(), slug="acme", email=None,
                                       actor=Actor.cli())
    return personal, service


def test_a_nul_anywhere_in_any_route_is_never_a_server_error(
        app: Flask, client: FlaskClient, world: World) -> None:
    personal, service = _tokens(app, world)
    support.login(client, world.acme_admin)
    csrf = support.csrf_token(client, "/orgs/acme/wallet")
    anonymous = app.test_client()
    failures: list[str] = []
    accepted: list[str] = []  # a NUL that was neither refused nor "not found"
    sent = 0

    def send(who: FlaskClient, method: str, path: str, what: str, **kwargs: Any) -> None:
        nonlocal sent
        headers = {"X-CSRF-Token": csrf, "Idempotency-Key": uuid.uuid4().hex,
                   **kwargs.pop("headers", {})}
        r = who.open(path, method=method, headers=headers, **kwargs)
        sent += 1
        if r.status_code >= 500:
            failures.append(f"{method} {path} ({what}): {r.status_code}")
        elif ("%00" in path or "\x00" in what) and r.status_code not in (400, 404):
            accepted.append(f"{method} {path} ({what}): {r.status_code}")

    rules = _rules(app)
    all_fields: dict[str, str] = {}
    page_fields: dict[str, dict[str, str]] = {}
    for endpoint, rule, _args, methods in rules:
        path = _path(rule)
        assert path is not None
        if "GET" in methods and not endpoint.startswith("api."):
            page_fields[endpoint] = _fields(client.get(path).get_data(as_text=True))
            all_fields.update(page_fields[endpoint])
    assert len(all_fields) >= 15, sorted(all_fields)

    for endpoint, rule, args, methods in rules:
        api = endpoint.startswith("api.")
        auth = {"Authorization": f"Bearer {service if endpoint == 'api.usage' else personal}"}
        for method in sorted(methods):
            who = anonymous if api else client
            extra = {"headers": auth} if api else {}
            for arg in args:  # a NUL in each path parameter
                path = _path(rule, nul_in=arg)
                if path is not None:
                    send(who, method, path, f"path {arg}", **extra)
                    if api:
                        send(anonymous, method, path, f"path {arg}, anonymous")
            path = _path(rule)
            assert path is not None
            for key in QUERY_KEYS:  # a NUL in each query parameter
                send(who, method, f"{path}?{key}=a%00b", f"query {key}", **extra)
            if method != "POST":
                continue
            if api:
                for body in JSON_BODIES.get(endpoint, [{"x": "y"}]):
                    for where in _json_paths(body):
                        send(who, method, path, f"json {where} \x00",
                             json=_replaced(body, where, NUL), **extra)
                    send(who, method, path, "json key \x00",
                         json={**body, "k\x00": "v"}, **extra)
                continue
            fields = page_fields.get(endpoint) or all_fields
            for name in fields:  # a NUL in each form field, the others plausible
                data = {**fields, name: NUL, "csrf_token": csrf}
                send(client, method, path, f"form {name} \x00", data=data)
            if endpoint.startswith("auth."):
                data = {**fields, "email": "ada\x00@example.test", "password": "x"}
                send(anonymous, method, path, "anonymous form \x00",
                     data={**data, "csrf_token": support.csrf_token(anonymous, "/login")})
    assert sent > 300
    assert not failures, "\n".join(failures)
    assert not accepted, "\n".join(accepted)


@pytest.mark.parametrize("path", [
    "/login", "/api/v1/orgs/acme/me", "/orgs/acme/wallet", "/api/v1/orgs/acme/verify",
])
def test_a_nul_in_a_header_is_malformed(client: FlaskClient, world: World, path: str) -> None:
    r = client.get(path, headers={"X-Forwarded-For": "1.2.3.4\x00",
                                  "Authorization": "Bearer a\x00b"})
    assert r.status_code == 400


def test_nul_answers_are_problem_json_for_machines(client: FlaskClient, world: World) -> None:
    for method, path in (("POST", "/api/v1/orgs/ac%00me/verify"),
                         ("POST", "/api/v1/orgs/ac%00me/nonces"),
                         ("GET", "/.well-known/jwt-vc-issuer/orgs/ac%00me"),
                         ("GET", "/orgs/ac%00me/jwks.json")):
        r = client.open(path, method=method, json={"note": "x"})
        assert r.status_code == 400, (path, r.status_code)
        assert r.mimetype == "application/problem+json"
        assert r.get_json()["code"] == "malformed"
        assert "NUL" in r.get_json()["detail"]


def test_nul_in_a_form_is_a_readable_page_for_people(client: FlaskClient, world: World) -> None:
    token = support.csrf_token(client, "/login")
    r = client.post("/login", data={"email": "ada\x00@example.test", "password": "x",
                                    "csrf_token": token})
    assert r.status_code == 400
    assert r.mimetype == "text/html"
    page = r.get_data(as_text=True)
    assert "Email" in page or "email" in page
    assert "NUL" in page or "control character" in page


def _json_routes(app: Flask) -> list[tuple[str, str]]:
    routes = [(r.endpoint, _path(r.rule)) for r in app.url_map.iter_rules()
              if r.endpoint.startswith("api.") and "POST" in (r.methods or ())]
    return sorted((endpoint, path) for endpoint, path in routes if path is not None)


def test_deep_json_is_refused_cheaply_on_every_json_endpoint(
        app: Flask, client: FlaskClient, world: World) -> None:
    import time

    personal, service = _tokens(app, world)
    routes = _json_routes(app)
    assert len(routes) >= 6
    deep = "[" * 50_000 + "]" * 50_000
    for endpoint, path in routes:
        token = service if endpoint == "api.usage" else personal
        for body in (deep, '{"a":' * 50_000 + "1" + "}" * 50_000,
                     '{"presentations": ' + "[" * 65 + "]" * 65 + "}"):
            started = time.perf_counter()
            r = client.post(path, data=body, content_type="application/json",
                            headers={"Authorization": f"Bearer {token}",
                                     "Idempotency-Key": uuid.uuid4().hex})
            assert time.perf_counter() - started < 1.0, endpoint
            assert r.status_code == 400, (endpoint, r.status_code, r.get_data(as_text=True))
            assert r.mimetype == "application/problem+json"
            problem = r.get_json()
            assert problem["code"] == "malformed"
            assert "nested deeper than 64" in problem["detail"], (endpoint, problem)


def test_json_at_the_documented_depth_passes_the_boundary(client: FlaskClient) -> None:
    body = '{"note": ' + "[" * 63 + "]" * 63 + "}"  # 64 levels with the object
    r = client.post("/api/v1/orgs/acme/verify", data=body, content_type="application/json")
    assert "nested" not in r.get_data(as_text=True)
    assert r.status_code < 500


def test_lone_surrogates_in_json_are_malformed(client: FlaskClient, world: World) -> None:
    r = client.post("/api/v1/orgs/acme/verify", data='{"note": "x\\ud800"}',
                    content_type="application/json")
    assert r.status_code == 400 and r.get_json()["code"] == "malformed"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_database_refusal_that_slips_through_is_a_logged_400(
        app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The boundary switched off: PostgreSQL's own refusal must still not be a 500."""
    from wallet.web import boundary

    monkeypatch.setattr(boundary, "screen", lambda: None)
    r = client.post("/api/v1/orgs/ac%00me/nonces")
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "malformed"
    assert any("database refused" in m for m in caplog.messages)
    page = client.get("/orgs/ac%00me/verify")  # a page for people: the error page
    assert page.status_code == 400 and page.mimetype == "text/html"


def test_a_nul_inside_an_uploaded_csv_is_not_a_server_error(client: FlaskClient,
                                                            world: World) -> None:
    """A file's content is no form field: the CSV's own checks, or the database guard."""
    import io

    support.login(client, world.acme_admin)
    token = support.csrf_token(client, "/orgs/acme/admin/grants")
    csv = (b"email,amount,start,cliff_months,every,months\n"
           b"ada\x00@example.test,100.00,2026-01-01,0,month,12\n")
    r = client.post("/orgs/acme/admin/grants/import",
                    data={"csrf_token": token, "file": (io.BytesIO(csv), "grants.csv")},
                    content_type="multipart/form-data")
    assert r.status_code in (200, 400, 422), r.status_code
    assert "Nothing was imported" in r.get_data(as_text=True) or r.status_code == 400


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_a_number_that_is_not_finite_is_malformed_on_every_json_endpoint(
        app: Flask, client: FlaskClient, world: World, number: str) -> None:
    """Python's parser takes NaN and Infinity (not JSON) and reads 1e400 as infinity; the
    Idempotency-Key fingerprint (canonical JSON) cannot hold them: refused at the boundary
    (regression: 500 on /holds and /usage)."""
    personal, service = _tokens(app, world)
    routes = _json_routes(app)
    assert len(routes) >= 6
    for endpoint, path in routes:
        token = service if endpoint == "api.usage" or "hold" in endpoint else personal
        r = client.post(path, data='{"amount": ' + number + ', "x": [1, ' + number + ']}',
                        content_type="application/json",
                        headers={"Authorization": f"Bearer {token}",
                                 "Idempotency-Key": uuid.uuid4().hex})
        assert r.status_code == 400, (endpoint, r.status_code, r.get_data(as_text=True))
        assert r.mimetype == "application/problem+json"
        assert r.get_json()["code"] == "malformed"
        assert "not finite" in r.get_json()["detail"], (endpoint, r.get_json())
