"""The actions' read functions (what the pages show) stay inside the organisation and the
person they are given: ada is at acme and globex, bob at acme only."""

from __future__ import annotations

from flask import Flask

from tests import notes_support as ns
from tests.support import World
from wallet import db
from wallet.actions import accounts, notes, orgs
from wallet.actions import ledger as ledger_actions
from wallet.actions._base import Actor
from wallet.store import ledger as ledger_store
from wallet.store import people


def test_membership_and_members_of_one_organisation_only(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        acme, globex = people.org_by_slug(s, slug="acme"), people.org_by_slug(s, slug="globex")
        bob = people.person_by_email(s, email="bob@acme.test")
        assert acme and globex and bob and bob.id
        assert orgs.confirmed_membership(s, slug="globex", person=bob) is None
        assert orgs.confirmed_membership(s, slug="nope", person=bob) is None
        found = orgs.confirmed_membership(s, slug="acme", person=bob)
        assert found is not None and found[0].slug == "acme" and found[1].person_id == bob.id
        assert orgs.member(s, org=globex, person_id=bob.id) is None
        assert orgs.member(s, org=acme, person_id=bob.id) is not None
        assert "bob@acme.test" not in {p.email for _m, p in orgs.members(s, org=globex)}
        assert [o.slug for _m, o in accounts.memberships(s, person=bob)] == ["acme"]
        assert accounts.is_admin_anywhere(s, person=bob) is False
        assert {e.org_id for e in orgs.audit_events(s, org=globex)} == {globex.id}


def test_tokens_notes_and_transfers_of_one_person_at_one_organisation(
        app: Flask, world: World) -> None:
    ns.generate_key(app)
    ns.give(app, "10.00")
    note = ns.export(app, "4.00")
    with app.app_context():
        s = db.session()
        orgs.create_token(s, slug="acme", email=world.ada, actor=Actor.cli())
        acme, globex = people.org_by_slug(s, slug="acme"), people.org_by_slug(s, slug="globex")
        ada = people.person_by_email(s, email=world.ada)
        bob = people.person_by_email(s, email="bob@acme.test")
        assert acme and acme.id and globex and ada and bob
        assert len(orgs.tokens_of(s, org=acme, person=ada)) == 1
        assert orgs.tokens_of(s, org=globex, person=ada) == []
        assert orgs.tokens_of(s, org=acme, person=bob) == []
        assert notes.note_of(s, org=acme, person=ada, jti=note.jti) is not None
        assert notes.note_of(s, org=acme, person=bob, jti=note.jti) is None
        assert notes.note_of(s, org=globex, person=ada, jti=note.jti) is None
        moved = ledger_actions.transfers_of(s, org=acme, person=ada)
        assert [(m.row.kind, m.source, m.destination, m.sign) for m in moved] == [
            ("export", f"wallet:{ada.id}", "notes_outstanding", -1),
            ("grant", "pool", f"wallet:{ada.id}", 1)]
        assert ledger_actions.transfers_of(s, org=globex, person=ada) == []
        assert ledger_actions.transfers_of(s, org=acme, person=ada, kind="vest") == []
        ids = {m.row.from_account_id for m in moved}
        assert ledger_store.account_names(s, org_id=acme.id, ids=ids)
        assert globex.id is not None
        assert ledger_store.account_names(s, org_id=globex.id, ids=ids) == {}
