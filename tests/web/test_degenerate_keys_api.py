"""The identity-point attack end to end (issue 11, hole 7), on both databases.

Regression: an engineer could export a note bound to the Ed25519 identity point
(`x = AQAAAA…A`) through the API; a KB-JWT "signed" with no private key at all (R =
identity, S = 0) then verified, so the note was a bearer note anyone could present.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from wallet.core import jose, money, notes

IDENTITY = {"kty": "OKP", "crv": "Ed25519", "x": "AQ" + "A" * 41}
ORDER_8 = {"kty": "OKP", "crv": "Ed25519", "x": jose.b64url_encode(bytes.fromhex(
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"))}
NON_CANONICAL_IDENTITY = {"kty": "OKP", "crv": "Ed25519",
                          "x": jose.b64url_encode((2**255 - 19 + 1).to_bytes(32, "little"))}
KEYLESS_SIGNATURE = jose.b64url_encode(b"\x01" + bytes(63))  # R = identity, S = 0


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


@pytest.mark.parametrize("holder_jwk", [IDENTITY, ORDER_8, NON_CANONICAL_IDENTITY],
                         ids=["identity", "order-8", "identity-y-plus-p"])
def test_export_refuses_a_degenerate_holder_key(app: Flask, client: FlaskClient,
                                                holder_jwk: dict[str, str]) -> None:
    fed = fs.setup_federation(app)
    before = fs.wallet_balance(app, "acme")
    answer = client.post("/api/v1/orgs/acme/me/notes",
                         json={"amount": "100.00", "holder_jwk": holder_jwk},
                         headers={"Authorization": f"Bearer {fed.token('acme')}",
                                  "Idempotency-Key": "degenerate-1"})
    assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)
    problem = answer.get_json()
    assert problem["code"] == "malformed"
    assert "Ed25519 public key" in problem["detail"]
    assert fs.wallet_balance(app, "acme") == before  # nothing left the wallet
    assert fs.count(app, "Note") == 0


def _note_bound_to_identity(app: Flask) -> str:
    """What such an export produced before the fix: signed by acme's real key."""
    from wallet import db
    from wallet.keystore import keystore
    from wallet.store import keys as key_store

    with app.app_context():
        s = db.session()
        row = key_store.active_key(s, org_id=fs.org_id(app, "acme"))
        assert row is not None
        key = keystore().load(row, org_slug="acme")
        now = int(time.time())
        payload = {"iss": fs.ACME, "vct": notes.VCT, "jti": notes.new_jti(bytes(16)),
                   "iat": now, "nbf": now, "exp": now + 86_400,
                   "amount": money.parse_money("100.00", "USD").as_json(),
                   "cnf": {"jwk": IDENTITY},
                   "status": {"status_list": {"idx": 7, "uri": f"{fs.ACME}/status/1"}}}
        s.rollback()
        return jose.sign({"alg": "EdDSA", "typ": notes.NOTE_TYP, "kid": row.kid}, payload,
                         key) + "~"


def _keyless_presentation(note: str, nonce: str) -> str:
    header = jose.b64url_encode(jose.json_compact({"alg": "EdDSA", "typ": notes.KB_TYP}))
    claims = jose.b64url_encode(jose.json_compact({
        "iat": int(time.time()), "aud": fs.GLOBEX, "nonce": nonce,
        "sd_hash": notes.sd_hash(note)}))
    return f"{note}{header}.{claims}.{KEYLESS_SIGNATURE}"


def test_a_presentation_bound_to_the_identity_point_is_refused(app: Flask,
                                                                client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = _note_bound_to_identity(app)

    verified = client.post("/api/v1/orgs/globex/verify", json={"presentations": [
        _keyless_presentation(note, fs.nonce(client, "globex"))]}).get_json()
    assert verified["valid"] is False
    assert [e["code"] for e in verified["errors"]] == ["malformed"]
    assert verified["checks"] == [{"name": "format", "ok": False}]

    transport = fs.FaultTransport().install(app)
    answer = fs.honour(client, "globex", fed.token("globex"), [_keyless_presentation(
        note, fs.nonce(client, "globex", fed.token("globex")))])
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert fs.code_of(answer) == "malformed"
    assert transport.redeem_calls() == []  # refused before acme was asked
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0
