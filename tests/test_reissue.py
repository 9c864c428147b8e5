"""An expired note is reissued to the same holder key, on a request signed with that key."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from tests import notes_support as ns
from tests.support import World
from wallet import db
from wallet.actions import _base
from wallet.actions import notes as note_actions
from wallet.core import notes

ACME = "http://wallet.test/orgs/acme"
REISSUE = "/api/v1/orgs/acme/notes/reissue"


def _present(app: Flask, token: str, key: Ed25519PrivateKey) -> str:
    nonce = app.test_client().post("/api/v1/orgs/acme/nonces").get_json()["nonce"]
    return notes.present(token, holder_key=key, audience=ACME, nonce=nonce, iat=int(time.time()))


def _expired_note(app: Flask, monkeypatch: pytest.MonkeyPatch,
                  key: Ed25519PrivateKey) -> str:
    from wallet.core import jose

    past = _base.utcnow() - timedelta(days=400)
    with monkeypatch.context() as m:
        m.setattr(note_actions, "utcnow", lambda: past)
        with app.app_context():
            return note_actions.export(db.session(), slug="acme", email=ns.ADA, amount="30.00",
                                       holder_jwk=jose.public_jwk(key),
                                       actor=_base.Actor.cli()).token


def test_reissue_replaces_an_expired_note_once(app: Flask, world: World,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    ns.generate_key(app)
    ns.give(app, "30.00")
    key = Ed25519PrivateKey.generate()
    old = _expired_note(app, monkeypatch, key)
    client = app.test_client()
    assert ns.codes(ns.verify(client, {"note": old})) == ["expired"]
    outstanding = ns.balance(app, "notes_outstanding")
    presentation = _present(app, old, key)
    r = client.post(REISSUE, json={"presentation": presentation})
    assert r.status_code == 201, r.get_json()
    fresh = r.get_json()
    assert fresh["replaces"] == notes.decode(old)["claims"]["jti"]
    assert fresh["amount"] == {"value": "30.00", "currency": "USD"}
    assert notes.decode(fresh["note"])["claims"]["cnf"]["jwk"] == \
        notes.decode(old)["claims"]["cnf"]["jwk"]  # same holder key
    assert ns.verify(client, {"note": fresh["note"]})["valid"]
    assert ns.balance(app, "notes_outstanding") == outstanding  # value moved note to note
    old_row = ns.note_row(app, fresh["replaces"])
    assert (old_row.state, old_row.reclaim_kind, old_row.replaced_by) == (
        "reclaimed", "reissued", fresh["jti"])
    assert ns.codes(ns.verify(client, {"note": old})) == ["expired"]
    # The same proof again: its nonce is spent (and the old note is no longer outstanding).
    again = client.post(REISSUE, json={"presentation": presentation})
    assert again.status_code == 422 and again.get_json()["code"] == "nonce_invalid"
    again = client.post(REISSUE, json={"presentation": _present(app, old, key)})
    assert again.status_code == 409 and again.get_json()["code"] == "conflict"


def test_reissue_needs_the_holder_key_and_an_expired_note(
        app: Flask, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    ns.generate_key(app)
    ns.give(app, "60.00")
    key = Ed25519PrivateKey.generate()
    old = _expired_note(app, monkeypatch, key)
    client = app.test_client()
    stranger = _present(app, old, Ed25519PrivateKey.generate())
    r = client.post(REISSUE, json={"presentation": stranger})
    assert r.status_code == 422 and r.get_json()["code"] == "holder_binding_failed"
    live = ns.export(app, "30.00")
    r = client.post(REISSUE, json={"presentation": _present(app, live.token, live.holder_key)})
    assert r.status_code == 409 and "has not expired" in r.get_json()["detail"]
    assert client.post(REISSUE, json={"note": old}).status_code == 400
