"""Tenant isolation over every route: acme's admin sees nothing of globex."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World

# Public by design: anyone may read an issuer's metadata, keys and status lists, use its
# public verification page and API, and ask it for a nonce (docs/protocol.md §6 "Issuer
# documents" and §7 "API routes").
PUBLIC = {
    "wellknown.metadata", "wellknown.jwks", "wellknown.status_list", "public.verify_page",
    "api.verify", "api.nonces", "api.redeem", "api.settlements", "api.settlement_view",
    "api.reissue", "api.openapi", "static",
    "auth.login",
    "auth.logout", "auth.home", "auth.accept_invite", "auth.healthz",
}


def _org_routes(app: Flask) -> list[tuple[str, str, set[str]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC or "slug" not in rule.arguments:
            continue
        path = rule.rule.replace("<slug>", "globex")
        path = re.sub(r"<int(?:\([^)]*\))?:[a-z_]+>", "1", path)
        path = re.sub(r"<[a-z_:]+>", "x", path)
        routes.append((rule.endpoint, path, set(rule.methods or ()) - {"HEAD", "OPTIONS"}))
    return sorted(routes)


def test_every_org_route_is_closed_to_another_orgs_admin(app: Flask, client: FlaskClient,
                                                         world: World) -> None:
    support.login(client, world.acme_admin)
    token = support.csrf_token(client, "/orgs/acme/wallet")
    routes = _org_routes(app)
    assert len(routes) >= 5
    for endpoint, path, methods in routes:
        for method in methods:
            r = client.open(path, method=method, data={"csrf_token": token},
                            headers={"X-CSRF-Token": token})
            assert r.status_code in (401, 403, 404), (endpoint, method, path, r.status_code)


def test_engineer_cannot_open_admin_pages(app: Flask, client: FlaskClient, world: World) -> None:
    support.login(client, world.bob)
    token = support.csrf_token(client, "/orgs/acme/wallet")
    for endpoint, path, methods in _org_routes(app):
        if not endpoint.startswith("admin."):
            continue
        for method in methods:
            r = client.open(path.replace("globex", "acme"), method=method,
                            data={"csrf_token": token})
            assert r.status_code == 403, (endpoint, method, r.status_code)


def test_unknown_organisation_is_404(client: FlaskClient, world: World) -> None:
    support.login(client, world.acme_admin)
    assert client.get("/orgs/nope/wallet").status_code == 404
    assert client.get("/orgs/nope/admin/").status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/orgs/globex/me"])
def test_api_token_of_one_org_does_not_open_another(app: Flask, client: FlaskClient,
                                                    world: World, path: str) -> None:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    with app.app_context():
        token, _ = orgs.create_token(db.session(), slug="acme", email=world.ada, actor=Actor.cli())
    r = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "forbidden"
    r = client.get("/api/v1/orgs/acme/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.get_json()["balance"]["available"] == "0.00"


def test_token_use_is_recorded_for_its_owner(app: Flask, client: FlaskClient,
                                             world: World) -> None:
    from wallet import db
    from wallet.actions import orgs
    from wallet.actions._base import Actor
    from wallet.models import ApiToken

    with app.app_context():
        token, row = orgs.create_token(db.session(), slug="acme", email=world.ada,
                                       actor=Actor.cli())
        assert row.last_used_at is None
    assert client.get("/api/v1/orgs/acme/me",
                      headers={"Authorization": f"Bearer {token}"}).status_code == 200
    with app.app_context():
        used = db.session().get(ApiToken, row.id)
        assert used is not None and used.last_used_at is not None


@pytest.mark.parametrize("path", [
    "/orgs/acme/status/99999999999999999999",
    "/orgs/acme/admin/people/99999999999999999999/terminate",
    "/orgs/acme/transactions?page=99999999999999999999",
    "/orgs/acme/admin/notes?page=99999999999999999999",
    "/orgs/acme/admin/grants?page=99999999999999999999",
])
def test_huge_numbers_in_urls_are_not_errors(client: FlaskClient, world: World,
                                             path: str) -> None:
    """Regression: integers beyond the database's range gave 500."""
    support.login(client, world.acme_admin)
    assert client.get(path).status_code in (200, 404)
