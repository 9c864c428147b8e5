"""Browser tests: Playwright (Python) driving Debian's Chromium against the real app.

Each test gets its own database (SQLite and, with WALLET_TEST_POSTGRES_URL, PostgreSQL,
through the `app` fixture of tests/conftest.py, which checks the ledger at the end), the
demo loaded into it by the real `wallet.actions.demo.load`, and the app served on
127.0.0.1 by werkzeug in a daemon thread. The port is bound first, so WALLET_BASE_URL
(from which issuer ids derive) is exactly the URL the browser talks to.

One Chromium per run of this package, one browser context per test. Every test fails
when a page logs a JavaScript error or a Content-Security-Policy violation, when a
sub-resource or page answers 5xx, or when the page tries to reach any host but the
served one (all other requests are aborted).

Chromium: $WALLET_TEST_CHROMIUM, else /usr/bin/chromium. Missing, the browser tests are
skipped with the way to install it; in CI (CI=true or 1) they fail instead.
Screenshots: `shoot(name)` saves a full-page PNG to $WALLET_SCREENSHOTS/<name>.png on the
SQLite run (`make screenshots` sets it to docs/images), else under the test's tmp_path.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests import support
from wallet.actions.demo import DEFAULT_PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        ConsoleMessage,
        Locator,
        Page,
        Response,
        Route,
    )

HERE = Path(__file__).resolve().parent
CHROMIUM_ENV = "WALLET_TEST_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS_ENV = "WALLET_SCREENSHOTS"
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
INSTALL_HINT = ("install it with `sudo apt-get install -y chromium` (Debian/Ubuntu), or set "
                f"{CHROMIUM_ENV} to a Chromium binary")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
DEMO_PASSWORD = DEFAULT_PASSWORD  # "demo-password", as `wallet demo` and the user guide say

# A page that violates the CSP also says so here, whatever Chromium logs by itself.
_CSP_PROBE = """
document.addEventListener('securitypolicyviolation', (e) => {
  console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline'));
});
"""


# -- Chromium: found, skipped with a hint, or (in CI) a failure ------------------------------


def chromium_path() -> str | None:
    """The Chromium binary to drive, or None when it is not installed."""
    return shutil.which(os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM)


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return ("the Playwright Python package is not installed: run `make venv` "
                "(it installs the test extras)")
    if chromium_path() is None:
        wanted = os.environ.get(CHROMIUM_ENV) or DEFAULT_CHROMIUM
        return f"Chromium not found at {wanted}: {INSTALL_HINT}"
    return None


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test of this folder `browser`; skip them (only them) without Chromium."""
    missing = None if IN_CI else _missing()
    for item in items:
        if not item.path.is_relative_to(HERE):
            continue
        item.add_marker(pytest.mark.browser)
        if missing:
            item.add_marker(pytest.mark.skip(reason=f"browser test skipped: {missing}"))


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole package."""
    missing = _missing()
    if missing:
        pytest.fail(f"CI is set, so the browser tests must run, but {missing}", pytrace=False)
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=chromium_path(),
                                              args=CHROMIUM_ARGS, headless=True)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


# -- the live server -------------------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """No access log (errors are still logged)."""


class _Served:
    """The app as served to the browser: each response is read whole and closed before it is
    sent, and requests in progress are counted.

    When a test ends, Chromium drops connections still open (a late favicon request, say);
    werkzeug's development server then may not close the response it was streaming, and
    the open file surfaces as a ResourceWarning (an error under this project's
    filterwarnings) in a later test. Buffering the (small) responses avoids that, and
    teardown waits for requests in progress before the database goes away.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._busy = 0
        self._idle = threading.Condition()

    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        with self._idle:
            self._busy += 1
        try:
            body = self.app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                if hasattr(body, "close"):
                    body.close()
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being served; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout)


def _not_ready(_environ: Any, start_response: Any) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting"]


@pytest.fixture
def _listener() -> Iterator[BaseWSGIServer]:
    """A server bound to a free loopback port now; the app is attached once it exists."""
    server = make_server("127.0.0.1", 0, _not_ready, threaded=True,
                         request_handler=_QuietHandler)
    yield server
    server.server_close()


@pytest.fixture
def base_url(_listener: BaseWSGIServer) -> str:
    """The served URL, http://127.0.0.1:<port> (also the app's WALLET_BASE_URL)."""
    return f"http://127.0.0.1:{_listener.port}"


@pytest.fixture
def app_config(db_url: str, tmp_path: Path, base_url: str) -> dict[str, Any]:
    """The test app's settings, with WALLET_BASE_URL set to the served URL before create_app."""
    return support.test_config(db_url, tmp_path, WALLET_BASE_URL=base_url)


@dataclass(frozen=True)
class LiveServer:
    """The app with the demo loaded, served over HTTP on loopback."""

    url: str
    app: Flask
    demo_wallet: Path  # <instance>/demo/ada.ccwallet: 500.00 USD under the demo password

    def issuer(self, slug: str) -> str:
        return f"{self.url}/orgs/{slug}"


@pytest.fixture
def live_server(app: Flask, _listener: BaseWSGIServer, base_url: str) -> Iterator[LiveServer]:
    """Load the demo through the real action, then serve `app` until the test ends."""

    from wallet import db
    from wallet.actions import demo

    assert app.config["WALLET_BASE_URL"] == base_url
    with app.app_context():
        demo.load(db.session(), password=DEMO_PASSWORD)
        wallet_file = demo.wallet_file_path()
    served = _Served(app)
    _listener.app = served
    thread = threading.Thread(target=_listener.serve_forever, kwargs={"poll_interval": 0.05},
                              name=f"live-server-{_listener.port}", daemon=True)
    thread.start()
    try:
        yield LiveServer(base_url, app, wallet_file)
    finally:
        _listener.shutdown()
        thread.join(timeout=10)
        # The ledger check and the database's removal come next: let requests finish.
        assert served.wait_idle(timeout=15), "requests still running 15 s after the test"


# -- the page, watched -----------------------------------------------------------------------


@dataclass
class Watch:
    """What the browser reported during a test: everything here must stay empty."""

    origin: str
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[tuple[str, str]] = field(default_factory=list)
    left_loopback: list[str] = field(default_factory=list)
    bad_responses: list[str] = field(default_factory=list)
    answered_4xx: set[str] = field(default_factory=set)

    def route(self, route: Route) -> None:
        """Let requests to the served origin through; abort (and record) every other."""
        url = route.request.url
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self.origin:
            route.continue_()
        else:
            self.left_loopback.append(url)
            route.abort("blockedbyclient")

    def attach(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.page_errors.append(f"{page.url}: {error}"))
        page.on("response", self._response)

    def _console(self, message: ConsoleMessage) -> None:
        text = message.text
        if message.type == "error" or "Content Security Policy" in text:
            self.console_errors.append((text, message.location.get("url", "")))

    def _response(self, response: Response) -> None:
        document = response.request.resource_type == "document"
        if response.status >= 500 or (response.status >= 400 and not document):
            self.bad_responses.append(f"{response.status} {response.request.method} "
                                      f"{response.url} ({response.request.resource_type})")
        elif response.status >= 400:
            self.answered_4xx.add(response.url)  # a form answered 4xx on purpose

    def problems(self) -> list[str]:
        """Every problem seen, in words."""
        found = [f"JavaScript error: {e}" for e in self.page_errors]
        for text, url in self.console_errors:
            # Chromium logs a page answered 4xx (a form shown again with its errors) as a
            # failed load; that is the app's intended answer, not a page problem.
            if text.startswith("Failed to load resource: the server responded with a status"
                               " of 4") and url in self.answered_4xx:
                continue
            kind = "CSP violation" if ("Content Security Policy" in text
                                       or text.startswith("CSP violation")) else "console error"
            found.append(f"{kind} on {url or '?'}: {text}")
        found += [f"request left 127.0.0.1 (aborted): {u}" for u in self.left_loopback]
        found += [f"bad response: {r}" for r in self.bad_responses]
        return found

    def clear(self) -> None:
        """Forget what was seen (for a test that provokes a problem on purpose)."""
        self.page_errors.clear()
        self.console_errors.clear()
        self.left_loopback.clear()
        self.bad_responses.clear()


_WATCH = pytest.StashKey[Watch]()


@pytest.fixture
def context(browser: Browser, live_server: LiveServer,
            request: pytest.FixtureRequest) -> Iterator[BrowserContext]:
    """A fresh browser context (cookies, downloads) for this test, watched."""
    ctx = browser.new_context(base_url=live_server.url, viewport=VIEWPORT,  # type: ignore[arg-type]
                              accept_downloads=True, locale="en-GB", timezone_id="UTC",
                              color_scheme="light", reduced_motion="reduce",
                              device_scale_factor=1)
    ctx.set_default_timeout(15_000)
    ctx.set_default_navigation_timeout(20_000)
    watch = Watch(live_server.url)
    request.node.stash[_WATCH] = watch
    ctx.route("**/*", watch.route)
    ctx.add_init_script(_CSP_PROBE)
    ctx.on("page", watch.attach)
    yield ctx
    ctx.close()


@pytest.fixture
def watch(context: BrowserContext, request: pytest.FixtureRequest) -> Watch:
    """What the browser reported so far in this test."""
    return request.node.stash[_WATCH]


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page of this test's context; relative URLs resolve against the live server."""
    return context.new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail a test whose pages logged a JS error or CSP violation, or reached off loopback."""
    result = yield
    watch = item.stash.get(_WATCH, None)
    problems = watch.problems() if watch else []
    if problems:
        pytest.fail("the browser reported problems:\n  " + "\n  ".join(problems), pytrace=False)
    return result


# -- screenshots -----------------------------------------------------------------------------


@pytest.fixture
def shoot(page: Page, backend: str, tmp_path: Path) -> Callable[..., Path]:
    """`shoot(name)`: a full-page PNG of the page, to $WALLET_SCREENSHOTS (SQLite run only)."""
    target = os.environ.get(SCREENSHOTS_ENV)
    folder = Path(target) if target and backend == "sqlite" else tmp_path / "screenshots"

    def take(name: str, on: Page | None = None) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        (on or page).screenshot(path=str(path), full_page=True, animations="disabled",
                                caret="hide")
        return path

    return take


# -- helpers for the tests -------------------------------------------------------------------


def sign_in(page: Page, email: str, password: str = DEMO_PASSWORD) -> None:
    """Sign in through the form, like a person."""
    from playwright.sync_api import expect

    page.goto("/login")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    expect(page.get_by_role("banner")).to_contain_text(email)


def sign_out(page: Page) -> None:
    """Sign out from the top bar."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


_AMOUNT = re.compile(r"(-?[0-9][0-9,]*\.[0-9]{2,6}) ([A-Z]{3})")


def micros(text: str, currency: str = "USD") -> int:
    """The amount shown in `text` ("10,750.00 USD", "0.00 USD") in micros."""
    found = _AMOUNT.findall(text)
    assert len(found) == 1, f"expected one amount in {text!r}"
    value, shown_currency = found[0]
    assert shown_currency == currency, text
    whole, _, fraction = value.lstrip("-").replace(",", "").partition(".")
    amount = int(whole) * 1_000_000 + int(fraction.ljust(6, "0"))
    return -amount if value.startswith("-") else amount


def usd(amount_micros: int) -> str:
    """Micros as the pages show them: "1,250.00 USD"."""
    from wallet.core.money import format_display

    return format_display(amount_micros, "USD")


def summary(server: LiveServer, slug: str, email: str) -> Any:
    """`wallet.actions.wallets.summary` of a person, read in the app (not through a page)."""
    from wallet import db
    from wallet.actions import wallets
    from wallet.store import people

    with server.app.app_context():
        session = db.session()
        org = people.org_by_slug(session, slug=slug)
        assert org is not None and org.id is not None
        found = people.member_by_email(session, org_id=org.id, email=email)
        assert found is not None, (slug, email)
        return wallets.summary(session, org=org, person=found[1])


def note_state(server: LiveServer, slug: str, jti: str) -> str:
    """The issuer's record of a note: active, redeemed, revoked or reclaimed."""
    from wallet import db
    from wallet.store import notes as note_store
    from wallet.store import people

    with server.app.app_context():
        session = db.session()
        org = people.org_by_slug(session, slug=slug)
        assert org is not None and org.id is not None
        row = note_store.note_by_jti(session, org_id=org.id, jti=jti)
        assert row is not None, jti
        return str(row.state)


def claims_of(note: str) -> dict[str, Any]:
    """The payload of a note (`<JWT>~`), decoded without verifying."""
    payload = note.rstrip("~").split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def nav(page: Page, name: str) -> None:
    """Follow a link of the organisation navigation and wait for the page."""
    from playwright.sync_api import expect

    link = page.get_by_role("navigation", name="Organisation").get_by_role(
        "link", name=name, exact=True)
    with page.expect_navigation() as navigation:
        link.click()
    assert navigation.value is not None and navigation.value.status == 200, name
    expect(link).to_have_attribute("aria-current", "page")


def shown(page: Page, test_id: str) -> int:
    """The amount shown in the element with this data-testid, in micros."""
    return micros(page.get_by_test_id(test_id).inner_text())


def settlement_figures(server: LiveServer, slug: str, counterparty: str) -> tuple[int, int]:
    """(we owe, they owe) between `slug` and `counterparty`, read in the app."""
    from wallet import db
    from wallet.actions import settlement as settlement_actions

    with server.app.app_context():
        lines = settlement_actions.lines(db.session(), slug=slug)
    for line in lines:
        if line.counterparty == server.issuer(counterparty):
            return line.we_owe, line.they_owe
    return 0, 0


def settlement_section(page: Page, name: str) -> Locator:
    """The settlement card of one counterparty, found by its heading."""
    return page.get_by_test_id("settlement-line").filter(
        has=page.get_by_role("heading", name=re.compile(rf"^{re.escape(name)}\b")))


def bring_wallet_file(page: Page, path: Path, passphrase: str) -> int:
    """On "Bring credits": upload a wallet file with its passphrase; return the HTTP status."""
    page.get_by_label("Wallet file (.ccwallet)").set_input_files(str(path))
    page.get_by_label("Its passphrase").fill(passphrase)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Bring these credits in").click()
    assert navigation.value is not None
    return navigation.value.status
