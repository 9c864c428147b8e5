"""The real Back button on the fund form (issue 11: fund, Back, "Add to pool" again).

Chromium, the demo, the acme admin: fund the pool, press Back, press "Add to pool" again.
The pages are `Cache-Control: no-store`, so Back fetches the form again; the pool is
funded once and the page says, next to the form, what was recorded. Ticking "Record
another identical funding" then records a second one on purpose.
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.conftest import LiveServer, shown, sign_in, usd

ACME_ADMIN = "admin@acme.test"
FUNDED = re.compile(r"Pool funded with 1,?234\.56 USD")


def _pool(server: LiveServer) -> int:
    from wallet import db
    from wallet.actions import ledger as ledger_actions
    from wallet.store import people

    with server.app.app_context():
        session = db.session()
        org = people.org_by_slug(session, slug="acme")
        assert org is not None
        micros = ledger_actions.pool(session, org=org).micros
        session.rollback()
        return micros


def _add_to_pool(page: Page) -> int:
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Add to pool").click()
    assert navigation.value is not None
    return navigation.value.status


def test_back_then_add_to_pool_again_funds_once(page: Page, live_server: LiveServer) -> None:
    sign_in(page, ACME_ADMIN)
    form_page = page.goto("/orgs/acme/admin/")
    assert form_page is not None and form_page.status == 200
    assert form_page.headers.get("cache-control") == "no-store"
    before = _pool(live_server)
    assert shown(page, "pool") == before

    page.get_by_label("Amount").fill("1234.56")
    page.get_by_label("Reference (optional)").fill("Q3 budget")
    assert _add_to_pool(page) == 200
    expect(page.get_by_role("status")).to_contain_text(FUNDED)
    assert _pool(live_server) == before + 1_234_560_000

    # Back: the form as the browser restores it; whatever it kept, the same values again.
    back = page.go_back()
    assert back is not None and back.status == 200  # fetched again (no-store)
    amount, memo = page.get_by_label("Amount"), page.get_by_label("Reference (optional)")
    if amount.input_value() != "1234.56":
        amount.fill("1234.56")
    if memo.input_value() != "Q3 budget":
        memo.fill("Q3 budget")
    assert _add_to_pool(page) == 409

    notice = page.get_by_test_id("already-recorded")
    expect(notice).to_contain_text("Already recorded")
    expect(notice).to_contain_text("pool funded with 1,234.56 USD (Q3 budget)")
    expect(notice).to_contain_text("Nothing was recorded now")
    assert _pool(live_server) == before + 1_234_560_000
    expect(page.get_by_test_id("pool")).to_have_text(usd(before + 1_234_560_000))

    # A second identical funding, on purpose.
    page.get_by_label("Record another identical funding").check()
    assert _add_to_pool(page) == 200
    expect(page.get_by_role("status")).to_contain_text(FUNDED)
    assert _pool(live_server) == before + 2 * 1_234_560_000
