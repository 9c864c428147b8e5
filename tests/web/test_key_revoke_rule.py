"""The keys page refuses to revoke the active key: rotate first (as the page says)."""

from __future__ import annotations

import html as html_lib

from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests import support
from tests.support import World

KEYS = "/orgs/acme/admin/keys"


def _state(app: Flask, kid: str) -> str:
    from wallet import db
    from wallet.store import keys as key_store

    with app.app_context():
        row = key_store.key_by_kid(db.session(), org_id=ns.org_id(app), kid=kid)
        assert row is not None
        return row.state


def test_the_active_key_is_not_revoked_from_the_page(app: Flask, client: FlaskClient,
                                                      world: World) -> None:
    """Regression: the page said "rotate first" but revoked the only key when asked."""
    kid = ns.generate_key(app)
    support.login(client, world.acme_admin)
    r = support.post_form(client, f"{KEYS}/revoke", {
        "kid": kid, "compromised_at": "2026-01-01T00:00:00Z", "confirm": kid[:8]})
    assert r.status_code == 400, r.status_code
    page = html_lib.unescape(r.get_data(as_text=True))
    assert "active key" in page and "rotate first" in page
    assert _state(app, kid) == "active"
    # Rotate, then the retired key is revoked as before.
    assert support.post_form(client, f"{KEYS}/rotate", {}, page=KEYS).status_code == 302
    r = support.post_form(client, f"{KEYS}/revoke", {
        "kid": kid, "compromised_at": "2026-01-01T00:00:00Z", "confirm": kid[:8]}, page=KEYS)
    assert r.status_code == 302 and _state(app, kid) == "revoked"
