"""Netting (issue 15): when both employers owe each other, one "net" statement cancels
what the payee owes the payer against the payer's debt and pays the rest; both ledgers
post it once and both lists agree. On both databases."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, ADA, GLOBEX, MICROS
from tests.support import run_cli
from tests.test_settlement import _lists, _send, _signed_statement


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _both_owe(app: Flask, client: FlaskClient) -> None:
    """acme owes globex 2,750.00 (acme's notes honoured at globex); globex owes acme
    500.00 (a globex note honoured at acme)."""
    fed = fs.setup_federation(app)
    for amount in ("1000.00", "1750.00"):
        assert fs.bring(fed, client, fs.export(app, fed.holder, amount)).status_code == 200
    with app.app_context():
        from wallet import db
        from wallet.actions import ledger as ledger_actions
        from wallet.actions._base import Actor

        ledger_actions.fund(db.session(), slug="globex", amount="1000.00",
                            idempotency_key="net-fund", actor=Actor.cli())
    fs.give(app, "globex", ADA, "500.00")
    note = fs.export(app, fed.holder, "500.00", slug="globex")
    answer = fs.bring(fed, client, note, slug="acme")
    assert answer.status_code == 200, answer.get_data(as_text=True)


def _pay_net(app: Flask, capsys: pytest.CaptureFixture[str], amount: str,
             reference: str) -> support.CliResult:
    return run_cli(app, capsys, "settlement", "pay", "--org", "acme", "--counterparty", GLOBEX,
                   "--amount", amount, "--reference", reference, "--net", "--json")


def test_a_net_statement_settles_both_directions(app: Flask, client: FlaskClient,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _both_owe(app, client)
    acme, globex = _lists(app, capsys)
    assert (acme["we_owe"], acme["they_owe"]) == ("2750.00", "500.00")

    out = _pay_net(app, capsys, "1000.00", "net 1")  # 500.00 netted, 1,000.00 paid
    assert out.exit_code == 0, out.err
    assert json.loads(out.out)["outstanding"] == {"value": "1250.00", "currency": "USD"}
    acme, globex = _lists(app, capsys)
    assert (acme["we_owe"], acme["they_owe"]) == ("1250.00", "0.00")
    assert (globex["they_owe"], globex["we_owe"]) == ("1250.00", "0.00")
    assert _pay_net(app, capsys, "1000.00", "net 1").exit_code == 0  # again: nothing moves
    with app.app_context():
        from wallet import db
        from wallet.actions import settlement as settlement_actions

        (sent,) = settlement_actions.payments(db.session(), slug="acme")[GLOBEX]
        (got,) = settlement_actions.payments(db.session(), slug="globex")[ACME]
    assert sent.offset == got.offset and sent.offset is not None
    assert sent.offset.micros == 500 * MICROS and (sent.role, got.role) == ("sent", "received")
    admin = app.test_client()
    support.login(admin, "admin@acme.test")
    assert "500.00 USD netted" in admin.get("/orgs/acme/admin/settlement").get_data(
        as_text=True)
    assert _lists(app, capsys)[0]["we_owe"] == "1250.00"
    # Nothing left to net now.
    refused = _pay_net(app, capsys, "1250.00", "net 2")
    assert refused.exit_code == 1 and "owes us nothing" in refused.err
    assert run_cli(app, capsys, "settlement", "pay", "--org", "acme", "--counterparty",
                   GLOBEX, "--amount", "1250.00", "--reference", "rest").exit_code == 0
    acme, globex = _lists(app, capsys)
    assert acme["we_owe"] == acme["they_owe"] == globex["we_owe"] == globex["they_owe"] \
        == "0.00"
    for slug, party in (("acme", GLOBEX), ("globex", ACME)):
        assert run_cli(app, capsys, "settlement", "reconcile", "--org", slug,
                       "--counterparty", party).exit_code == 0
    support.assert_ledger_sound(app)


def test_a_net_statement_for_more_than_the_payee_owes_is_refused(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _both_owe(app, client)
    too_much = _signed_statement(app, "100.00", direction="net",
                                 offset={"value": "500.01", "currency": "USD"})
    answer = _send(client, too_much)
    assert answer.status_code == 422 and fs.code_of(answer) == "policy_rejected"
    over = _signed_statement(app, "2250.01", direction="net",
                             offset={"value": "500.00", "currency": "USD"})
    assert fs.code_of(_send(client, over)) == "policy_rejected"
    exact = _signed_statement(app, "2250.00", direction="net",
                              offset={"value": "500.00", "currency": "USD"}, reference="n")
    assert _send(client, exact).status_code == 200
    assert fs.account_balance(app, "globex", f"receivable:{ACME}") == 0
    assert fs.account_balance(app, "globex", f"payable:{ACME}") == 0
    # Sent by hand, not through acme's 'pay': acme's side is untouched.
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 2750 * MICROS
    assert fs.account_balance(app, "acme", f"receivable:{GLOBEX}") == -500 * MICROS
    support.assert_ledger_sound(app)
