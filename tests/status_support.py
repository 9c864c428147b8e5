"""Helpers for the status-list tests: issuer records written in bulk, served list tokens."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session

from wallet.core import jose, notes
from wallet.models import Note

# Dead notes only: an active record needs its amount in `notes_outstanding` (the ledger
# check at teardown), which only a real export books.
DEAD_STATES = ("revoked", "redeemed", "reclaimed")
HOLDER_JWK = jose.public_jwk(Ed25519PrivateKey.generate())


def dead_note_rows(*, org_id: int, person_id: int, kid: str, number: int,
                   placed: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    """Issuer records of notes no longer valid, at the given (index, state) of list `number`.

    They carry no signed token (nothing presents them); the status list is built from
    these records exactly as from exported ones.
    """
    now = datetime.now(UTC)
    rows = []
    for idx, state in placed:
        rows.append({
            "org_id": org_id, "jti": notes.new_jti(secrets.token_bytes(16)),
            "person_id": person_id, "amount": 10_000, "currency": "USD",
            "holder_jkt": jose.thumbprint(HOLDER_JWK), "holder_jwk": HOLDER_JWK, "kid": kid,
            "status_list": number, "status_idx": idx, "state": state,
            "issued_at": now - timedelta(days=1), "expires_at": now + timedelta(days=364),
            "token": "bulk-record-without-a-token",
            "revoked_at": now if state == "revoked" else None,
            "redeemed_at": now if state == "redeemed" else None,
            "reclaimed_at": now if state == "reclaimed" else None,
        })
    return rows


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert issuer records in bulk (an executemany: no ORM objects)."""
    session.execute(sa.insert(Note.__table__), rows)


def list_token(client: FlaskClient, number: int, slug: str = "acme") -> str:
    """The status list token as served (the issuer's 2 s cache dropped first)."""
    from tests import fed_support

    fed_support.clear_caches(client.application)
    answer = client.get(f"/orgs/{slug}/status/{number}")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    return answer.get_data(as_text=True)


def counts_per_list(app: Flask, org_id: int) -> dict[int, int]:
    """How many notes each of an organisation's status lists holds."""
    from wallet import db

    with app.app_context():
        s = db.session()
        found = dict(s.execute(sa.select(Note.status_list, sa.func.count())
                               .where(Note.org_id == org_id).group_by(Note.status_list)).all())
        duplicates = s.execute(sa.select(Note.status_list, Note.status_idx)
                               .where(Note.org_id == org_id)
                               .group_by(Note.status_list, Note.status_idx)
                               .having(sa.func.count() > 1)).all()
        s.rollback()
    assert duplicates == []
    return {int(k): int(v) for k, v in found.items()}
