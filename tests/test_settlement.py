"""Settlement statements between employers (DESIGN §11.2, issue 15), on both databases.

acme issued the notes, globex honoured them: acme owes globex. acme pays with a statement
signed by its org key (`wallet settlement pay`), globex acknowledges with one signed by
its own; both ledgers post the payment once. Both organisations live on one app and
reach each other through the real routes in-process (tests/fed_support.py).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, GLOBEX, MICROS
from tests.support import run_cli

STATEMENTS = "/api/v1/orgs/globex/settlements"


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _owed_2750(app: Flask, client: FlaskClient) -> fs.Fed:
    """globex honours three of acme's notes: acme owes globex 2,750.00."""
    fed = fs.setup_federation(app)
    for amount in ("1000.00", "1000.00", "750.00"):
        note = fs.export(app, fed.holder, amount)
        answer = fs.bring(fed, client, note)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return fed


def _lists(app: Flask, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any],
                                                                      dict[str, Any]]:
    """acme's line for globex and globex's line for acme (`settlement list --json`); they
    must agree to the micro."""
    lines = {}
    for slug, party in (("acme", GLOBEX), ("globex", ACME)):
        out = run_cli(app, capsys, "settlement", "list", "--org", slug, "--json")
        assert out.exit_code == 0, out.err
        (lines[slug],) = [ln for ln in json.loads(out.out) if ln["counterparty"] == party]
    acme, globex = lines["acme"], lines["globex"]
    assert acme["we_owe"] == globex["they_owe"]
    assert acme["they_owe"] == globex["we_owe"]
    assert acme["redeemed_by_them"] == globex["honoured_from_them"]
    return acme, globex


def _pay(app: Flask, capsys: pytest.CaptureFixture[str], amount: str,
         reference: str = "wire 2026-12-07") -> support.CliResult:
    return run_cli(app, capsys, "settlement", "pay", "--org", "acme", "--counterparty",
                   GLOBEX, "--amount", amount, "--reference", reference, "--json")


def _settles(app: Flask, slug: str) -> int:
    return fs.count(app, "Transfer", org_id=fs.org_id(app, slug), kind="settle")


def _signed_statement(app: Flask, amount: str = "1000.00", *, jti: str | None = None,
                      reference: str = "wire 1", key: Ed25519PrivateKey | None = None,
                      payer: str = "acme", iat: int | None = None, **extra: Any) -> str:
    """A statement as `payer` would send globex, signed with its active key (or `key`,
    under the active key's kid: a forgery)."""
    from wallet import db
    from wallet.core import jose
    from wallet.keystore import keystore
    from wallet.store import keys as key_store

    now = int(time.time()) if iat is None else iat
    claims = {"iss": fs.issuer(payer), "aud": GLOBEX,
              "jti": jti or f"urn:uuid:{secrets.token_hex(16)}", "iat": now,
              "amount": {"value": amount, "currency": "USD"}, "direction": "pay",
              "through": now, "reference": reference, **extra}
    claims = {k: v for k, v in claims.items() if v is not None}
    payer_id = fs.org_id(app, payer)
    with app.app_context():
        s = db.session()
        row = key_store.active_key(s, org_id=payer_id)
        assert row is not None
        kid, signer = row.kid, key or keystore().load(row, org_slug=payer)
        s.rollback()
    return jose.sign({"alg": "EdDSA", "typ": "cc-settlement+jwt", "kid": kid}, claims, signer)


def _send(client: FlaskClient, token: str) -> Any:
    return client.post(STATEMENTS, json={"statement": token})


def _ack_claims(client: FlaskClient, ack: str) -> dict[str, Any]:
    """The acknowledgement, verified independently (PyJWT) with globex's published JWKS."""
    jwks = client.get("/orgs/globex/jwks.json").get_json()
    kid = jwt.get_unverified_header(ack)["kid"]
    (jwk,) = [k for k in jwks["keys"] if k["kid"] == kid]
    assert jwt.get_unverified_header(ack)["typ"] == "cc-settlement-ack+jwt"
    return jwt.decode(ack, key=jwt.PyJWK(jwk, algorithm="EdDSA"), algorithms=["EdDSA"],
                      audience=ACME, issuer=GLOBEX)


# -- the drift issue 15 reported, and paying ----------------------------------------------


def test_paying_moves_both_sides_by_the_same_amount(app: Flask, client: FlaskClient,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 15: "after acme records paying 1,000.00, acme shows 1,750.00 owed while globex
    still shows 2,750.00 receivable". A payment is now one statement both sides post."""
    _owed_2750(app, client)
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "2750.00"

    out = _pay(app, capsys, "1000.00")
    assert out.exit_code == 0, out.err
    paid = json.loads(out.out)
    assert paid["outstanding"] == {"value": "1750.00", "currency": "USD"}
    assert paid["we_owe"] == {"value": "1750.00", "currency": "USD"}
    assert paid["replayed"] is False
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "1750.00"
    assert acme["redeemed_by_them"] == "2750.00"  # gross stays gross
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 1750 * MICROS
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -1750 * MICROS
    assert _settles(app, "acme") == _settles(app, "globex") == 1

    # Both sides keep the statement and globex's acknowledgement, which verifies with
    # globex's published keys.
    from wallet import db
    from wallet.store import settlement as store

    acme_id, globex_id = fs.org_id(app, "acme"), fs.org_id(app, "globex")
    with app.app_context():
        s = db.session()
        (sent,) = store.statements(s, org_id=acme_id)
        (got,) = store.statements(s, org_id=globex_id)
        s.expunge_all()  # read them after the session ends
        s.rollback()
    assert sent.jti == got.jti == paid["statement"]
    assert (sent.role, got.role) == ("sent", "received")
    assert sent.state == got.state == "acknowledged"
    assert sent.ack == got.ack and sent.ack is not None
    claims = _ack_claims(client, sent.ack)
    assert claims["statement"] == sent.jti
    assert claims["outstanding"] == {"value": "1750.00", "currency": "USD"}

    # Paying the rest brings both to zero.
    assert _pay(app, capsys, "1750.00", "wire 2").exit_code == 0
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "0.00"
    assert run_cli(app, capsys, "ledger", "check").exit_code == 0
    support.assert_ledger_sound(app)


def test_paying_again_with_the_same_reference_posts_nothing(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    first = json.loads(_pay(app, capsys, "1000.00").out)
    again = _pay(app, capsys, "1000.00")
    assert again.exit_code == 0, again.err
    assert json.loads(again.out) == {**first, "replayed": True}
    other = _pay(app, capsys, "999.00")  # the same reference for another amount
    assert other.exit_code == 2 and "idempotency_conflict" in other.err
    acme, _globex = _lists(app, capsys)
    assert acme["we_owe"] == "1750.00"
    assert _settles(app, "acme") == _settles(app, "globex") == 1
    support.assert_ledger_sound(app)


def test_a_lost_acknowledgement_then_the_same_statement_again(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    lost = {"n": 0}

    def drop_first_answer(method: str, url: str, forward: Any) -> Any:
        answer = forward()
        if url.endswith("/settlements") and lost["n"] == 0:
            lost["n"] += 1
            from wallet.core.errors import IssuerUnavailable

            raise IssuerUnavailable("connection reset")  # globex posted; acme never heard
        return answer

    transport = fs.FaultTransport(drop_first_answer).install(app)
    out = _pay(app, capsys, "1000.00")
    assert out.exit_code == 1 and "issuer_unavailable" in out.err
    assert "run the same 'pay' again" in out.err
    # globex posted; acme did not (yet): the figures differ until acme sends it again.
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -1750 * MICROS
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 2750 * MICROS

    retry = _pay(app, capsys, "1000.00")
    assert retry.exit_code == 0, retry.err
    assert json.loads(retry.out)["replayed"] is False  # acme posts now, globex replays
    posts = [c for c in transport.calls if c.url.endswith("/settlements")]
    assert len(posts) == 2
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "1750.00"
    assert _settles(app, "acme") == _settles(app, "globex") == 1
    support.assert_ledger_sound(app)


def test_paying_a_counterparty_that_refuses_posts_nothing(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    """globex no longer trusts acme: it refuses the statement; acme posts nothing and its
    reference stays free."""
    _owed_2750(app, client)
    with app.app_context():
        from wallet import db
        from wallet.actions import trust as trust_actions
        from wallet.actions._base import Actor

        trust_actions.remove(db.session(), slug="globex", issuer=ACME, actor=Actor.cli())
    out = _pay(app, capsys, "1000.00")
    assert out.exit_code == 2 and "untrusted_issuer" in out.err
    assert _settles(app, "acme") == _settles(app, "globex") == 0
    assert fs.count(app, "AuditEvent", action="settlement.refused") == 1
    fs.trust(app, "globex", "acme")
    assert _pay(app, capsys, "1000.00").exit_code == 0
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "1750.00"
    support.assert_ledger_sound(app)


# -- the payee's checks ------------------------------------------------------------------------


def test_a_statement_for_more_than_is_owed_is_refused(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    answer = _send(client, _signed_statement(app, "2750.01"))
    assert answer.status_code == 422
    assert answer.mimetype == "application/problem+json"
    assert fs.code_of(answer) == "policy_rejected"
    # ...and the payer does not send one either.
    out = _pay(app, capsys, "2750.01")
    assert out.exit_code == 1 and "policy_rejected" in out.err
    # A cut-off before the receipts: nothing was owed then.
    early = _send(client, _signed_statement(app, "1.00", through=int(time.time()) - 3600))
    assert fs.code_of(early) == "policy_rejected"
    # Receipts named: one globex never honoured.
    unknown = _signed_statement(app, "1.00", through=None, receipts=["urn:uuid:nope"])
    assert fs.code_of(_send(client, unknown)) == "policy_rejected"
    both = _signed_statement(app, "1.00", receipts=["urn:uuid:nope"])
    assert fs.code_of(_send(client, both)) == "malformed"
    assert _settles(app, "acme") == _settles(app, "globex") == 0
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "2750.00"
    support.assert_ledger_sound(app)


def test_forged_and_untrusted_statements_are_refused(app: Flask, client: FlaskClient,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    forged = _signed_statement(app, "100.00", key=Ed25519PrivateKey.generate())
    assert fs.code_of(_send(client, forged)) == "bad_signature"
    fs.create_org(app, "initech")
    fs.generate_keys(app, "initech")
    untrusted = _signed_statement(app, "100.00", payer="initech")
    answer = _send(client, untrusted)
    assert answer.status_code == 422 and fs.code_of(answer) == "untrusted_issuer"
    stale = _signed_statement(app, "100.00", iat=int(time.time()) - 2 * 86_400)
    assert fs.code_of(_send(client, stale)) == "malformed"
    assert fs.code_of(client.post(STATEMENTS, json={"statement": 7})) == "malformed"
    assert fs.code_of(client.post("/api/v1/orgs/nope/settlements",
                                  json={"statement": forged})) == "not_found"
    assert _settles(app, "globex") == 0
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == globex["they_owe"] == "2750.00"
    support.assert_ledger_sound(app)


def test_a_replayed_statement_gets_the_same_answer_and_posts_once(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    token = _signed_statement(app, "500.00")
    first = _send(client, token)
    assert first.status_code == 200, first.get_data(as_text=True)
    ack = first.get_json()["acknowledgement"]
    assert _ack_claims(client, ack)["outstanding"] == {"value": "2250.00", "currency": "USD"}
    again = _send(client, token)
    assert again.status_code == 200 and again.get_json()["acknowledgement"] == ack
    # The same content signed again (another iat) is the same statement too.
    claims = jwt.decode(token, options={"verify_signature": False})
    resigned = _signed_statement(app, "500.00", jti=claims["jti"], iat=claims["iat"] - 5,
                                 through=claims["through"])
    assert _send(client, resigned).get_json()["acknowledgement"] == ack
    assert _settles(app, "globex") == 1
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -2250 * MICROS
    support.assert_ledger_sound(app)


def test_a_statement_replayed_with_other_content_is_a_conflict(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _owed_2750(app, client)
    token = _signed_statement(app, "500.00")
    assert _send(client, token).status_code == 200
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    for other in (_signed_statement(app, "600.00", jti=jti),
                  _signed_statement(app, "500.00", jti=jti, reference="wire 2")):
        answer = _send(client, other)
        assert answer.status_code == 422 and fs.code_of(answer) == "idempotency_conflict"
    assert _settles(app, "globex") == 1
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -2250 * MICROS
    support.assert_ledger_sound(app)


def test_two_identical_statements_at_once_post_once(app: Flask, client: FlaskClient) -> None:
    _owed_2750(app, client)
    token = _signed_statement(app, "400.00")
    start = threading.Barrier(2)
    answers: list[tuple[int, str | None]] = []

    def send() -> None:
        own = app.test_client()
        start.wait()
        answer = _send(own, token)
        answers.append((answer.status_code, (answer.get_json() or {}).get("acknowledgement")))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [status for status, _ack in answers] == [200, 200], answers
    assert answers[0][1] == answers[1][1] is not None
    assert _settles(app, "globex") == 1
    assert fs.count(app, "AuditEvent", action="settlement.received") == 1
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -2350 * MICROS
    support.assert_ledger_sound(app)


def test_two_different_statements_at_once_cannot_overpay(app: Flask,
                                                         client: FlaskClient) -> None:
    """Each is within what is owed, together they are not: one is refused."""
    _owed_2750(app, client)
    tokens = [_signed_statement(app, "2000.00", reference=f"wire {n}") for n in range(2)]
    start = threading.Barrier(2)
    answers: list[tuple[int, str | None]] = []

    def send(token: str) -> None:
        own = app.test_client()
        start.wait()
        answer = own.post(STATEMENTS, json={"statement": token})
        answers.append((answer.status_code, fs.code_of(answer)))

    threads = [threading.Thread(target=send, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(answers, key=str) == sorted([(200, None), (422, "policy_rejected")],
                                              key=str), answers
    assert _settles(app, "globex") == 1
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -750 * MICROS
    support.assert_ledger_sound(app)


def test_two_payers_with_the_same_reference_at_once_pay_once(app: Flask,
                                                             client: FlaskClient) -> None:
    """`pay` run twice at once (two terminals, the page sent twice): one statement,
    posted once on each side; one answer says it was paid, the other that it was already."""
    from wallet import db
    from wallet.actions import settlement as settlement_actions
    from wallet.actions._base import Actor

    _owed_2750(app, client)
    start = threading.Barrier(2)
    answers: list[Any] = []

    def pay() -> None:
        with app.app_context():
            start.wait()
            try:
                answers.append(settlement_actions.pay(
                    db.session(), slug="acme", counterparty=GLOBEX, amount="300.00",
                    reference="wire race", actor=Actor.cli()))
            except Exception as err:  # the assertion below shows it
                answers.append(err)

    threads = [threading.Thread(target=pay) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(isinstance(a, settlement_actions.Paid) for a in answers), answers
    assert sorted(a.replayed for a in answers) == [False, True]
    assert answers[0].jti == answers[1].jti
    assert _settles(app, "acme") == _settles(app, "globex") == 1
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 2450 * MICROS
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == -2450 * MICROS
    support.assert_ledger_sound(app)


def test_the_payee_is_told_once_by_webhook(app: Flask, client: FlaskClient,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """settlement.received (Standard Webhooks outbox) is recorded with the posting, once
    per statement however often it is sent."""
    from wallet import db
    from wallet.actions import webhooks
    from wallet.actions._base import Actor

    _owed_2750(app, client)
    with app.app_context():
        webhooks.create_endpoint(db.session(), slug="globex", url="http://127.0.0.1:9/hook",
                                 types=["settlement.received"], actor=Actor.cli())
    token = _signed_statement(app, "500.00", reference="wire hook")
    assert _send(client, token).status_code == 200
    assert _send(client, token).status_code == 200
    assert fs.count(app, "WebhookMessage", type="settlement.received") == 1
    with app.app_context():
        from sqlmodel import select

        from wallet.models import WebhookMessage

        s = db.session()
        body = json.loads(s.exec(select(WebhookMessage.body)).one())
        s.rollback()
    assert body["type"] == "settlement.received"
    assert body["data"]["payer"] == ACME and body["data"]["reference"] == "wire hook"
    assert body["data"]["amount"] == "500.00"
    assert body["data"]["outstanding"] == {"amount": "2250.00", "currency": "USD"}
    support.assert_ledger_sound(app)
