"""Termination: unvested credit after the end date returns to the pool, exactly once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.grant_helpers import (
    UNIT,
    backdate_start,
    balance,
    count,
    person_id,
    set_clock,
    tranche_states,
    transfers_of_kind,
    unvested_of,
    wallet_of,
)
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions._base import Actor
from wallet.core.errors import Conflict, Forbidden, Malformed
from wallet.models import AuditEvent, Membership
from wallet.store import people

CLI = Actor.cli()
POOL = 250_000 * UNIT
START = date(2025, 1, 15)  # a 4,800.00 grant, monthly over 48 months, 12-month cliff


def _setup(app: Flask, email: str) -> None:
    backdate_start(app, email)
    set_clock(app, START)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=email, amount="4800.00",
                                   start=START, every="month", months=48, cliff_months=12,
                                   actor=CLI)


def _terminate(app: Flask, email: str, on: date) -> grant_actions.Termination:
    with app.app_context():
        return grant_actions.terminate(db.session(), slug="acme", email=email, on=on,
                                       actor=CLI)


def test_termination_before_the_cliff_forfeits_everything(
        app: Flask, world: World) -> None:
    _setup(app, world.ada)
    set_clock(app, date(2025, 7, 15))
    done = _terminate(app, world.ada, date(2025, 7, 15))
    assert (done.created, done.forfeited_count, done.forfeited) == (True, 37, 4800 * UNIT)
    assert (wallet_of(app, world.ada), unvested_of(app, world.ada)) == (0, 0)
    assert balance(app, "pool") == POOL
    assert tranche_states(app) == {"forfeited": 37}
    set_clock(app, date(2026, 6, 1))  # long after the cliff: nothing vests any more
    with app.app_context():
        assert grant_actions.vest(db.session(), slug="acme", actor=CLI).count == 0
    assert wallet_of(app, world.ada) == 0


def test_termination_after_the_cliff_keeps_what_vested(
        app: Flask, world: World) -> None:
    _setup(app, world.ada)
    set_clock(app, date(2026, 7, 20))
    with app.app_context():
        grant_actions.vest(db.session(), slug="acme", actor=CLI)
    assert wallet_of(app, world.ada) == 1800 * UNIT  # cliff 1,200.00 + six months of 100.00
    done = _terminate(app, world.ada, date(2026, 7, 20))
    assert (done.forfeited_count, done.forfeited) == (30, 3000 * UNIT)
    assert wallet_of(app, world.ada) == 1800 * UNIT  # vested credit stays
    assert unvested_of(app, world.ada) == 0
    assert balance(app, "pool") == POOL - 1800 * UNIT
    assert tranche_states(app) == {"vested": 7, "forfeited": 30}
    assert transfers_of_kind(app, "forfeit") == 30
    a = AuditEvent.__table__
    assert count(app, a, a.c.action == "person.terminate") == 1


def test_tranches_due_by_a_future_end_date_still_vest(
        app: Flask, world: World) -> None:
    _setup(app, world.ada)
    set_clock(app, date(2026, 2, 1))
    done = _terminate(app, world.ada, date(2026, 3, 15))  # notice period: ends in six weeks
    assert done.vested_now == 1200 * UNIT  # the cliff tranche was due on 2026-01-15
    assert (done.forfeited_count, done.forfeited) == (34, 3400 * UNIT)
    assert unvested_of(app, world.ada) == 200 * UNIT  # Feb 15 and Mar 15 wait for their dates
    set_clock(app, date(2026, 3, 15))
    with app.app_context():
        assert grant_actions.vest(db.session(), slug="acme", actor=CLI).count == 2
    assert (wallet_of(app, world.ada), unvested_of(app, world.ada)) == (1400 * UNIT, 0)


def test_termination_happens_once(app: Flask, world: World) -> None:
    _setup(app, world.ada)
    set_clock(app, date(2026, 7, 20))
    assert _terminate(app, world.ada, date(2026, 7, 20)).created
    again = _terminate(app, world.ada, date(2026, 7, 20))
    assert (again.created, again.forfeited_count) == (False, 0)
    with pytest.raises(Conflict, match="already ends on 2026-07-20"):
        _terminate(app, world.ada, date(2026, 8, 1))
    assert transfers_of_kind(app, "forfeit") == 30
    assert balance(app, "pool") == POOL - 1800 * UNIT


def test_concurrent_terminations_forfeit_once(app: Flask, world: World) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.ada,
                                   amount="4800.00", every="month", months=48, actor=CLI)

    def one(_: int) -> str:
        with app.app_context():
            try:
                done = grant_actions.terminate(db.session(), slug="acme", email=world.ada,
                                               on=date.today(), actor=CLI)
            except Exception as err:
                return f"error:{type(err).__name__}"
            return "created" if done.created else "replayed"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(one, range(8)))
    assert outcomes.count("created") == 1 and outcomes.count("replayed") == 7, outcomes
    assert transfers_of_kind(app, "forfeit") == 48
    assert balance(app, "pool") == POOL


def test_refusals(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        admin = people.person_by_email(s, email=world.acme_admin)
        bob = people.person_by_email(s, email=world.bob)
        assert admin is not None and bob is not None
        with pytest.raises(Forbidden, match="your own employment"):
            grant_actions.terminate(s, slug="acme", email=world.acme_admin, on=date.today(),
                                    actor=Actor.of(admin))
        with pytest.raises(Forbidden):
            grant_actions.terminate(s, slug="acme", email=world.ada, on=date.today(),
                                    actor=Actor.of(bob))
        with pytest.raises(Malformed, match="before"):
            grant_actions.terminate(s, slug="acme", email=world.ada,
                                    on=date.today() - timedelta(days=1), actor=CLI)
    m = Membership.__table__
    assert count(app, m, m.c.ended_on.is_not(None)) == 0


def test_alumni_window_read_only_then_closed(app: Flask, client: FlaskClient,
                                             world: World) -> None:
    backdate_start(app, world.bob)
    _terminate(app, world.bob, date.today() - timedelta(days=10))
    support.login(client, world.bob)
    page = client.get("/orgs/acme/wallet")
    assert page.status_code == 200 and "read-only" in page.get_data(as_text=True)
    assert client.post("/orgs/acme/tokens", data={
        "csrf_token": support.csrf_token(client, "/orgs/acme/wallet")}).status_code == 403
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None
        org.alumni_days = 5  # the window (10 days ago + 5) has closed
        s.add(org)
        s.commit()
    assert client.get("/orgs/acme/wallet").status_code == 403


def test_cli_person_terminate(app: Flask, world: World,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.ada,
                                   amount="1200.00", every="month", months=12, actor=CLI)
    today = date.today().isoformat()
    r = run_cli(app, capsys, "person", "terminate", "--yes", "--org", "acme", "--email", world.ada,
                "--on", today, "--json")
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert (out["created"], out["forfeited_tranches"], out["forfeited"]) == (True, 12, "1200.00")
    r = run_cli(app, capsys, "person", "terminate", "--yes", "--org", "acme", "--email", world.ada,
                "--on", today)
    assert r.exit_code == 0 and "nothing changed" in r.out
    for args in (("--email", "nobody@acme.test", "--on", today),
                 ("--email", world.ada, "--on", "2026-02-30"),
                 ("--email", world.ada, "--on", "2099-01-01")):
        r = run_cli(app, capsys, "person", "terminate", "--yes", "--org", "acme", *args)
        assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.err)


def test_admin_terminate_page(app: Flask, client: FlaskClient, world: World) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.ada,
                                   amount="1200.00", every="month", months=12, actor=CLI)
    ada = person_id(app, world.ada)
    path = f"/orgs/acme/admin/people/{ada}/terminate"
    support.login(client, world.acme_admin)
    page = client.get(path)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "1,200.00 USD" in html and 'name="on"' in html
    bad = support.post_form(client, path, {"on": "not-a-date"})
    assert bad.status_code == 422
    ok = support.post_form(client, path, {"on": date.today().isoformat()})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/orgs/acme/admin/people")
    flashed = client.get("/orgs/acme/admin/grants").get_data(as_text=True)
    assert "12 unvested tranche(s), 1,200.00 USD, returned to the pool" in flashed
    assert unvested_of(app, world.ada) == 0
    assert client.get("/orgs/acme/admin/people/99999/terminate").status_code == 404
    globex_admin = person_id(app, world.globex_admin)
    assert client.get(f"/orgs/acme/admin/people/{globex_admin}/terminate").status_code == 404
