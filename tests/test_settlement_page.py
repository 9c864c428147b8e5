"""The admin Settlement page pays through the protocol and lists the payments, with their
references and acknowledgements, on both sides (issue 15), on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import GLOBEX

PAGE = "/orgs/acme/admin/settlement"
PAY = "/orgs/acme/admin/settlement/pay"


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _owed(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    for amount in ("1000.00", "1750.00"):
        assert fs.bring(fed, client, fs.export(app, fed.holder, amount)).status_code == 200


def test_paying_from_the_page_shows_on_both_sides(app: Flask, client: FlaskClient) -> None:
    _owed(app, client)
    admin = app.test_client()
    support.login(admin, "admin@acme.test")
    page = admin.get(PAGE).get_data(as_text=True)
    assert 'data-testid="pay-form"' in page and "2,750.00 USD" in page
    done = support.post_form(admin, PAY, {"counterparty": GLOBEX, "amount": "1000.00",
                                          "reference": "wire 2026-12-07"}, page=PAGE)
    assert done.status_code == 302, done.get_data(as_text=True)[:2000]
    shown = admin.get(PAGE).get_data(as_text=True)
    assert "Paid 1,000.00 USD (wire 2026-12-07)" in shown
    assert "we still owe 1,750.00 USD" in shown
    assert shown.count('data-testid="payment"') == 1 and "acknowledged" in shown

    globex = app.test_client()
    support.login(globex, "admin@globex.test")
    theirs = globex.get("/orgs/globex/admin/settlement").get_data(as_text=True)
    assert "They paid us" in theirs and "wire 2026-12-07" in theirs
    assert "1,750.00 USD" in theirs  # what acme still owes, as globex sees it

    # Sent again (the same reference): nothing more moves.
    again = support.post_form(admin, PAY, {"counterparty": GLOBEX, "amount": "1000.00",
                                           "reference": "wire 2026-12-07"}, page=PAGE)
    assert again.status_code == 302
    assert "Already paid and acknowledged" in admin.get(PAGE).get_data(as_text=True)
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 1750 * fs.MICROS
    support.assert_ledger_sound(app)


def test_a_refused_payment_is_a_message_next_to_the_amount(app: Flask,
                                                           client: FlaskClient) -> None:
    _owed(app, client)
    admin = app.test_client()
    support.login(admin, "admin@acme.test")
    for amount, status, words in (("9999.00", 422, "policy_rejected"),
                                  ("-1", 400, "amount")):
        refused = support.post_form(admin, PAY, {"counterparty": GLOBEX, "amount": amount,
                                                 "reference": "wire 1"}, page=PAGE)
        assert refused.status_code == status
        text = refused.get_data(as_text=True)
        assert 'class="error"' in text and words in text
        assert f'value="{amount}"' in text  # what was typed stays in its field
    assert fs.account_balance(app, "acme", f"payable:{GLOBEX}") == 2750 * fs.MICROS
    support.assert_ledger_sound(app)
