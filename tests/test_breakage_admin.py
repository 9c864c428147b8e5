"""Expired notes nobody reissued are listed for the organisation's admins, and booking one
as breakage is an explicit, confirmed action recorded in the ledger and the audit log.
Both databases."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests.support import World, login, post_form
from wallet import clock, db
from wallet.core import ledger
from wallet.store import people


def test_an_admin_books_an_expired_note_as_breakage_once_and_only_when_confirmed(
        app: Flask, client: FlaskClient, world: World) -> None:
    ns.generate_key(app)
    ns.give(app, "100.00")
    expired, fresh = ns.export(app, "30.00"), ns.export(app, "20.00")
    fake = clock.install(app, clock.FakeClock())
    with app.app_context():
        s = db.session()
        acme = people.org_by_slug(s, slug="acme")
        assert acme is not None
        # Its expiry reached (the fake clock moves on past it below).
        s.execute(sa.text("UPDATE note SET expires_at = :t WHERE jti = :j"),
                  {"t": fake.now().replace(microsecond=0), "j": expired.jti})
        s.commit()
    fake.advance(60)
    login(client, world.acme_admin)
    page = client.get("/orgs/acme/admin/notes?state=expired").get_data(as_text=True)
    assert expired.jti in page and fresh.jti not in page and 'data-testid="breakage-help"' \
        in page
    assert page.count('data-testid="breakage-form"') == 1
    outstanding = ns.balance(app, ledger.NOTES_OUTSTANDING)

    path = f"/orgs/acme/admin/notes/{expired.jti}/breakage"
    unconfirmed = post_form(client, path, {}, page="/orgs/acme/admin/notes?state=expired",
                            follow_redirects=True)
    assert "Tick the box to confirm" in unconfirmed.get_data(as_text=True)
    assert ns.note_row(app, expired.jti).state == "active"
    booked = post_form(client, path, {"confirm": "y"},
                       page="/orgs/acme/admin/notes?state=expired", follow_redirects=True)
    assert "booked as breakage" in booked.get_data(as_text=True)
    row = ns.note_row(app, expired.jti)
    assert (row.state, row.reclaim_kind) == ("reclaimed", "breakage")
    assert ns.balance(app, ledger.NOTES_OUTSTANDING) == outstanding - 30_000_000
    assert ns.balance(app, ledger.BREAKAGE) == 30_000_000  # the issuer's income
    again = post_form(client, path, {"confirm": "y"},
                      page="/orgs/acme/admin/notes?state=expired", follow_redirects=True)
    assert "not outstanding" in again.get_data(as_text=True)
    not_yet = post_form(client, f"/orgs/acme/admin/notes/{fresh.jti}/breakage",
                        {"confirm": "y"}, page="/orgs/acme/admin/notes",
                        follow_redirects=True)
    assert "only an expired note" in not_yet.get_data(as_text=True)
    assert ns.note_row(app, fresh.jti).state == "active"
    with app.app_context():
        acme = people.org_by_slug(db.session(), slug="acme")
        assert acme is not None and acme.id is not None
        events = people.audit_events(db.session(), org_id=acme.id)
    assert [e.target for e in events if e.action == "note.breakage"] == [expired.jti]


def test_only_the_issuers_admins_may_book_breakage(
        app: Flask, client: FlaskClient, world: World) -> None:
    ns.generate_key(app)
    ns.give(app, "100.00")
    note = ns.export(app, "30.00")
    login(client, world.globex_admin)
    other = post_form(client, f"/orgs/acme/admin/notes/{note.jti}/breakage",
                      {"confirm": "y"}, page="/account")
    assert other.status_code == 404  # another organisation's admin: not found
    assert ns.note_row(app, note.jti).state == "active"
    engineer = app.test_client()
    login(engineer, world.bob)
    assert post_form(engineer, f"/orgs/acme/admin/notes/{note.jti}/breakage",
                     {"confirm": "y"}, page="/account").status_code == 403
    assert ns.note_row(app, note.jti).state == "active"
