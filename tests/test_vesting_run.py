"""Vesting runs: idempotent, never ahead of time, lazy on reads, once under concurrency."""

from __future__ import annotations

import json
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.grant_helpers import (
    UNIT,
    add_members,
    count,
    person_id,
    real_clock,
    set_clock,
    tranche_states,
    unvested_of,
    wallet_of,
)
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions import wallets
from wallet.actions._base import Actor, today
from wallet.core.errors import Forbidden, Malformed
from wallet.core.vesting import add_months
from wallet.models import AuditEvent, Transfer
from wallet.store import people

CLI = Actor.cli()
HEADER = "email,amount,start,cliff_months,every,months\n"


def _vest(app: Flask, as_of: date | None = None) -> grant_actions.VestRun:
    with app.app_context():
        return grant_actions.vest(db.session(), slug="acme", as_of=as_of, actor=CLI)


def _grant_back_then(app: Flask, email: str, amount: str, start: date, **schedule: Any) -> None:
    """Make a grant as if on `start`, so its tranches are pending when the clock returns."""
    set_clock(app, start)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=email, amount=amount,
                                   start=start, actor=CLI, **schedule)
    real_clock(app)


def test_vest_posts_each_due_tranche_once(app: Flask, world: World) -> None:
    start = add_months(today(), -6)
    _grant_back_then(app, world.ada, "1200.00", start, every="month", months=12)
    _grant_back_then(app, world.bob, "300.00", start, every="quarter", months=12)
    first = _vest(app)
    assert (first.count, first.amount) == (6 + 2, 600 * UNIT + 150 * UNIT)
    assert wallet_of(app, world.ada) == 600 * UNIT
    assert unvested_of(app, world.ada) == 600 * UNIT
    assert wallet_of(app, world.bob) == 150 * UNIT
    again = _vest(app)
    assert (again.count, again.amount) == (0, 0)
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "vest") == 8
    a = AuditEvent.__table__
    assert count(app, a, a.c.action == "grant.vest") == 1  # the empty run is not audited


def test_vest_as_of_a_past_date_and_never_ahead(app: Flask, world: World) -> None:
    start = add_months(today(), -6)
    _grant_back_then(app, world.ada, "1200.00", start, every="month", months=12)
    assert _vest(app, as_of=add_months(start, 2)).count == 2
    with pytest.raises(Malformed, match="in the future"):
        _vest(app, as_of=date.fromordinal(today().toordinal() + 1))
    assert _vest(app).count == 4
    assert wallet_of(app, world.ada) == 600 * UNIT


def test_engineers_cannot_run_vesting(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        bob = people.person_by_email(s, email=world.bob)
        assert bob is not None
        with pytest.raises(Forbidden):
            grant_actions.vest(s, slug="acme", actor=Actor.of(bob))


def test_reading_balances_vests_lazily_once(app: Flask, world: World) -> None:
    start = add_months(today(), -3)
    _grant_back_then(app, world.ada, "1200.00", start, every="month", months=12)
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        ada = people.person_by_email(s, email=world.ada)
        assert org is not None and ada is not None
        first = wallets.summary(s, org=org, person=ada)
        assert (first.available, first.unvested) == (300 * UNIT, 900 * UNIT)
        assert first.next_vest == wallets.NextVest(add_months(start, 4), 100 * UNIT)
        assert wallets.next_vesting(s, org=org, person=ada) == (add_months(start, 4),
                                                                100 * UNIT)
        chart = first.chart
        assert chart is not None
        assert (chart.total, chart.vested, chart.start, chart.end) == (
            1200 * UNIT, 300 * UNIT, start, add_months(start, 12))
        assert [r[3] for r in chart.rows].count("vested") == 3
        assert chart.today_x is not None and chart.future_path.startswith(f"M{chart.today_x} ")
        again = wallets.summary(s, org=org, person=ada)
        assert again.available == 300 * UNIT
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "vest") == 3
    assert _vest(app).count == 0


def test_vest_all_runs_every_organisation(app: Flask, world: World,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _grant_back_then(app, world.ada, "100.00", add_months(today(), -1),
                     every="month", months=2)
    r = run_cli(app, capsys, "vest", "--all-orgs", "--json")
    assert r.exit_code == 0, r.err
    runs = {run["org"]: run for run in json.loads(r.out)}
    assert runs["acme"]["tranches"] == 1 and runs["acme"]["amount"] == "50.00"
    assert runs["globex"]["tranches"] == 0
    r = run_cli(app, capsys, "vest", "--org", "acme")
    assert r.exit_code == 0 and "acme: vested 0 tranche(s)" in r.out
    for args in (("vest",), ("vest", "--org", "acme", "--all-orgs"),
                 ("vest", "--org", "acme", "--as-of", "2999-01-01"),
                 ("vest", "--org", "acme", "--as-of", "yesterday")):
        r = run_cli(app, capsys, *args)
        assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.err)


# -- concurrency ---------------------------------------------------------------------------


def _vest_many(args: tuple[dict[str, Any], int]) -> list[str]:
    from wallet import create_app

    config, threads = args
    app = create_app(config)

    def one(_: int) -> str:
        with app.app_context():
            try:
                run = grant_actions.vest(db.session(), slug="acme", actor=CLI)
            except Exception as err:
                return f"error:{type(err).__name__}:{err}"
            return f"ok:{run.count}:{run.amount}"

    try:
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, range(threads * 2)))
    finally:
        app.extensions["wallet.engine"].dispose()


@pytest.mark.slow
def test_concurrent_vest_runs_in_two_processes_post_each_tranche_once(
        app: Flask, app_config: dict[str, Any], world: World) -> None:
    emails = add_members(app, "acme", 300)
    start = add_months(today(), -12)
    set_clock(app, start)
    with app.app_context():
        grant_actions.import_grants(db.session(), slug="acme", actor=CLI, data=(
            HEADER + "".join(f"{e},120.00,{start.isoformat()},,month,24\n" for e in emails)
        ).encode())
    real_clock(app)
    assert tranche_states(app) == {"pending": 300 * 24}

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_vest_many, [(app_config, 3), (app_config, 3)])
    outcomes = [o for batch in results for o in batch]
    assert not [o for o in outcomes if o.startswith("error")], outcomes
    counts = [int(o.split(":")[1]) for o in outcomes]
    amounts = [int(o.split(":")[2]) for o in outcomes]
    assert sum(counts) == 300 * 12, outcomes  # each due tranche claimed by exactly one run
    assert sum(amounts) == 300 * 60 * UNIT
    assert tranche_states(app) == {"vested": 300 * 12, "pending": 300 * 12}
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "vest") == 300 * 12
    with app.app_context():
        keys = db.session().execute(
            sa.select(sa.func.count(sa.distinct(t.c.idempotency_key))).where(t.c.kind == "vest")
        ).scalar_one()
    assert keys == 300 * 12
    assert wallet_of(app, emails[0]) == 60 * UNIT
    assert person_id(app, emails[-1]) > 0
