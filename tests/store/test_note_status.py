"""`note_status`: what an issuer's own record says of a note, as verifying its own note reads
it (three columns, no model object), on both databases."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask

from tests import fed_support as fs
from tests import support


def test_it_reads_the_record_and_what_the_session_has_not_sent_yet(
        app: Flask, world: support.World) -> None:
    from wallet import db
    from wallet.store import notes as note_store

    fs.generate_keys(app, "acme")
    fs.give(app, "acme", fs.ADA, "100.00")
    note = fs.export(app, Ed25519PrivateKey.generate(), "10.00")
    org = fs.org_id(app, "acme")
    with app.app_context():
        s = db.session()
        assert note_store.note_status(s, org_id=org, jti=note.jti) == (
            note.status_idx, "active", None)
        assert note_store.note_status(s, org_id=org, jti="no-such-note") is None
        assert note_store.note_status(s, org_id=org + 1, jti=note.jti) is None
        # A change the session holds but has not flushed is seen, as an ORM query's
        # autoflush would have sent it first.
        row = note_store.note_by_jti(s, org_id=org, jti=note.jti)
        assert row is not None
        row.state, row.revoke_reason = "revoked", "left the company"
        assert note_store.note_status(s, org_id=org, jti=note.jti) == (
            note.status_idx, "revoked", "left the company")
        s.rollback()
