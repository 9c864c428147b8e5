"""`wallet settlement reconcile` and GET /api/v1/orgs/<slug>/settlements/<counterparty>
(issue 15): each side fetches the other's signed view of the pair and lists every
difference; exit 1 on any. On both databases."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, GLOBEX
from tests.support import run_cli


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _owed(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    for amount in ("1000.00", "1750.00"):
        assert fs.bring(fed, client, fs.export(app, fed.holder, amount)).status_code == 200


def _reconcile(app: Flask, capsys: pytest.CaptureFixture[str], slug: str,
               party: str) -> tuple[int, dict[str, Any], str]:
    out = run_cli(app, capsys, "settlement", "reconcile", "--org", slug, "--counterparty",
                  party, "--json")
    return out.exit_code, json.loads(out.out), out.err


def _pay(app: Flask, capsys: pytest.CaptureFixture[str], amount: str, reference: str) -> int:
    return run_cli(app, capsys, "settlement", "pay", "--org", "acme", "--counterparty", GLOBEX,
                   "--amount", amount, "--reference", reference).exit_code


def test_both_sides_agree_after_honours_and_payments(app: Flask, client: FlaskClient,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _owed(app, client)
    for slug, party in (("acme", GLOBEX), ("globex", ACME)):
        code, data, err = _reconcile(app, capsys, slug, party)
        assert code == 0, err
        assert data["agree"] is True and data["differences"] == []
    assert _pay(app, capsys, "1000.00", "wire 1") == 0
    code, data, err = _reconcile(app, capsys, "acme", GLOBEX)
    assert code == 0, err
    assert data["receipts"] == {"they_redeemed": 2, "we_honoured": 0}
    assert data["payments"] == 1
    code, _data, err = _reconcile(app, capsys, "globex", ACME)
    assert code == 0, err
    support.assert_ledger_sound(app)


def test_an_unacknowledged_payment_and_a_one_sided_record_are_differences(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed(app, client)

    def lose(method: str, url: str, forward: Any) -> Any:
        answer = forward()
        if method == "POST" and url.endswith("/settlements"):
            from wallet.core.errors import IssuerUnavailable

            raise IssuerUnavailable("connection reset")
        return answer

    fs.FaultTransport(lose).install(app)
    assert _pay(app, capsys, "1000.00", "wire 1") == 1
    code, data, _err = _reconcile(app, capsys, "acme", GLOBEX)
    assert code == 1
    assert any("not acknowledged yet" in d for d in data["differences"])
    assert any("we owe them in USD: 2750.00 by our ledger, 1750.00 by theirs" in d
               for d in data["differences"])
    fs.FaultTransport().install(app)
    assert _pay(app, capsys, "1000.00", "wire 1") == 0  # sent again: acknowledged
    assert _reconcile(app, capsys, "acme", GLOBEX)[0] == 0

    # A payment recorded on one side only (outside the protocol) shows as a difference.
    assert run_cli(app, capsys, "settlement", "record", "--org", "acme", "--counterparty",
                   GLOBEX, "--paid", "50.00", "--idempotency-key", "w-9").exit_code == 0
    out = run_cli(app, capsys, "settlement", "reconcile", "--org", "globex",
                  "--counterparty", ACME)
    assert out.exit_code == 1
    assert "difference: what they owe us in USD: 1750.00 by our ledger, 1700.00 by theirs" \
        in out.err
    support.assert_ledger_sound(app)


def _query(app: Flask, *, payer: str = "globex", audience: str = ACME,
           key: Ed25519PrivateKey | None = None, iat: int | None = None) -> str:
    from wallet import db
    from wallet.core import jose
    from wallet.keystore import keystore
    from wallet.store import keys as key_store

    oid = fs.org_id(app, payer)
    with app.app_context():
        s = db.session()
        row = key_store.active_key(s, org_id=oid)
        assert row is not None
        kid, signer = row.kid, key or keystore().load(row, org_slug=payer)
        s.rollback()
    return jose.sign({"alg": "EdDSA", "typ": "cc-settlement-query+jwt", "kid": kid},
                     {"iss": fs.issuer(payer), "aud": audience, "jti": "urn:uuid:q",
                      "iat": int(time.time()) if iat is None else iat}, signer)


def test_the_view_is_given_only_to_the_counterparty_itself(app: Flask,
                                                           client: FlaskClient) -> None:
    _owed(app, client)
    path = f"/api/v1/orgs/acme/settlements/{quote(GLOBEX, safe='')}"
    ok = client.get(path, query_string={"request": _query(app)})
    assert ok.status_code == 200, ok.get_data(as_text=True)
    assert ok.get_json()["view"].count(".") == 2
    cases = {
        "bad_signature": _query(app, key=Ed25519PrivateKey.generate()),
        "audience_mismatch": _query(app, audience=GLOBEX),
        "malformed": _query(app, iat=int(time.time()) - 3600),
    }
    for code, token in cases.items():
        answer = client.get(path, query_string={"request": token})
        assert answer.status_code in (400, 422) and fs.code_of(answer) == code, code
    # Signed by globex, asking about another organisation's pair.
    other = f"/api/v1/orgs/acme/settlements/{quote(fs.issuer('initech'), safe='')}"
    assert fs.code_of(client.get(other, query_string={"request": _query(app)})) \
        == "untrusted_issuer"
    assert fs.code_of(client.get(path)) == "malformed"
    assert fs.code_of(client.get(path, query_string={"request": "x"})) == "malformed"
    support.assert_ledger_sound(app)
