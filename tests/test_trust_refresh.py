"""Pinned issuer keys refresh on their own: when stale, and on an unknown kid."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from tests.support import World
from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import notes as note_actions
from wallet.actions import trust as trust_actions
from wallet.actions._base import Actor
from wallet.actions.lookups import Lookups
from wallet.actions.verify import check
from wallet.core import jose, ledger
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import people

CLI = Actor.cli()
ACME = "http://wallet.test/orgs/acme"


def _setup(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        key_actions.generate(s, slug="acme", actor=CLI)
        trust_actions.add(s, slug="globex", issuer=ACME, actor=CLI)
        org = people.org_by_slug(s, slug="acme")
        ada = people.person_by_email(s, email=world.ada)
        assert org and org.id and ada and ada.id
        ledger_store.post(s, org_id=org.id, posting=ledger.Posting(
            "pool", ledger.wallet(ada.id), 100_000_000, "USD", "grant", "refresh"))
        s.commit()


def _globex_verifies(app: Flask, token: str) -> dict[str, object]:
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="globex")
        assert org is not None
        return check(s, org=org, items=[(token, False)])[0].as_json()


def _age_pin(app: Flask, seconds: int) -> None:
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="globex")
        assert org and org.id
        entry = fed_store.entry(s, org_id=org.id, issuer=ACME)
        assert entry is not None
        entry.refreshed_at = datetime.now(UTC) - timedelta(seconds=seconds)
        s.add(entry)
        people.bump_config(s, org_id=org.id)  # as every change to a trust entry must
        s.commit()


def _export(app: Flask, world: World) -> str:
    with app.app_context():
        return note_actions.export(db.session(), slug="acme", email=world.ada, amount="1.00",
                                   holder_jwk=jose.public_jwk(Ed25519PrivateKey.generate()),
                                   actor=CLI).token


def test_a_rotated_key_is_picked_up_on_first_sight(app: Flask, world: World) -> None:
    _setup(app, world)
    with app.app_context():
        key_actions.rotate(db.session(), slug="acme", actor=CLI)
    token = _export(app, world)
    # Pinned a moment ago: within the minute, the unknown kid is refused, not fetched.
    report = _globex_verifies(app, token)
    assert report["errors"] == [{"code": "unknown_key", "message": report["errors"][0]["message"]}]
    _age_pin(app, 120)
    report = _globex_verifies(app, token)
    assert report["valid"], report
    with app.app_context():
        org = people.org_by_slug(db.session(), slug="globex")
        assert org and org.id
        events = people.audit_events(db.session(), org_id=org.id)
        assert events[0].action == "trust.refresh" and events[0].details["added"]


def test_stale_pins_are_refreshed_before_use(app: Flask, world: World) -> None:
    _setup(app, world)
    with app.app_context():
        key_actions.rotate(db.session(), slug="acme", actor=CLI)
    _age_pin(app, app.config["WALLET_TRUST_REFRESH_SECONDS"] + 5)
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="globex")
        assert org is not None
        pinned = Lookups(s, org).verify(lambda d: d.resolve(ACME))
        # The retired key and the new active one: the rotation was picked up before use.
        assert len(pinned.keys) == 2
        entry = fed_store.entry(s, org_id=org.id or 0, issuer=ACME)
        assert entry is not None
        assert (datetime.now(UTC) - entry.refreshed_at).total_seconds() < 60
