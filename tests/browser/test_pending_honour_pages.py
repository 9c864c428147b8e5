"""Pending honours in the browser (issue 14, docs/federation.md "When the issuer sleeps").

Ada brings the demo's wallet file (500.00 USD from acme) to globex while acme cannot be
reached: the page says the credit is on its way (not an error, not credited), what
happens next and where to watch it, and "Bring credits" lists it as waiting. Acme
answers again, the retry sweep runs (the worker's job, called directly), and the page
shows it credited once, the balance moved by exactly the note's amount, both ledgers
sound. Every page is looked at on a desktop window and on a phone (390 px): it fits
without scrolling sideways and breaks no word in the middle (the checks of
test_pages_a11y.py, which walks only what the navigation reaches, apply too: labels, one
main heading, no CSP violation or console error).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import Page, expect

from tests import fed_support as fs
from tests.browser.conftest import (
    DEMO_PASSWORD,
    VIEWPORT,
    LiveServer,
    bring_wallet_file,
    claims_of,
    micros,
    nav,
    note_state,
    sign_in,
    summary,
    usd,
)
from tests.browser.test_pages_a11y import label_problems
from wallet import clock, jobs
from wallet.core import walletfile
from wallet.core.errors import IssuerUnavailable
from wallet.peers import LocalTransport

ADA = "ada@example.test"
PHONE = {"width": 390, "height": 844}

# Words the browser broke across two lines (a word is what lies between spaces), and how
# far the page is wider than its window. Text in <code> and <pre> is an identifier or a
# command, which may wrap anywhere.
_BROKEN_WORDS = """() => {
  const broken = [];
  const walker = document.createTreeWalker(document.querySelector('main'),
                                           NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('code, pre, .sr-only')) continue;
    const text = node.textContent;
    for (const match of text.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, match.index);
      range.setEnd(node, match.index + match[0].length);
      const tops = new Set(Array.from(range.getClientRects())
        .filter((r) => r.width > 0).map((r) => Math.round(r.top)));
      if (tops.size > 1) broken.push(match[0]);
    }
  }
  return broken;
}"""


class AcmeAsleep:
    """The in-process transport, with every request to acme refused while `down`."""

    def __init__(self, server: LiveServer) -> None:
        self.real = LocalTransport(server.url)
        self.origin = server.url
        self.down = True
        self.tried: list[str] = []

    def __call__(self, _url: str) -> AcmeAsleep:
        return self

    def is_acme(self, url: str) -> bool:
        """Acme's documents (/orgs/acme/...) and its API (/api/v1/orgs/acme/...)."""
        path = url.removeprefix(self.origin).split("?")[0]
        return path.startswith(("/orgs/acme/", "/api/v1/orgs/acme/"))

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        if self.down and self.is_acme(url):
            self.tried.append(url)
            raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] "
                                    "Connection refused")
        return self.real.request(method, url, **kwargs)


def looks_right(page: Page, shoot: Callable[..., Any], name: str,
                widths: tuple[str, ...] = ()) -> None:
    """Check the page at 1280 px and at 390 px: it must not scroll sideways nor break a
    word in the middle; every form control has a label, and the page one main heading.
    Screenshot it as `<name>` (desktop) and `<name>-phone` for the `widths` given
    ("desktop", "phone"): the user guide shows those."""
    expect(page.get_by_role("heading", level=1)).to_have_count(1)
    problems = label_problems(page)
    for size, width in ((VIEWPORT, "desktop"), (PHONE, "phone")):
        page.set_viewport_size(size)  # type: ignore[arg-type]
        where = f"{name} at {size['width']}px"
        if not page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"):
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            problems.append(f"{where}: {wide}px wide, it scrolls sideways")
        broken = page.evaluate(_BROKEN_WORDS)
        if broken:
            problems.append(f"{where}: words broken across lines: {broken}")
        if width in widths:
            shoot(name if width == "desktop" else f"{name}-phone")
    page.set_viewport_size(VIEWPORT)  # type: ignore[arg-type]
    assert not problems, "\n  ".join(problems)


def test_a_note_brought_while_its_issuer_sleeps_waits_then_is_credited_once(
        page: Page, live_server: LiveServer, shoot: Callable[..., Any]) -> None:
    app = live_server.app
    fake = clock.install(app, clock.FakeClock())
    assert isinstance(fake, clock.FakeClock)
    acme = AcmeAsleep(live_server)
    app.extensions["wallet.transport"] = acme
    note = claims_of(walletfile.parse(live_server.demo_wallet.read_text()).notes[0])
    jti, amount = str(note["jti"]), 500_000_000
    assert note["amount"] == {"value": "500.00", "currency": "USD"}
    before = summary(live_server, "globex", ADA).available
    honours_before = fs.count(app, "Transfer", kind="honour")

    # Ada brings the demo's wallet file to globex; acme does not answer.
    sign_in(page, ADA)
    page.goto("/orgs/globex/wallet")
    nav(page, "Bring credits")
    assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 200
    assert acme.tried, "acme was never asked"
    results = page.get_by_test_id("results")
    expect(results.get_by_role("heading")).to_have_text("500.00 USD is on its way")
    expect(results).to_contain_text("Acme AI has not answered yet")
    expect(results).to_contain_text("nothing has been credited yet")
    expect(results).to_contain_text("nothing you need to do")
    # Not an error and not a credit: no refusal badge, no "honoured", no alert.
    expect(results.locator(".badge-bad, .badge-ok")).to_have_count(0)
    expect(results).not_to_contain_text("honoured")
    expect(page.get_by_role("alert")).to_have_count(0)
    # Where to watch it: a link to the list below, which has it as waiting.
    expect(results.get_by_role("link", name="Pending credits")).to_have_attribute(
        "href", "#pending")
    row = results.get_by_role("row").filter(has_text="Acme AI")
    expect(row).to_contain_text(usd(amount))
    expect(row).to_contain_text("waiting")
    expect(results).not_to_contain_text(live_server.issuer("acme"))
    assert micros(page.get_by_test_id("available").inner_text()) == before
    assert micros(page.get_by_test_id("on-the-way").inner_text()) == amount
    assert summary(live_server, "globex", ADA).available == before
    assert note_state(live_server, "acme", jti) == "active"
    looks_right(page, shoot, "bring-pending", ("desktop", "phone"))

    # Later, "Bring credits" lists it as waiting, with when it is tried next.
    nav(page, "Wallet")
    nav(page, "Bring credits")
    waiting = page.get_by_test_id("pending")
    expect(waiting.get_by_role("heading")).to_have_text("Pending credits")
    entry = waiting.get_by_role("listitem").filter(has_text="Acme AI")
    expect(entry).to_have_count(1)
    expect(entry).to_have_attribute("data-state", "pending")
    expect(entry).to_contain_text(usd(amount))
    expect(entry.get_by_text("waiting", exact=True)).to_be_visible()
    expect(entry).to_contain_text("Acme AI has not answered yet. Next try:")
    expect(waiting).not_to_contain_text(live_server.issuer("acme"))
    assert micros(page.get_by_test_id("available").inner_text()) == before
    looks_right(page, shoot, "bring-waiting")

    # Acme answers again; the worker's sweep, once the first try is due, redeems it.
    acme.down = False
    fake.advance(31)
    assert jobs.retry_pending(app) == 1
    assert jobs.retry_pending(app) == 0  # finished: never tried again
    page.reload()
    entry = page.get_by_test_id("pending").get_by_role("listitem").filter(has_text="Acme AI")
    expect(entry).to_have_count(1)
    expect(entry).to_have_attribute("data-state", "honoured")
    expect(entry.get_by_text("credited", exact=True)).to_be_visible()
    expect(entry).to_contain_text(usd(amount))
    expect(entry).to_contain_text("Added to your balance on")
    assert micros(page.get_by_test_id("available").inner_text()) == before + amount
    expect(page.get_by_test_id("on-the-way")).to_have_count(0)
    looks_right(page, shoot, "bring-pending-credited", ("desktop",))

    # Once: acme redeemed it once, globex credited it once, and both ledgers balance.
    assert note_state(live_server, "acme", jti) == "redeemed"
    assert summary(live_server, "globex", ADA).available == before + amount
    assert fs.count(app, "HonouredNote", note_jti=jti) == 1
    assert fs.count(app, "Transfer", kind="honour") == honours_before + 1
    assert fs.count(app, "PendingHonour", note_jti=jti) == 1
    fs.assert_sound(app)
    nav(page, "Wallet")
    assert micros(page.get_by_test_id("available").inner_text()) == before + amount


def test_a_pending_credit_the_issuer_then_refuses_says_why_and_credits_nothing(
        page: Page, live_server: LiveServer, shoot: Callable[..., Any]) -> None:
    from wallet import db
    from wallet.actions import notes as note_actions
    from wallet.actions._base import Actor

    app = live_server.app
    fake = clock.install(app, clock.FakeClock())
    assert isinstance(fake, clock.FakeClock)
    acme = AcmeAsleep(live_server)
    app.extensions["wallet.transport"] = acme
    jti = str(claims_of(walletfile.parse(live_server.demo_wallet.read_text()).notes[0])["jti"])
    before = summary(live_server, "globex", ADA).available
    sign_in(page, ADA)
    page.goto("/orgs/globex/bring")
    assert bring_wallet_file(page, live_server.demo_wallet, DEMO_PASSWORD) == 200
    expect(page.get_by_test_id("results").get_by_role("heading")).to_have_text(
        "500.00 USD is on its way")

    # While acme sleeps for globex, acme revokes the note; then it answers again.
    with app.app_context():
        note_actions.revoke(db.session(), slug="acme", jti=jti, reason="issued by mistake",
                            actor=Actor.cli())
    acme.down = False
    fake.advance(31)
    assert jobs.retry_pending(app) == 1
    page.goto("/orgs/globex/bring")
    entry = page.get_by_test_id("pending").get_by_role("listitem").filter(has_text="Acme AI")
    expect(entry).to_have_attribute("data-state", "refused")
    expect(entry.get_by_text("refused", exact=True)).to_be_visible()
    expect(entry).to_contain_text("Not credited: Acme AI refused it (")
    expect(entry).to_contain_text("revoked")
    expect(page.get_by_test_id("on-the-way")).to_have_count(0)
    assert micros(page.get_by_test_id("available").inner_text()) == before
    assert summary(live_server, "globex", ADA).available == before
    looks_right(page, shoot, "bring-pending-refused")
    fs.assert_sound(app)
