"""Every page reachable from the navigation, as an engineer and as administrators: it loads
under the CSP without console errors, every form control has a label `get_by_label` finds,
the keyboard reaches the skip link first and then the navigation, focus is visible, and no
request leaves 127.0.0.1 (issue 6, "Qualities").
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.browser.conftest import VIEWPORT, LiveServer, Watch, sign_in

ADA = "ada@example.test"
ACME_ADMIN = "admin@acme.test"
GLOBEX_ADMIN = "admin@globex.test"
PORTAL_NAV = ["Wallet", "Transactions", "Notes", "Export a note", "Bring credits", "API tokens"]
ADMIN_NAV = ["Overview", "People", "Grants", "Keys", "Notes issued", "Trusted issuers",
             "Settlement", "Reports", "Webhooks", "Prices", "Audit log"]
# Screenshots for the user guide, taken on the way: (who, organisation, page) -> file name.
SHOTS = {
    (ADA, "acme", "Transactions"): "transactions",
    (ADA, "acme", "Notes"): "notes",
    (ADA, "acme", "API tokens"): "tokens",
    (ACME_ADMIN, "acme", "Overview"): "admin-overview",
    (ACME_ADMIN, "acme", "People"): "admin-people",
    (ACME_ADMIN, "acme", "Grants"): "admin-grants",
    (ACME_ADMIN, "acme", "Keys"): "admin-keys",
    (ACME_ADMIN, "acme", "Trusted issuers"): "admin-trust",
    (ACME_ADMIN, "acme", "Prices"): "admin-prices",
    (ACME_ADMIN, "acme", "Audit log"): "admin-audit",
}

# Every visible form control and how it is labelled (a <label for>, aria-label or
# aria-labelledby); `label` is the text get_by_label should find it by.
_CONTROLS = """() => Array.from(document.querySelectorAll('input, select, textarea'))
  .filter((e) => !['hidden', 'submit', 'button', 'reset', 'image'].includes(e.type))
  .filter((e) => e.getClientRects().length > 0)
  .map((e) => {
    const norm = (t) => (t || '').replace(/\\s+/g, ' ').trim();
    const byFor = Array.from(e.labels || []).map((l) => norm(l.textContent)).filter(Boolean);
    const byIds = (e.getAttribute('aria-labelledby') || '').split(/\\s+/).filter(Boolean)
      .map((id) => norm((document.getElementById(id) || {}).textContent)).join(' ');
    return {tag: e.tagName.toLowerCase(), type: e.type, id: e.id, name: e.name,
            label: byFor[0] || norm(e.getAttribute('aria-label')) || byIds || null,
            form: e.form ? (e.form.getAttribute('action') || '(this page)') : null};
  })"""

_FOCUSED = """() => {
  const e = document.activeElement;
  const cs = getComputedStyle(e);
  const r = e.getBoundingClientRect();
  return {tag: e.tagName.toLowerCase(), id: e.id, href: e.getAttribute('href'),
          text: (e.innerText || e.value || e.getAttribute('aria-label') || '').trim().slice(0, 60),
          outlineStyle: cs.outlineStyle, outlineWidth: parseFloat(cs.outlineWidth) || 0,
          inMain: !!e.closest('main'), inBanner: !!e.closest('header'),
          inNav: !!e.closest('nav[aria-label="Organisation"]'),
          // Chromium moves focus from a date field's day/month/year to its own calendar
          // button, which draws its own focus ring inside the field.
          datePicker: e.type === 'date' && !e.matches(':focus-visible'),
          onScreen: r.width > 0 && r.height > 0 && r.left >= 0 && r.top >= 0
                    && r.right <= window.innerWidth};
}"""


def label_problems(page: Page) -> list[str]:
    """Form controls of this page without a label that get_by_label finds."""
    problems = []
    where = page.url.split("/", 3)[-1]
    for c in page.evaluate(_CONTROLS):
        what = f"/{where}: <{c['tag']} type={c['type']} id={c['id']!r} name={c['name']!r}>"
        if not c["label"]:
            problems.append(f"{what} has no label (no <label for>, aria-label or "
                            "aria-labelledby)")
            continue
        found = page.get_by_label(c["label"], exact=True).evaluate_all(
            "els => els.map((e) => e.id)")
        if c["id"] not in found:
            problems.append(f"{what}: get_by_label({c['label']!r}) does not find it")
    return problems


def focused(page: Page) -> dict[str, Any]:
    return dict(page.evaluate(_FOCUSED))


def outline_visible(info: dict[str, Any]) -> bool:
    return info["outlineStyle"] != "none" and info["outlineWidth"] > 0


@pytest.mark.parametrize(("email", "slug"), [
    pytest.param(ADA, "acme", id="ada-acme"),
    pytest.param(ADA, "globex", id="ada-globex"),
    pytest.param(ACME_ADMIN, "acme", id="admin-acme"),
    pytest.param(GLOBEX_ADMIN, "globex", id="admin-globex"),
])
def test_every_navigation_page(page: Page, live_server: LiveServer, watch: Watch, shoot: Any,
                               email: str, slug: str) -> None:
    sign_in(page, email)
    page.goto(f"/orgs/{slug}/wallet")
    nav = page.get_by_role("navigation", name="Organisation")
    names = nav.get_by_role("link").all_inner_texts()
    admin = email != ADA
    assert names == PORTAL_NAV + (ADMIN_NAV if admin else []), names
    problems: list[str] = []
    layout: list[str] = []
    for name in names:
        link = nav.get_by_role("link", name=name, exact=True)
        with page.expect_navigation() as navigation:
            link.click()
        response = navigation.value
        assert response is not None and response.status == 200, (name, response)
        assert "default-src 'none'" in (response.header_value("content-security-policy") or "")
        assert response.header_value("cache-control") == "no-store", name  # personal pages
        expect(link).to_have_attribute("aria-current", "page")
        expect(page.get_by_role("heading", level=1)).to_have_count(1)
        problems += label_problems(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - innerWidth")
        if overflow > 0:
            layout.append(f"{name} ({page.url}) is {overflow}px wider than the "
                          f"{VIEWPORT['width']}px window: it scrolls sideways")
        if (email, slug, name) in SHOTS:
            shoot(SHOTS[(email, slug, name)])

    # Pages one click deeper: a note (from "Notes"), ending someone's employment (admins).
    page.goto(f"/orgs/{slug}/notes")
    notes = page.get_by_role("table").first.get_by_role("link")
    if notes.count():
        notes.first.click()
        expect(page.get_by_role("heading", level=1)).to_contain_text("Note")
        problems += label_problems(page)
    if admin:
        page.goto(f"/orgs/{slug}/admin/people")
        page.get_by_role("row").filter(has_text=ADA).get_by_role(
            "link", name="End employment…").click()
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"End {ADA}'s employment")
        expect(page.get_by_label("Last day of employment")).to_be_visible()
        problems += label_problems(page)
        if slug == "acme":
            shoot("admin-terminate")
    report = []
    if problems:
        report += ["form controls without a usable label:", *problems]
    if layout:
        report += ["pages that do not fit a desktop window:", *layout]
    assert not report, "\n  ".join(report)
    assert watch.left_loopback == []


def test_public_pages(page: Page, live_server: LiveServer, watch: Watch) -> None:
    """Signed out: sign in, and an organisation's public verify page."""
    for path, heading in (("/login", "Sign in"),
                          ("/orgs/acme/verify", "Verify a credit note as Acme AI would")):
        response = page.goto(path)
        assert response is not None and response.status == 200
        assert "default-src 'none'" in (response.header_value("content-security-policy") or "")
        expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        assert label_problems(page) == [], path
    page.get_by_label("Note", exact=True).fill("not a note~")
    page.get_by_role("button", name="Verify").click()
    report = page.get_by_test_id("report")
    expect(report.get_by_role("heading")).to_have_text("Not valid")
    expect(report).to_contain_text("malformed")
    assert watch.left_loopback == []


def test_keyboard_skip_link_then_navigation(page: Page, live_server: LiveServer) -> None:
    sign_in(page, ACME_ADMIN)  # an administrator has both navigation lists
    page.goto("/orgs/acme/export")
    nav_links = page.get_by_role("navigation", name="Organisation").get_by_role("link")
    hrefs = nav_links.evaluate_all("els => els.map((e) => e.getAttribute('href'))")

    page.keyboard.press("Tab")
    skip = focused(page)
    assert (skip["tag"], skip["text"], skip["href"]) == ("a", "Skip to content", "#main"), skip
    assert skip["onScreen"], "the skip link must show when focused"
    assert outline_visible(skip), skip

    before_nav, reached = [], []
    for _ in range(60):
        page.keyboard.press("Tab")
        info = focused(page)
        assert outline_visible(info), f"no visible focus outline on {info}"
        if info["inNav"]:
            reached.append(info["href"])
        elif info["inBanner"] and not reached:
            before_nav.append(info["text"])
        else:
            break
    # After the skip link only the top bar (brand, sign out) comes before the navigation,
    # then every navigation link in order, then the page itself.
    assert before_nav == ["◆ Compute Credits", "Sign out"], before_nav
    assert reached == hrefs
    assert info["inMain"] and info["id"] == "amount", info

    # The skip link jumps over all of it.
    page.goto("/orgs/acme/export")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{live_server.url}/orgs/acme/export#main")
    assert page.evaluate("() => document.activeElement.id") == "main"
    page.keyboard.press("Tab")
    after_skip = focused(page)
    assert after_skip["id"] == "amount" and outline_visible(after_skip), after_skip


@pytest.mark.parametrize(("email", "path"), [
    pytest.param(None, "/login", id="sign-in"),
    pytest.param(ADA, "/orgs/acme/export", id="export"),
    pytest.param(ADA, "/orgs/globex/bring", id="bring"),
    pytest.param(ACME_ADMIN, "/orgs/acme/admin/keys", id="admin-keys"),
    pytest.param(ACME_ADMIN, "/orgs/acme/admin/grants", id="admin-grants"),
])
def test_focus_is_visible_on_every_control(page: Page, live_server: LiveServer,
                                           email: str | None, path: str) -> None:
    """Tab through the whole page, round to where it started: every link, button and field
    shows where the focus is (the app's outline)."""
    if email:
        sign_in(page, email)
    page.goto(path)
    seen: list[tuple[str, str, str]] = []
    missing = []
    for _ in range(150):
        page.keyboard.press("Tab")
        info = focused(page)
        if info["tag"] == "body":  # between the last control and the first one
            continue
        key = (info["tag"], info["id"], info["text"])
        if seen and key == seen[0]:
            break  # round the whole page once
        if key in seen:
            continue  # the parts of one control (a date's day, month, year)
        seen.append(key)
        if not outline_visible(info) and not info["datePicker"]:
            missing.append(info)
    assert len(seen) >= 5, seen
    assert {"Skip to content", "Sign out" if email else "Sign in"} <= {k[2] for k in seen}
    assert missing == [], f"focused without a visible outline on {path}: {missing}"


def test_the_watch_reports_csp_violations_errors_and_escapes(page: Page, live_server: LiveServer,
                                                             watch: Watch) -> None:
    """The safety net every test relies on catches what it should (then forgets it here)."""
    page.goto("/login")
    with page.expect_console_message(lambda m: "CSP violation" in m.text):
        page.evaluate("""() => { const s = document.createElement('script');
                                 s.textContent = 'window.inlineRan = true';
                                 document.head.appendChild(s); }""")
    assert page.evaluate("() => window.inlineRan === undefined")  # blocked by the CSP
    with page.expect_event("pageerror"):
        page.evaluate("() => { setTimeout(() => { throw new Error('boom'); }, 0); }")
    with pytest.raises(PlaywrightError):
        page.goto("http://example.com/")
    problems = "\n".join(watch.problems())
    assert "CSP violation" in problems
    assert "JavaScript error" in problems and "boom" in problems
    assert "request left 127.0.0.1 (aborted): http://example.com/" in problems
    watch.clear()
