"""The statement of account of one pair: every receipt and payment between two employers,
oldest first, with the running balance, on the Settlement page of each side; its last
balance is the outstanding figure, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, GLOBEX
from wallet import db
from wallet.actions import settlement
from wallet.actions._base import Actor
from wallet.core import settlement as core


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _lines(app: Flask, slug: str, party: str) -> list[tuple[str, int, int]]:
    with app.app_context():
        found = settlement.account(db.session(), slug=slug, counterparty=party,
                                   currency="USD")
    return [(m.what, m.amount, m.balance) for m in found]


def test_both_sides_see_the_same_history_and_it_ends_at_what_is_outstanding(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    for amount in ("1000.00", "1750.00"):
        assert fs.bring(fed, client, fs.export(app, fed.holder, amount)).status_code == 200
    with app.app_context():
        settlement.pay(db.session(), slug="acme", counterparty=GLOBEX, amount="1000.00",
                       reference="wire 1", actor=Actor.cli())
    m = fs.MICROS
    assert _lines(app, "acme", GLOBEX) == [
        ("redeemed", 1000 * m, 1000 * m), ("redeemed", 1750 * m, 2750 * m),
        ("paid", 1000 * m, 1750 * m)]
    assert _lines(app, "globex", ACME) == [
        ("honoured", 1000 * m, -1000 * m), ("honoured", 1750 * m, -2750 * m),
        ("received", 1000 * m, -1750 * m)]
    with app.app_context():
        owed = {ln.counterparty: ln.we_owe for ln in settlement.lines(db.session(),
                                                                     slug="acme")}
    assert owed[GLOBEX] == 1750 * m == _lines(app, "acme", GLOBEX)[-1][2]

    admin = app.test_client()
    support.login(admin, "admin@acme.test")
    page = admin.get("/orgs/acme/admin/settlement").get_data(as_text=True)
    assert page.count('data-testid="account-line"') == 3
    assert "we owe 1,750.00 USD" in page and "Our note they redeemed" in page
    theirs = app.test_client()
    support.login(theirs, "admin@globex.test")
    other = theirs.get("/orgs/globex/admin/settlement").get_data(as_text=True)
    assert "they owe 1,750.00 USD" in other and "They paid us" in other
    support.assert_ledger_sound(app)


def test_netting_cancels_both_debts_and_leaves_the_balance() -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    lines = core.account_lines([
        (at, "redeem", "notes_outstanding", "payable:B", "n1", 300),
        (at, "honour", "receivable:B", "wallet:1", "n2", 100),
        (at, "settle", "payable:B", "receivable:B", "s1", 100),  # the offset
        (at, "settle", "payable:B", "external", "s1", 200),
    ], payable="payable:B", receivable="receivable:B")
    assert [(ln.what, ln.balance) for ln in lines] == [
        ("redeemed", 300), ("honoured", 200), ("netted", 200), ("paid", 0)]
