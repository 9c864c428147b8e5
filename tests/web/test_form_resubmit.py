"""Back + "send again" never records twice (issue 11: "funded twice").

Each test walks the way a browser does: render the form, submit it, render it again
(Back with `Cache-Control: no-store` fetches the page again), submit the same values.
Nothing is recorded twice; the answer says, next to the form, what was recorded; a box
on that answer records another identical one on purpose. A form's key is the one of
its first render until a submission of it is recorded.
"""

from __future__ import annotations

import html
import io
import json
import re
import threading
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.support import World
from wallet import db
from wallet.core import jose, ledger
from wallet.store import ledger as ledger_store

OVERVIEW = "/orgs/acme/admin/"
GRANTS = "/orgs/acme/admin/grants"
SETTLEMENT = "/orgs/acme/admin/settlement"
KEYS = "/orgs/acme/admin/keys"
EXPORT = "/orgs/acme/export"
USD = 1_000_000


def _hidden(page: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', page)
    assert match, f"no field {name} on the page"
    return html.unescape(match.group(1))


def _render(client: FlaskClient, path: str) -> dict[str, str]:
    """GET a page; the hidden values its form would send."""
    page = client.get(path)
    assert page.status_code == 200, page.status_code
    text = page.get_data(as_text=True)
    found = {"csrf_token": _hidden(text, "csrf_token")}
    if 'name="idempotency_key"' in text:
        found["idempotency_key"] = _hidden(text, "idempotency_key")
    return found


def _refused(answer: Any, *, shows: str) -> str:
    """The answer to a resubmission: 409, the form again, what was recorded next to it."""
    assert answer.status_code == 409, (answer.status_code, answer.get_data(as_text=True)[:300])
    text = answer.get_data(as_text=True)
    notice = re.search(r'data-testid="already-recorded">(.*?)</div>', text, re.S)
    assert notice, "no 'already recorded' notice on the page"
    assert "Already recorded" in notice.group(1) and shows in notice.group(1), notice.group(1)
    assert "Nothing was recorded now" in notice.group(1)
    # The notice sits inside the form, so its "record another" box is sent with it.
    at = text.index('data-testid="already-recorded"')
    opened = text.rfind("<form", 0, at)
    assert opened != -1 and "</form>" not in text[opened:at]
    return text


def _again(text: str) -> dict[str, str]:
    """The hidden values of a refusal page, with "record another identical one" ticked."""
    return {"csrf_token": _hidden(text, "csrf_token"),
            "idempotency_key": _hidden(text, "idempotency_key"),
            "again_of": _hidden(text, "again_of"), "again": "y"}


def _balance(app: Flask, name: str, slug: str = "acme") -> int:
    oid = fs.org_id(app, slug)
    with app.app_context():
        s = db.session()
        value = ledger_store.balance(s, org_id=oid, name=name, currency="USD")
        s.rollback()
        return value


# -- funding ---------------------------------------------------------------------------------


def test_fund_back_and_send_again_funds_once(app: Flask, client: FlaskClient,
                                             world: World) -> None:
    support.login(client, world.acme_admin)
    before = _balance(app, ledger.POOL)
    values = {"amount": "1000.00", "memo": "Q3 budget"}

    first = client.post(OVERVIEW, data={**values, **_render(client, OVERVIEW)})
    assert first.status_code == 302
    back = _render(client, OVERVIEW)  # Back: the page is fetched again
    again = client.post(OVERVIEW, data={**values, **back})

    text = _refused(again, shows="1,000.00 USD (Q3 budget)")
    assert 'name="again"' in text and "Record another identical funding" in text
    assert _balance(app, ledger.POOL) == before + 1000 * USD

    # Ticking the box records a second, separate funding, once.
    meant = client.post(OVERVIEW, data={**values, **_again(text)})
    assert meant.status_code == 302
    assert _balance(app, ledger.POOL) == before + 2000 * USD
    # That answer sent again (Back to it, send) is the same request: answered, not repeated.
    third = client.post(OVERVIEW, data={**values, **_again(text)}, follow_redirects=True)
    assert "already recorded; nothing changed" in third.get_data(as_text=True)
    # And Back to the form, same values, ticked again on a stale answer: refused.
    stale = client.post(OVERVIEW, data={**values, **_again(text),
                                        "idempotency_key": _render(client, OVERVIEW)[
                                            "idempotency_key"]})
    _refused(stale, shows="1,000.00 USD")
    assert _balance(app, ledger.POOL) == before + 2000 * USD


def test_fund_page_restored_with_its_old_key_and_other_values_is_refused_with_a_fresh_key(
        app: Flask, client: FlaskClient, world: World) -> None:
    """Back restoring the page as it was (its spent key), the amount then changed."""
    support.login(client, world.acme_admin)
    before = _balance(app, ledger.POOL)
    form = {"amount": "1000", "memo": "", **_render(client, OVERVIEW)}
    assert client.post(OVERVIEW, data=form).status_code == 302
    # The same request again (same key, same amount written otherwise) is answered as the
    # first one was: nothing more is recorded.
    replay = client.post(OVERVIEW, data={**form, "amount": "1000.00"}, follow_redirects=True)
    assert "already recorded; nothing changed" in replay.get_data(as_text=True)
    # The same restored page with another amount: refused, with a fresh key to send.
    changed = client.post(OVERVIEW, data={**form, "amount": "5.00"})
    assert changed.status_code == 409
    text = changed.get_data(as_text=True)
    assert "already sent" in text and "check the values" in text
    fresh = _hidden(text, "idempotency_key")
    assert fresh != form["idempotency_key"]
    assert _balance(app, ledger.POOL) == before + 1000 * USD
    sent = client.post(OVERVIEW, data={**form, "amount": "5.00", "idempotency_key": fresh})
    assert sent.status_code == 302
    assert _balance(app, ledger.POOL) == before + 1005 * USD


def test_a_forms_key_is_the_one_of_its_first_render_until_recorded(
        app: Flask, client: FlaskClient, world: World) -> None:
    support.login(client, world.acme_admin)
    first = _render(client, OVERVIEW)["idempotency_key"]
    assert _render(client, OVERVIEW)["idempotency_key"] == first  # reload, Back
    invalid = client.post(OVERVIEW, data={"amount": "12.3.4", **_render(client, OVERVIEW)})
    assert _hidden(invalid.get_data(as_text=True), "idempotency_key") == first
    assert _render(client, GRANTS)["idempotency_key"] != first  # another form, its own key
    assert client.post(OVERVIEW, data={"amount": "7.00", **_render(client, OVERVIEW)}
                       ).status_code == 302
    assert _render(client, OVERVIEW)["idempotency_key"] != first  # recorded: the next is new


def test_the_window_is_configurable_and_then_identical_values_go_through(
        app: Flask, client: FlaskClient, world: World) -> None:
    from wallet import clock

    fake = clock.FakeClock()
    clock.install(app, fake)
    app.config["WALLET_RESUBMIT_WINDOW_SECONDS"] = 60
    support.login(client, world.acme_admin)
    before = _balance(app, ledger.POOL)
    values = {"amount": "3.00"}
    assert client.post(OVERVIEW, data={**values, **_render(client, OVERVIEW)}).status_code == 302
    fake.advance(59)
    _refused(client.post(OVERVIEW, data={**values, **_render(client, OVERVIEW)}),
             shows="3.00 USD")
    fake.advance(2)
    assert client.post(OVERVIEW, data={**values, **_render(client, OVERVIEW)}).status_code == 302
    assert _balance(app, ledger.POOL) == before + 6 * USD


def test_a_double_click_sends_one_key_twice_at_once_and_funds_once(
        app: Flask, world: World) -> None:
    """Two requests with the key of one render, at the same moment: the database decides."""
    client = app.test_client()
    support.login(client, world.acme_admin)
    before = _balance(app, ledger.POOL)
    form = {"amount": "42.00", **_render(client, OVERVIEW)}
    cookie = client.get_cookie("wallet_session")
    assert cookie is not None
    clients = [app.test_client() for _ in range(4)]
    for c in clients:
        c.set_cookie("wallet_session", cookie.value)
    start, statuses = threading.Barrier(len(clients)), []

    def send(c: FlaskClient) -> None:
        start.wait()
        statuses.append(c.post(OVERVIEW, data=form).status_code)

    threads = [threading.Thread(target=send, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert statuses == [302] * len(clients)
    assert _balance(app, ledger.POOL) == before + 42 * USD


# -- grants ----------------------------------------------------------------------------------


def test_grant_back_and_send_again_grants_once(app: Flask, client: FlaskClient,
                                               world: World) -> None:
    from wallet.actions import grants as grant_actions
    from wallet.store import people

    support.login(client, world.acme_admin)
    values = {"email": world.bob, "amount": "1200.00", "every": "month", "months": "12",
              "cliff_months": "", "start": "", "memo": ""}
    assert client.post(GRANTS, data={**values, **_render(client, GRANTS)}).status_code == 302
    again = client.post(GRANTS, data={**values, "email": world.bob.upper(),
                                      **_render(client, GRANTS)})
    text = _refused(again, shows="1,200.00 USD")
    assert world.bob in text
    with app.app_context():
        org = people.org_by_slug(db.session(), slug="acme")
        assert org is not None
        assert grant_actions.grant_count(db.session(), org=org) == 1
    assert client.post(GRANTS, data={**values, **_again(text)}).status_code == 302
    with app.app_context():
        assert grant_actions.grant_count(db.session(), org=org) == 2


# -- exports from the portal -----------------------------------------------------------------


def _notes_of_ada(app: Flask) -> int:
    return fs.count(app, "Note", org_id=fs.org_id(app, "acme"),
                    person_id=fs.person_id(app, fs.ADA))


@pytest.fixture
def exporter(app: Flask, client: FlaskClient, world: World) -> FlaskClient:
    fs.generate_keys(app, "acme")
    fs.give(app, "acme", fs.ADA, "500.00")
    support.login(client, world.ada)
    return client


def test_export_to_a_new_wallet_back_and_send_again_exports_once(
        app: Flask, exporter: FlaskClient) -> None:
    values = {"amount": "120.50", "mode": "new", "passphrase": "wallet pass 1",
              "confirm": "wallet pass 1", "holder_jwk": ""}
    download = exporter.post(EXPORT, data={**values, **_render(exporter, EXPORT)})
    assert download.status_code == 200 and download.mimetype == "application/json"
    # The download leaves the form on screen: "Export" again, or Back and again.
    same_page = exporter.post(EXPORT, data={
        **values, **_render(exporter, EXPORT), "passphrase": "another pass",
        "confirm": "another pass"})
    text = _refused(same_page, shows="120.50 USD")
    assert "wallet pass 1" not in text and "another pass" not in text
    assert _notes_of_ada(app) == 1
    assert fs.wallet_balance(app, "acme") == 500 * USD - 120_500_000
    meant = exporter.post(EXPORT, data={**values, **_again(text)})
    assert meant.status_code == 200 and meant.mimetype == "application/json"
    assert _notes_of_ada(app) == 2


def test_export_to_my_key_back_and_send_again_exports_once(
        app: Flask, exporter: FlaskClient) -> None:
    jwk = json.dumps(jose.public_jwk(Ed25519PrivateKey.generate()))
    values = {"amount": "10", "mode": "jwk", "holder_jwk": jwk}
    first = exporter.post(EXPORT, data={**values, **_render(exporter, EXPORT)})
    assert first.status_code == 302 and "/notes/urn:uuid:" in first.headers["Location"]
    _refused(exporter.post(EXPORT, data={**values, "amount": "10.00",
                                         **_render(exporter, EXPORT)}), shows="10.00 USD")
    assert _notes_of_ada(app) == 1


# -- settlement ------------------------------------------------------------------------------


def test_settlement_back_and_send_again_records_once(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder, "100.00")
    assert fs.bring(fed, client, note).status_code == 200
    owed = ledger.payable(fs.GLOBEX)
    assert _balance(app, owed) == 100 * USD
    admin = app.test_client()
    support.login(admin, "admin@acme.test")
    values = {"counterparty": fs.GLOBEX, "direction": "paid", "amount": "40.00",
              "reference": "INV-1"}
    assert admin.post(SETTLEMENT, data={**values, **_render(admin, SETTLEMENT)}
                      ).status_code == 302
    text = _refused(admin.post(SETTLEMENT, data={**values, **_render(admin, SETTLEMENT)}),
                    shows="40.00 USD")
    assert text.count('data-testid="already-recorded"') == 1  # next to that line's form only
    assert _balance(app, owed) == 60 * USD
    # Another amount is another payment.
    assert admin.post(SETTLEMENT, data={**values, "amount": "25.00",
                                        **_render(admin, SETTLEMENT)}).status_code == 302
    assert _balance(app, owed) == 35 * USD


# -- key rotation ----------------------------------------------------------------------------


def test_rotate_back_and_send_again_rotates_once(app: Flask, client: FlaskClient,
                                                 world: World) -> None:
    fs.generate_keys(app, "acme")
    support.login(client, world.acme_admin)
    keys = lambda: fs.count(app, "SigningKey", org_id=fs.org_id(app, "acme"))  # noqa: E731
    rotate = f"{KEYS[:-5]}/keys/rotate"
    assert client.post(rotate, data=_render(client, KEYS)).status_code == 302
    assert keys() == 2
    text = _refused(client.post(rotate, data=_render(client, KEYS)), shows="new signing key")
    assert keys() == 2
    assert client.post(rotate, data=_again(text)).status_code == 302
    assert keys() == 3


# -- what the database already makes happen once ---------------------------------------------


def test_terminate_back_and_send_again_ends_employment_once(
        app: Flask, client: FlaskClient, world: World) -> None:
    bob = fs.person_id(app, world.bob)
    page = f"/orgs/acme/admin/people/{bob}/terminate"
    support.login(client, world.acme_admin)
    form = {"on": "2030-01-31", **_render(client, page)}
    assert client.post(page, data=form).status_code == 302
    back = client.get(page).get_data(as_text=True)
    assert "Employment already ends on 2030-01-31" in back and "End employment</button>" not in back
    again = client.post(page, data=form, follow_redirects=True)
    assert "already ends on 2030-01-31; nothing changed" in again.get_data(as_text=True)
    assert fs.count(app, "AuditEvent", action="person.terminate") == 1


def test_csv_import_back_and_send_again_imports_once(app: Flask, client: FlaskClient,
                                                     world: World) -> None:
    from wallet.actions import grants as grant_actions
    from wallet.store import people

    support.login(client, world.acme_admin)
    csv = f"email,amount,start,cliff_months,every,months\n{world.bob},10.00,,,,\n".encode()
    for _ in range(2):
        sent = support.post_form(client, f"{GRANTS}/import",
                                 {"file": (io.BytesIO(csv), "grants.csv")}, page=GRANTS,
                                 content_type="multipart/form-data")
        assert sent.status_code == 302
    with app.app_context():
        org = people.org_by_slug(db.session(), slug="acme")
        assert org is not None
        assert grant_actions.grant_count(db.session(), org=org) == 1


def test_note_revoke_back_and_send_again_returns_the_value_once(
        app: Flask, client: FlaskClient, world: World) -> None:
    fs.generate_keys(app, "acme")
    fs.give(app, "acme", fs.ADA, "50.00")
    note = fs.export(app, Ed25519PrivateKey.generate(), "20.00")
    support.login(client, world.acme_admin)
    page = f"/orgs/acme/admin/notes?q={note.jti}"
    form = {"reason": "lost laptop", **_render(client, page)}
    revoke = f"/orgs/acme/admin/notes/{note.jti}/revoke"
    assert client.post(revoke, data=form).status_code == 302
    assert fs.wallet_balance(app, "acme") == 50 * USD
    _render(client, page)  # Back
    again = client.post(revoke, data=form, follow_redirects=True)
    assert again.status_code == 200 and "revoked" in again.get_data(as_text=True)
    assert fs.wallet_balance(app, "acme") == 50 * USD
    assert fs.note_state(app, note.jti) == "revoked"
