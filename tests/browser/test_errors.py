"""Bringing credits that cannot be honoured: a clear message on the page, and nothing changes.

Each case uploads the demo's `<instance>/demo/ada.ccwallet` (500.00 USD from acme) at
globex, or a damaged copy, and checks the balances before and after both through the
pages and through `wallet.actions.wallets.summary` in the app.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import (
    DEMO_PASSWORD,
    LiveServer,
    bring_wallet_file,
    claims_of,
    micros,
    nav,
    note_state,
    settlement_figures,
    sign_in,
    summary,
)

ADA = "ada@example.test"


def balances(server: LiveServer) -> dict[str, Any]:
    """What must not move when a note is refused, read in the app."""
    globex, acme = summary(server, "globex", ADA), summary(server, "acme", ADA)
    return {"globex available": globex.available, "acme available": acme.available,
            "acme outstanding": acme.outstanding_notes,
            "acme owes globex": settlement_figures(server, "acme", "globex")[0],
            "globex is owed": settlement_figures(server, "globex", "acme")[1]}


def open_bring(page: Page) -> int:
    """Ada, signed in, on globex's "Bring credits" page; returns the balance it shows."""
    page.goto("/orgs/globex/wallet")
    nav(page, "Bring credits")
    return micros(page.get_by_test_id("available").inner_text())


def demo_jti(server: LiveServer) -> str:
    from wallet.core import walletfile

    return str(claims_of(walletfile.parse(server.demo_wallet.read_text()).notes[0])["jti"])


def test_wrong_passphrase(page: Page, live_server: LiveServer, shoot: Any) -> None:
    before = balances(live_server)
    sign_in(page, ADA)
    shown_before = open_bring(page)
    assert shown_before == before["globex available"]

    assert bring_wallet_file(page, live_server.demo_wallet, "not the passphrase") == 400
    passphrase = page.get_by_label("Its passphrase")
    expect(passphrase).to_have_attribute("aria-invalid", "true")
    expect(passphrase).to_have_accessible_description(
        re.compile("wrong passphrase", re.IGNORECASE))
    expect(page.get_by_text("wrong passphrase, or the key file is damaged")).to_be_visible()
    expect(page.get_by_test_id("results")).to_have_count(0)  # nothing was attempted
    shoot("bring-wrong-passphrase")

    assert micros(page.get_by_test_id("available").inner_text()) == shown_before
    assert balances(live_server) == before
    assert note_state(live_server, "acme", demo_jti(live_server)) == "active"
    # The right passphrase still works afterwards: the failed attempt spent nothing.
    assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 200
    expect(page.get_by_test_id("results").get_by_role("heading")).to_have_text(
        "1 note honoured")


def test_tampered_wallet_file(page: Page, live_server: LiveServer, tmp_path: Path,
                              shoot: Any) -> None:
    data = json.loads(live_server.demo_wallet.read_text())
    header, payload, signature = data["notes"][0].rstrip("~").split(".")
    i = len(signature) // 2  # a character in the middle of the issuer's signature
    flipped = signature[:i] + ("B" if signature[i] == "A" else "A") + signature[i + 1:]
    data["notes"][0] = f"{header}.{payload}.{flipped}~"
    tampered = tmp_path / "tampered.ccwallet"
    tampered.write_text(json.dumps(data))

    before = balances(live_server)
    sign_in(page, ADA)
    shown_before = open_bring(page)
    assert bring_wallet_file(page, tampered, DEMO_PASSWORD) == 422
    results = page.get_by_test_id("results")
    expect(results.get_by_role("heading")).to_have_text("Nothing was credited")
    expect(results.get_by_text("honoured", exact=True)).to_have_count(0)
    expect(results).to_contain_text("bad_signature")
    expect(results).to_contain_text("signature does not verify")
    shoot("bring-tampered")

    assert micros(page.get_by_test_id("available").inner_text()) == shown_before
    assert balances(live_server) == before
    assert note_state(live_server, "acme", demo_jti(live_server)) == "active"


def test_note_already_redeemed(page: Page, live_server: LiveServer, shoot: Any) -> None:
    sign_in(page, ADA)
    shown_before = open_bring(page)
    assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 200
    expect(page.get_by_test_id("results").get_by_role("heading")).to_have_text(
        "1 note honoured")
    after_first = balances(live_server)
    shown_after_first = micros(page.get_by_test_id("available").inner_text())
    assert shown_after_first == shown_before + 500_000_000 == after_first["globex available"]

    # Again from the result page (the same form), then from a fresh "Bring credits" page.
    for again in ("same form", "fresh page"):
        if again == "fresh page":
            assert open_bring(page) == shown_after_first
        assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 422, again
        results = page.get_by_test_id("results")
        expect(results.get_by_role("heading")).to_have_text("Nothing was credited")
        expect(results).to_contain_text("already_redeemed")
        expect(results).to_contain_text("this note was already honoured here")
        expect(results).to_contain_text("500.00 USD")
        assert micros(page.get_by_test_id("available").inner_text()) == shown_after_first
        assert balances(live_server) == after_first, again
    shoot("bring-already-redeemed")
    assert note_state(live_server, "acme", demo_jti(live_server)) == "redeemed"
