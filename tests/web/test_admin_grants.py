"""Admin pages for grants, CSV upload, prices and liabilities; the engineer's dashboard."""

from __future__ import annotations

import io
import re
from datetime import date

from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.grant_helpers import UNIT, balance, count, real_clock, set_clock, unvested_of, wallet_of
from tests.support import World
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor
from wallet.core.vesting import add_months
from wallet.models import Grant, Tranche

CLI = Actor.cli()
GRANTS = "/orgs/acme/admin/grants"
HEADER = "email,amount,start,cliff_months,every,months\n"


def _no_inline_style(html: str) -> None:
    assert not re.search(r"\sstyle=", html), "inline style attributes break the CSP"
    assert "<script" not in html


def test_grant_form_creates_one_grant_even_when_submitted_twice(
        app: Flask, client: FlaskClient, world: World) -> None:
    support.login(client, world.acme_admin)
    page = client.get(GRANTS)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    _no_inline_style(html)
    key = re.search(r'name="idempotency_key" type="hidden" value="([0-9a-f]+)"', html)
    assert key is not None
    form = {"email": world.ada, "amount": "4800.00", "every": "month", "months": "48",
            "cliff_months": "12", "start": date.today().isoformat(), "memo": "",
            "idempotency_key": key.group(1)}
    first = support.post_form(client, GRANTS, form)
    assert first.status_code == 302
    listing = client.get(GRANTS).get_data(as_text=True)
    assert "Granted 4,800.00 USD to ada@example.test vesting in 37 tranche(s)." in listing
    assert "monthly over 48 months" in listing and "12-month cliff" in listing
    second = support.post_form(client, GRANTS, form)  # the double submit
    assert second.status_code == 302
    assert "already recorded; nothing changed" in client.get(GRANTS).get_data(as_text=True)
    assert count(app, Grant.__table__) == 1
    assert unvested_of(app, world.ada) == 4800 * UNIT


def test_grant_form_errors_stay_next_to_their_fields(app: Flask, client: FlaskClient,
                                                     world: World) -> None:
    support.login(client, world.acme_admin)
    r = support.post_form(client, GRANTS, {"email": "nobody@acme.test", "amount": "10.00",
                                           "every": "", "idempotency_key": "k1"})
    assert r.status_code == 422
    html = r.get_data(as_text=True)
    assert 'id="email-error"' in html and "not a member of acme" in html
    r = support.post_form(client, GRANTS, {"email": world.ada, "amount": "999999.00",
                                           "every": "", "idempotency_key": "k2"})
    assert r.status_code == 422 and 'id="amount-error"' in r.get_data(as_text=True)
    assert "the pool holds 250,000.00 USD" in r.get_data(as_text=True)
    r = support.post_form(client, GRANTS, {"email": world.ada, "amount": "10.00",
                                           "every": "month", "idempotency_key": "k3"})
    assert r.status_code == 422 and "months is required" in r.get_data(as_text=True)
    assert count(app, Grant.__table__) == 0


def _upload(client: FlaskClient, text: bytes, name: str = "grants.csv") -> tuple[int, str]:
    token = support.csrf_token(client, GRANTS)
    r = client.post(f"{GRANTS}/import", data={"csrf_token": token,
                                               "file": (io.BytesIO(text), name)},
                    content_type="multipart/form-data")
    body = r.get_data(as_text=True)
    if r.status_code == 302:
        body = client.get(GRANTS).get_data(as_text=True)
    return r.status_code, body


def test_csv_upload_reports_every_bad_line_and_imports_nothing(
        app: Flask, client: FlaskClient, world: World) -> None:
    support.login(client, world.acme_admin)
    bad = (HEADER + f"{world.ada},10.00,,,,\n{world.bob},ten,,,,\n"
           + f"{world.bob},5.00,2025-02-30,,month,12\n").encode()
    status, html = _upload(client, bad)
    assert status == 422
    _no_inline_style(html)
    table = html[html.index('data-testid="row-errors"'):]
    assert re.search(r"<td>3</td><td>amount &#39;ten&#39; is not a plain decimal", table)
    assert re.search(r"<td>4</td><td>start &#39;2025-02-30&#39; is not a valid date", table)
    assert "Nothing was imported" in html
    assert count(app, Grant.__table__) == 0 and balance(app, "pool") == 250_000 * UNIT

    status, html = _upload(client, (HEADER + "nobody@acme.test,1.00,,,,\n").encode())
    assert status == 422 and "<td>2</td><td>nobody@acme.test is not a member of acme" in html
    status, html = _upload(client, b"\xff\xfe" + HEADER.encode("utf-16-le"))
    assert status == 422 and "not UTF-8" in html

    good = (HEADER + f"{world.ada},10.00,,,,\n{world.bob},120.00,,,month,12\n").encode()
    status, html = _upload(client, good)
    assert status == 302
    assert "Imported 2 grant(s) totalling 130.00 USD from grants.csv." in html
    status, html = _upload(client, good)
    assert status == 302 and "grants.csv was already imported; nothing changed." in html
    assert count(app, Grant.__table__) == 2
    assert wallet_of(app, world.ada) == 10 * UNIT and unvested_of(app, world.bob) == 120 * UNIT


def test_prices_page_lists_defaults_and_saves_a_price(app: Flask, client: FlaskClient,
                                                      world: World) -> None:
    support.login(client, world.acme_admin)
    page = client.get("/orgs/acme/admin/prices")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "gpt-4o" in html and "OpenAI API pricing" in html
    _no_inline_style(html)
    r = support.post_form(client, "/orgs/acme/admin/prices", {
        "model": "gpt-4o", "input_price": "2.00", "output_price": "8.00", "source": "contract"})
    assert r.status_code == 302
    html = client.get("/orgs/acme/admin/prices").get_data(as_text=True)
    assert "gpt-4o: 2.00 USD input, 8.00 USD output per million tokens." in html
    r = support.post_form(client, "/orgs/acme/admin/prices", {
        "model": "x", "input_price": "-1", "output_price": "8.00"})
    assert r.status_code == 422 and 'id="input_price-error"' in r.get_data(as_text=True)
    with app.app_context():
        from wallet.store import people

        org = people.org_by_slug(db.session(), slug="acme")
        assert org is not None
        assert usage_actions.price_of(db.session(), org=org, model="gpt-4o").input_per_mtok == (
            2 * UNIT)


def test_overview_shows_the_liability_summary(app: Flask, client: FlaskClient,
                                              world: World) -> None:
    with app.app_context():
        s = db.session()
        grant_actions.create_grant(s, slug="acme", email=world.ada, amount="100.00", actor=CLI)
        grant_actions.create_grant(s, slug="acme", email=world.bob, amount="1200.00",
                                   every="month", months=12, actor=CLI)
        usage_actions.record_usage(s, slug="acme", email=world.ada, model="gpt-4o",
                                   input_tokens=4_000_000, output_tokens=0,
                                   idempotency_key="o", actor=CLI)  # 10.00
    support.login(client, world.acme_admin)
    html = client.get("/orgs/acme/admin/").get_data(as_text=True)
    _no_inline_style(html)
    table = html[html.index('data-testid="liabilities"'):]
    for label, amount in (("Funded", "250,000.00"), ("Granted", "1,300.00"),
                          ("Unvested", "1,200.00"), ("Vested", "100.00"),
                          ("Available in wallets", "90.00"), ("Spent", "10.00"),
                          ("Outstanding notes", "0.00")):
        assert re.search(rf'{label}</th><td class="num">{amount} USD', table), label
    assert 'data-testid="liability">90.00 USD' in html


def test_dashboard_shows_next_vest_chart_and_what_credit_buys(
        app: Flask, client: FlaskClient, world: World) -> None:
    start = add_months(date.today(), -18)
    set_clock(app, start)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.ada,
                                   amount="48000.00", start=start, every="month", months=48,
                                   cliff_months=12, actor=CLI)
    real_clock(app)
    t = Tranche.__table__
    assert count(app, t, t.c.state == "vested") == 0  # granted "back then": lazy vesting next
    support.login(client, world.ada)
    page = client.get("/orgs/acme/wallet")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    _no_inline_style(html)
    assert 'data-testid="available">18,000.00 USD' in html
    assert 'data-testid="unvested">30,000.00 USD' in html
    assert f"Next: 1,000.00 USD on {add_months(start, 19).isoformat()}" in html
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert 'role="img"' in svg and "<title" in svg and "<desc" in svg
    assert "18,000.00 USD of 48,000.00 USD vested" in svg
    assert 'class="chart-today"' in svg and 'class="chart-future"' in svg
    buys = html[html.index('data-testid="buys"'):]
    # 18,000.00 at gpt-4o's 2.50 per million input tokens = 7,200,000,000 tokens.
    assert re.search(r"<code>gpt-4o</code></td><td class=\"num\">7.2 billion</td>", buys)
    assert count(app, t, t.c.state == "vested") == 7
    assert wallet_of(app, world.ada) == 18_000 * UNIT
