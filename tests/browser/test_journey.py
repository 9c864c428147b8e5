"""The demo, end to end, clicked through like a person would (issue 6).

The same walk is docs/user-guide.md; the exchange behind it is docs/federation.md,
"The exchange".

Ada exports part of her acme wallet as a note in a new `.ccwallet`, signs in again, brings
it to globex and sees her globex balance grow by exactly that amount; the acme admin
sees the note redeemed and what acme owes globex; the globex admin sees the receivable.
The demo's own wallet file and the CLI paths (`wallet keys holder-new`,
`wallet note present`) are walked the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
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
    settlement_section,
    shown,
    sign_in,
    sign_out,
    summary,
    usd,
)
from tests.support import run_cli
from wallet.core import walletfile

ADA = "ada@example.test"
ACME_ADMIN = "admin@acme.test"
GLOBEX_ADMIN = "admin@globex.test"
PASSPHRASE = "a long passphrase ada keeps"


def test_demo_journey(page: Page, live_server: LiveServer, shoot: Any, tmp_path: Path) -> None:
    amount, exported = "1000.00", 1_000_000_000
    acme_before = summary(live_server, "acme", ADA)
    globex_before = summary(live_server, "globex", ADA)
    acme_owes_before, _ = settlement_figures(live_server, "acme", "globex")
    _, globex_owed_before = settlement_figures(live_server, "globex", "acme")

    # Ada signs in and chooses acme.
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shoot("sign-in")
    sign_in(page, ADA)
    expect(page.get_by_role("heading", name="Your organisations")).to_be_visible()
    shoot("choose-organisation")
    page.get_by_role("link", name="Acme AI").click()
    expect(page.get_by_role("heading", name="Your wallet at Acme AI")).to_be_visible()

    # Her dashboard: balances as the app computes them, the vesting chart drawn on the server.
    assert shown(page, "available") == acme_before.available > exported
    assert shown(page, "unvested") == acme_before.unvested > 0
    assert shown(page, "spent") == acme_before.spent > 0
    assert shown(page, "outstanding") == acme_before.outstanding_notes
    assert acme_before.next_vest is not None
    expect(page.get_by_test_id("next-vest")).to_contain_text(
        acme_before.next_vest.due_on.isoformat())
    expect(page.get_by_test_id("next-vest")).to_contain_text(re.compile(r"\(in \d+ days?\)|"
                                                                         r"\(tomorrow\)"))
    expect(page.get_by_role("img", name="Vesting schedule")).to_be_visible()
    shoot("wallet")

    # Export a note with a new holder key: the .ccwallet download arrives.
    nav(page, "Export a note")
    expect(page.get_by_test_id("available")).to_have_text(usd(acme_before.available))
    page.get_by_label("Amount").fill(amount)
    page.get_by_label("Holder key").select_option(
        label="Create a new holder key and give me a wallet file")
    page.get_by_label("Passphrase for the wallet file").fill(PASSPHRASE)
    page.get_by_label("Repeat the passphrase").fill(PASSPHRASE)
    shoot("export")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export").click()
    download = download_info.value
    assert download.failure() is None
    assert re.fullmatch(r"acme-[0-9a-f]{8}\.ccwallet", download.suggested_filename)
    wallet_path = tmp_path / download.suggested_filename
    download.save_as(wallet_path)
    wallet = walletfile.parse(wallet_path.read_text())
    assert len(wallet.notes) == 1
    note = wallet.notes[0]
    claims = claims_of(note)
    assert claims["iss"] == live_server.issuer("acme")
    assert claims["amount"] == {"value": amount, "currency": "USD"}
    assert claims["cnf"]["jwk"]["x"] == wallet.holder_jwk["x"]
    wallet.unlock(PASSPHRASE)  # the passphrase she typed opens the key; the server kept neither
    jti = claims["jti"]
    assert note_state(live_server, "acme", jti) == "active"

    # The amount left her wallet and is outstanding; the note has a page with its QR code.
    nav(page, "Wallet")
    assert shown(page, "available") == acme_before.available - exported
    assert shown(page, "outstanding") == acme_before.outstanding_notes + exported
    nav(page, "Notes")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=jti[9:17]))
    expect(row).to_contain_text("1,000.00 USD")
    expect(row).to_contain_text("outstanding")
    row.get_by_role("link", name=jti[9:17]).click()
    expect(page.get_by_role("heading", name=re.compile(r"^Note "))).to_contain_text(jti[9:17])
    expect(page.get_by_text(jti, exact=True)).to_be_visible()
    qr = page.locator("section.qr svg")
    expect(qr).to_be_visible()
    assert qr.evaluate("svg => svg.querySelector('title').textContent") == f"QR code of note {jti}"
    with page.expect_download() as note_download:
        page.get_by_role("link", name="Download the note").click()
    note_file = tmp_path / "note.txt"
    note_download.value.save_as(note_file)
    assert note_file.read_text().strip() == note
    shoot("note")

    # Anyone can check the note on globex's public verify page before it is brought in.
    page.goto("/orgs/globex/verify")
    page.get_by_label("Note", exact=True).fill(note)
    page.get_by_role("button", name="Verify").click()
    report = page.get_by_test_id("report")
    expect(report.get_by_role("heading")).to_have_text("Valid: 1000.00 USD")
    expect(report).to_contain_text(jti)
    expect(report.locator("li.check-bad")).to_have_count(0)
    shoot("verify-report")

    # She signs out, signs in again and moves to globex through the organisation chooser.
    sign_out(page)
    sign_in(page, ADA)
    page.get_by_role("link", name="Globex").click()
    expect(page.get_by_role("heading", name="Your wallet at Globex")).to_be_visible()
    assert shown(page, "available") == globex_before.available

    # Bring credits: upload the wallet file with its passphrase; the note is honoured.
    nav(page, "Bring credits")
    assert shown(page, "available") == globex_before.available
    assert bring_wallet_file(page, wallet_path, PASSPHRASE) == 200
    results = page.get_by_test_id("results")
    expect(results.get_by_role("heading")).to_have_text("1 note honoured")
    result_row = results.get_by_role("row").filter(has_text=jti[9:17])
    expect(result_row.get_by_text("honoured", exact=True)).to_be_visible()
    expect(result_row).to_contain_text("1,000.00 USD")
    expect(result_row).to_contain_text("Acme AI")  # its name on the trust list, not its URL
    assert shown(page, "available") == globex_before.available + exported
    shoot("bring-results")
    nav(page, "Wallet")
    assert shown(page, "available") == globex_before.available + exported
    assert summary(live_server, "globex", ADA).available == globex_before.available + exported
    assert summary(live_server, "acme", ADA).outstanding_notes == acme_before.outstanding_notes
    assert note_state(live_server, "acme", jti) == "redeemed"
    nav(page, "Notes")
    expect(page.get_by_role("row").filter(has_text=jti[9:17])).to_contain_text("1,000.00 USD")

    # Its issuer's verify page now refuses it: acme's own records say it was redeemed.
    # (Globex's page may still say valid while its cached copy of acme's status list is
    # fresh, ttl <= 300 s, docs/protocol.md §6 "Issuer documents"; honouring always asks
    # acme's redeem endpoint.)
    page.goto("/orgs/acme/verify")
    page.get_by_label("Note", exact=True).fill(note)
    page.get_by_role("button", name="Verify").click()
    report = page.get_by_test_id("report")
    expect(report.get_by_role("heading")).to_have_text(re.compile(r"^Not valid"))
    expect(report).to_contain_text("already_redeemed")
    sign_out(page)

    # The acme admin sees the note redeemed and what acme owes globex now.
    sign_in(page, ACME_ADMIN)
    nav(page, "Notes issued")
    page.get_by_label("Person's email or note id").fill(jti)
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"[?&]q=urn"))
    issued = page.get_by_role("row").filter(has_text=jti[9:17])
    expect(issued).to_have_count(1)
    expect(issued).to_contain_text(ADA)
    expect(issued).to_contain_text("1,000.00 USD")
    expect(issued).to_contain_text("redeemed by globex")
    page.get_by_label("Person's email or note id").fill(ADA)
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("row").filter(has_text=jti[9:17])).to_contain_text("redeemed")
    shoot("admin-notes")
    nav(page, "Settlement")
    line = settlement_section(page, "Globex")
    expect(line).to_have_count(1)
    assert micros(line.get_by_test_id("we-owe").inner_text()) == acme_owes_before + exported
    shoot("admin-settlement")
    sign_out(page)

    # The globex admin sees the receivable: what acme owes globex.
    sign_in(page, GLOBEX_ADMIN)
    nav(page, "Settlement")
    line = settlement_section(page, "Acme AI")
    expect(line).to_have_count(1)
    assert micros(line.get_by_test_id("they-owe").inner_text()) == globex_owed_before + exported
    assert settlement_figures(live_server, "globex", "acme")[1] == globex_owed_before + exported
    shoot("admin-settlement-globex")


def test_bring_the_demo_wallet_file(page: Page, live_server: LiveServer) -> None:
    """`wallet demo` leaves ada a 500.00 USD note in <instance>/demo/ada.ccwallet."""
    demo_note = walletfile.parse(live_server.demo_wallet.read_text()).notes[0]
    jti = claims_of(demo_note)["jti"]
    assert note_state(live_server, "acme", jti) == "active"
    before = summary(live_server, "globex", ADA)
    sign_in(page, ADA)
    page.goto("/orgs/globex/wallet")
    nav(page, "Bring credits")
    assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 200
    results = page.get_by_test_id("results")
    expect(results.get_by_role("heading")).to_have_text("1 note honoured")
    expect(results.get_by_role("row").filter(has_text=jti[9:17])).to_contain_text("500.00 USD")
    expect(results.get_by_text("honoured", exact=True)).to_be_visible()
    assert shown(page, "available") == before.available + 500_000_000
    assert summary(live_server, "globex", ADA).available == before.available + 500_000_000
    assert note_state(live_server, "acme", jti) == "redeemed"
    # Back at acme the note shows as redeemed and nothing is outstanding any more.
    page.goto("/orgs/acme/notes")
    expect(page.get_by_role("row").filter(has_text=jti[9:17])).to_contain_text("redeemed by globex")
    nav(page, "Wallet")
    assert shown(page, "outstanding") == 0


def test_bring_result_page_still_knows_who_is_signed_in(page: Page,
                                                        live_server: LiveServer) -> None:
    """The page answering an upload shows the person's balance: it must keep showing who is
    signed in (and the way to sign out) and, like every personal page, not be cached."""
    sign_in(page, ADA)
    page.goto("/orgs/globex/bring")
    expect(page.get_by_role("banner")).to_contain_text(ADA)
    page.get_by_label("Wallet file (.ccwallet)").set_input_files(str(live_server.demo_wallet))
    page.get_by_label("Its passphrase").fill(DEMO_PASSWORD)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Bring these credits in").click()
    response = navigation.value
    assert response is not None and response.status == 200
    expect(page.get_by_test_id("results").get_by_role("heading")).to_have_text(
        "1 note honoured")
    problems = []
    if ADA not in page.get_by_role("banner").inner_text():
        problems.append(f"the top bar no longer names {ADA}")
    if page.get_by_role("button", name="Sign out").count() != 1:
        problems.append("the top bar has no 'Sign out' button")
    if response.header_value("cache-control") != "no-store":
        problems.append("the answer, which shows her balance, lacks 'Cache-Control: no-store'"
                        f" (got {response.header_value('cache-control')!r})")
    assert not problems, "after bringing credits in: " + "; ".join(problems)


def test_cli_key_and_presentations_signed_offline(page: Page, live_server: LiveServer,
                                                  capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    """The other path of the guide: a key from `wallet keys holder-new`, a pasted public JWK,
    the note downloaded from its page and presented with `wallet note present`."""
    app = live_server.app
    secret = tmp_path / "passphrase.txt"
    secret.write_text("cli passphrase of ada\n")
    key = tmp_path / "ada.key"
    made = run_cli(app, capsys, "keys", "holder-new", "--out", str(key),
                   "--passphrase-file", str(secret))
    assert made.exit_code == 0, made.err
    jwk_text = made.out.strip()
    before = summary(live_server, "globex", ADA)

    sign_in(page, ADA)
    page.goto("/orgs/acme/export")
    page.get_by_label("Amount").fill("250.00")
    page.get_by_label("Holder key").select_option(
        label="Use a public key I already have (from 'wallet keys holder-new')")
    page.get_by_label("Public JWK").fill(jwk_text)
    page.get_by_role("button", name="Export").click()
    expect(page.get_by_role("status")).to_have_text(
        "Your note is ready: download it or scan its QR code.")
    with page.expect_download() as downloaded:
        page.get_by_role("link", name="Download the note").click()
    note_file = tmp_path / downloaded.value.suggested_filename
    downloaded.value.save_as(note_file)
    claims = claims_of(note_file.read_text().strip())
    assert claims["cnf"]["jwk"]["x"] == json.loads(jwk_text)["x"]
    assert claims["amount"] == {"value": "250.00", "currency": "USD"}

    page.goto("/orgs/globex/bring")
    command = page.get_by_text(re.compile(r"^wallet note present ")).inner_text()
    audience = re.search(r"--audience (\S+)", command)
    nonce = re.search(r"--nonce (\S+)", command)
    assert audience and nonce, command
    assert audience.group(1) == live_server.issuer("globex")
    signed = run_cli(app, capsys, "note", "present", str(note_file), "--key", str(key),
                     "--audience", audience.group(1), "--nonce", nonce.group(1),
                     "--passphrase-file", str(secret))
    assert signed.exit_code == 0, signed.err
    page.get_by_label("Presentations (the JSON printed by 'wallet note present')").fill(
        signed.out)
    page.get_by_role("button", name="Honour these presentations").click()
    results = page.get_by_test_id("results")
    expect(results.get_by_role("heading")).to_have_text("1 note honoured")
    expect(results).to_contain_text("250.00 USD")
    assert shown(page, "available") == before.available + 250_000_000
    assert note_state(live_server, "acme", claims["jti"]) == "redeemed"
