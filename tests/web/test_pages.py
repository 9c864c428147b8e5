"""Every page reachable from the navigation renders; the note journey works through forms."""

from __future__ import annotations

import io
import json
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import World
from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import trust as trust_actions
from wallet.actions._base import Actor
from wallet.core import ledger, walletfile
from wallet.store import ledger as ledger_store
from wallet.store import people

CLI = Actor.cli()
ACME = "http://wallet.test/orgs/acme"
GLOBEX = "http://wallet.test/orgs/globex"


@pytest.fixture
def ready(app: Flask, world: World) -> World:
    """Keys at both orgs, mutual trust, and 500.00 USD in ada's acme wallet."""
    with app.app_context():
        s = db.session()
        for slug in ("acme", "globex"):
            key_actions.generate(s, slug=slug, actor=CLI)
        trust_actions.add(s, slug="globex", issuer=ACME, actor=CLI)
        trust_actions.add(s, slug="acme", issuer=GLOBEX, actor=CLI)
        org = people.org_by_slug(s, slug="acme")
        ada = people.person_by_email(s, email=world.ada)
        assert org and org.id and ada and ada.id
        ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
            "pool", ledger.wallet(ada.id), 500_000_000, "USD", "grant", "pages:grant"))
        s.commit()
    return world


def _nav_links(html: str, slug: str) -> set[str]:
    return set(re.findall(rf'href="(/orgs/{slug}/[^"?#]*)"', html))


def test_every_navigation_page_renders(app: Flask, client: FlaskClient, ready: World) -> None:
    support.login(client, ready.acme_admin)
    home = client.get("/orgs/acme/wallet").get_data(as_text=True)
    links = _nav_links(home, "acme")
    assert {"/orgs/acme/notes", "/orgs/acme/export", "/orgs/acme/bring",
            "/orgs/acme/transactions", "/orgs/acme/admin/keys", "/orgs/acme/admin/trust",
            "/orgs/acme/admin/settlement", "/orgs/acme/admin/notes"} <= links
    for link in sorted(links):
        r = client.get(link)
        assert r.status_code == 200, (link, r.status_code)
        assert "Content-Security-Policy" in r.headers
    engineer = app.test_client()
    support.login(engineer, ready.bob)
    page = engineer.get("/orgs/acme/wallet").get_data(as_text=True)
    assert "/orgs/acme/admin/" not in page  # engineers see no admin navigation
    for link in sorted(_nav_links(page, "acme")):
        assert engineer.get(link).status_code == 200, link


def test_export_with_new_key_then_bring_it_to_globex(app: Flask, client: FlaskClient,
                                                     ready: World) -> None:
    support.login(client, ready.ada)
    r = support.post_form(client, "/orgs/acme/export", {
        "amount": "120.50", "mode": "new", "passphrase": "wallet pass 1",
        "confirm": "wallet pass 1", "idempotency_key": "e1"})
    assert r.status_code == 200
    assert r.headers["Content-Disposition"].endswith('.ccwallet"')
    wallet = walletfile.parse(r.get_data(as_text=True))
    assert len(wallet.notes) == 1 and "ENCRYPTED PRIVATE KEY" in wallet.holder_key
    notes_page = client.get("/orgs/acme/notes").get_data(as_text=True)
    assert "120.50 USD" in notes_page and "outstanding" in notes_page
    jti = walletfile.parse(r.get_data(as_text=True)).notes[0]
    detail_links = re.findall(r'href="(/orgs/acme/notes/urn:uuid:[^"]+)"', notes_page)
    assert detail_links
    detail = client.get(detail_links[0])
    assert detail.status_code == 200 and "<svg" in detail.get_data(as_text=True)
    assert client.get(detail_links[0] + "/download").get_data(as_text=True).strip() == jti
    # A wrong passphrase changes nothing and says so next to the field.
    bring = "/orgs/globex/bring"
    bad = support.post_form(client, bring, {
        "w-wallet": (io.BytesIO(r.get_data()), "mine.ccwallet"), "w-passphrase": "nope",
        "w-idempotency_key": "b0"}, content_type="multipart/form-data")
    assert bad.status_code == 400 and "wrong passphrase" in bad.get_data(as_text=True).lower()
    ok = support.post_form(client, bring, {
        "w-wallet": (io.BytesIO(r.get_data()), "mine.ccwallet"),
        "w-passphrase": "wallet pass 1", "w-idempotency_key": "b1"},
        content_type="multipart/form-data")
    text = ok.get_data(as_text=True)
    assert ok.status_code == 200 and "1 note honoured" in text and "120.50 USD" in text
    again = support.post_form(client, bring, {
        "w-wallet": (io.BytesIO(r.get_data()), "mine.ccwallet"),
        "w-passphrase": "wallet pass 1", "w-idempotency_key": "b2"},
        content_type="multipart/form-data")
    assert again.status_code == 422 and "already_redeemed" in again.get_data(as_text=True)
    # The admins see it from both sides.
    admin = app.test_client()
    support.login(admin, ready.acme_admin)
    assert "redeemed" in admin.get("/orgs/acme/admin/notes").get_data(as_text=True)
    acme_side = admin.get("/orgs/acme/admin/settlement").get_data(as_text=True)
    assert "Globex" in acme_side and "120.50 USD" in acme_side
    globex_admin = app.test_client()
    support.login(globex_admin, ready.globex_admin)
    globex_side = globex_admin.get("/orgs/globex/admin/settlement").get_data(as_text=True)
    assert "Acme AI" in globex_side and "120.50 USD" in globex_side


@pytest.mark.parametrize("pasted", ["[" * 999 + "]" * 999, '{"kty": "OKP", "x": "a\\u0000"}',
                                    "not json"])
def test_a_hostile_pasted_holder_jwk_is_a_message_next_to_the_field(
        app: Flask, client: FlaskClient, ready: World, pasted: str) -> None:
    support.login(client, ready.ada)
    r = support.post_form(client, "/orgs/acme/export", {
        "amount": "10.00", "mode": "jwk", "holder_jwk": pasted, "idempotency_key": "deep"})
    assert r.status_code == 400, r.status_code
    assert "Paste the JSON printed by" in r.get_data(as_text=True)


def test_export_with_existing_jwk_and_admin_revoke(app: Flask, client: FlaskClient,
                                                   ready: World) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wallet.core import jose

    support.login(client, ready.ada)
    jwk = json.dumps(jose.public_jwk(Ed25519PrivateKey.generate()))
    r = support.post_form(client, "/orgs/acme/export", {
        "amount": "10.00", "mode": "jwk", "holder_jwk": jwk, "idempotency_key": "x1"})
    assert r.status_code == 302 and "/orgs/acme/notes/urn:uuid:" in r.headers["Location"]
    too_much = support.post_form(client, "/orgs/acme/export", {
        "amount": "9999.00", "mode": "jwk", "holder_jwk": jwk, "idempotency_key": "x2"})
    assert too_much.status_code == 400 and "less than the amount" in too_much.get_data(as_text=True)
    jti = r.headers["Location"].rsplit("/", 1)[-1]
    admin = app.test_client()
    support.login(admin, ready.acme_admin)
    page = admin.get("/orgs/acme/admin/notes")
    token = support._CSRF.search(page.get_data(as_text=True))
    assert token
    revoked = admin.post(f"/orgs/acme/admin/notes/{jti}/revoke",
                         data={"reason": "test", "csrf_token": token.group(1) or token.group(2)})
    assert revoked.status_code == 302
    assert "revoked" in client.get("/orgs/acme/notes").get_data(as_text=True)


def test_public_verify_page(client: FlaskClient, ready: World, app: Flask) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wallet.actions import notes as note_actions
    from wallet.core import jose

    with app.app_context():
        row = note_actions.export(db.session(), slug="acme", email=ready.ada, amount="5.00",
                                  holder_jwk=jose.public_jwk(Ed25519PrivateKey.generate()),
                                  actor=CLI)
        token = row.token
    page = support.post_form(client, "/orgs/acme/verify", {"note": token})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Valid" in text and "The signature is genuine" in text
    tampered = token[:-20] + "AAAA" + token[-16:]
    bad = support.post_form(client, "/orgs/acme/verify", {"note": tampered})
    assert "Not valid" in bad.get_data(as_text=True)
    assert client.get("/orgs/nope/verify").status_code == 404


def test_keys_page_rotate_and_guarded_revoke(app: Flask, client: FlaskClient,
                                             ready: World) -> None:
    support.login(client, ready.acme_admin)
    before = client.get("/orgs/acme/admin/keys").get_data(as_text=True)
    kid = re.search(r"<code>([A-Za-z0-9_-]{43})</code>", before)
    assert kid
    r = support.post_form(client, "/orgs/acme/admin/keys/rotate", {}, page="/orgs/acme/admin/keys")
    assert r.status_code == 302
    wrong = support.post_form(client, "/orgs/acme/admin/keys/revoke", {
        "kid": kid.group(1), "compromised_at": "2026-01-01T00:00:00Z", "confirm": "nope"},
        page="/orgs/acme/admin/keys")
    assert wrong.status_code == 400 and f"Type {kid.group(1)[:8]}" in wrong.get_data(as_text=True)
    right = support.post_form(client, "/orgs/acme/admin/keys/revoke", {
        "kid": kid.group(1), "compromised_at": "2026-01-01T00:00:00Z",
        "confirm": kid.group(1)[:8]}, page="/orgs/acme/admin/keys")
    assert right.status_code == 302
    assert "revoked" in client.get("/orgs/acme/admin/keys").get_data(as_text=True)


def test_people_page_links_termination_and_reinvites(app: Flask, client: FlaskClient,
                                                     ready: World) -> None:
    support.login(client, ready.acme_admin)
    r = support.post_form(client, "/orgs/acme/admin/people", {
        "email": "newbie@acme.test", "role": "engineer"})
    first = re.search(r"/invite/([A-Za-z0-9_-]+)", r.get_data(as_text=True))
    assert r.status_code == 200 and first
    page = client.get("/orgs/acme/admin/people").get_data(as_text=True)
    assert "/terminate" in page and "New invitation link" in page
    with app.app_context():
        newbie = people.person_by_email(db.session(), email="newbie@acme.test")
        assert newbie is not None
    again = support.post_form(client, f"/orgs/acme/admin/people/{newbie.id}/invite", {},
                              page="/orgs/acme/admin/people")
    second = re.search(r"/invite/([A-Za-z0-9_-]+)", again.get_data(as_text=True))
    assert again.status_code == 200 and second and second.group(1) != first.group(1)
    # The old link stopped working; the new one works.
    other = app.test_client()
    stale = support.post_form(other, f"/invite/{first.group(1)}",
                              {"password": "long enough pw", "confirm": "long enough pw"})
    assert stale.status_code == 401
    fresh = support.post_form(other, f"/invite/{second.group(1)}",
                              {"password": "long enough pw", "confirm": "long enough pw"})
    assert fresh.status_code == 302


def _ada_notes(app: Flask, email: str) -> int:
    from sqlmodel import select

    from wallet.models import Note

    with app.app_context():
        ada = people.person_by_email(db.session(), email=email)
        assert ada is not None
        return len(db.session().exec(select(Note).where(Note.person_id == ada.id)).all())


def test_a_resubmitted_export_form_exports_once(app: Flask, client: FlaskClient,
                                                ready: World) -> None:
    """Regression: the export form's hidden key was ignored; a double submit made two
    notes and two debits (with a new key, the second wallet file was worthless)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wallet.core import jose

    support.login(client, ready.ada)
    jwk = json.dumps(jose.public_jwk(Ed25519PrivateKey.generate()))
    form = {"amount": "10.00", "mode": "jwk", "holder_jwk": jwk, "idempotency_key": "same"}
    first = support.post_form(client, "/orgs/acme/export", form)
    again = support.post_form(client, "/orgs/acme/export", form)
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    assert _ada_notes(app, ready.ada) == 1
    new_key = {"amount": "20.00", "mode": "new", "passphrase": "wallet pass 2",
               "confirm": "wallet pass 2", "idempotency_key": "twice"}
    assert support.post_form(client, "/orgs/acme/export", new_key).status_code == 200
    repeat = support.post_form(client, "/orgs/acme/export", new_key)
    assert repeat.status_code == 400
    assert "already made" in repeat.get_data(as_text=True)
    assert _ada_notes(app, ready.ada) == 2
