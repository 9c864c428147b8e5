"""Single grants on a real database: immediate, vesting, past starts, refusals, replays."""

from __future__ import annotations

import json
from datetime import date

import pytest
import sqlalchemy as sa
from flask import Flask

from tests.grant_helpers import (
    UNIT,
    balance,
    count,
    set_clock,
    unvested_of,
    wallet_of,
)
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions._base import Actor
from wallet.core.errors import (
    AmountInvalid,
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    Malformed,
    NotFound,
)
from wallet.models import AuditEvent, Grant, Tranche, Transfer
from wallet.store import people

CLI = Actor.cli()
POOL = 250_000 * UNIT


def _grant(app: Flask, email: str, amount: str, **schedule: object) -> grant_actions.GrantResult:
    with app.app_context():
        return grant_actions.create_grant(db.session(), slug="acme", email=email, amount=amount,
                                          actor=CLI, **schedule)  # type: ignore[arg-type]


def _tranches(app: Flask) -> list[tuple[int, date, int, str]]:
    with app.app_context():
        rows = db.session().execute(sa.select(Tranche).order_by(Tranche.seq)).scalars()
        return [(t.seq, t.due_on, t.amount, t.state) for t in rows]


def test_immediate_grant_moves_pool_to_wallet(app: Flask, world: World) -> None:
    result = _grant(app, world.ada, "12500.00")
    assert result.created and result.vested_now == 12_500 * UNIT
    assert wallet_of(app, world.ada) == 12_500 * UNIT
    assert unvested_of(app, world.ada) == 0
    assert balance(app, "pool") == POOL - 12_500 * UNIT
    assert [(seq, amount, state) for seq, _d, amount, state in _tranches(app)] == [
        (1, 12_500 * UNIT, "vested")]
    t = Transfer.__table__
    key = f"grant:{result.grant.id}"
    assert count(app, t, t.c.kind == "grant", t.c.idempotency_key == key) == 1
    a = AuditEvent.__table__
    assert count(app, a, a.c.action == "grant.create") == 1


def test_vesting_grant_reserves_the_whole_amount_and_stores_a_hand_computed_table(
        app: Flask, world: World) -> None:
    set_clock(app, date(2025, 1, 31))
    result = _grant(app, world.ada, "1200.00", start=date(2025, 1, 31), every="quarter",
                    months=12)
    assert result.vested_now == 0
    assert balance(app, "pool") == POOL - 1200 * UNIT
    assert unvested_of(app, world.ada) == 1200 * UNIT
    assert wallet_of(app, world.ada) == 0
    # Quarterly from Jan 31: each date counted from the start, clamped to the month's end.
    assert _tranches(app) == [
        (1, date(2025, 4, 30), 300 * UNIT, "pending"),
        (2, date(2025, 7, 31), 300 * UNIT, "pending"),
        (3, date(2025, 10, 31), 300 * UNIT, "pending"),
        (4, date(2026, 1, 31), 300 * UNIT, "pending"),
    ]


def test_month_ends_leap_year_and_remainder_in_the_last_tranche(
        app: Flask, world: World) -> None:
    set_clock(app, date(2024, 1, 31))
    _grant(app, world.ada, "100.000001", start=date(2024, 1, 31), every="month", months=3)
    assert _tranches(app) == [
        (1, date(2024, 2, 29), 33_333_333, "pending"),  # 2024 is a leap year
        (2, date(2024, 3, 31), 33_333_333, "pending"),
        (3, date(2024, 4, 30), 33_333_335, "pending"),  # 100.000001 - 2 x 33.333333
    ]
    assert sum(amount for _s, _d, amount, _st in _tranches(app)) == 100_000_001


def test_cliff_holds_everything_then_catches_up(app: Flask, world: World) -> None:
    set_clock(app, date(2025, 1, 15))
    _grant(app, world.ada, "4800.00", start=date(2025, 1, 15), every="month", months=48,
           cliff_months=12)
    table = _tranches(app)
    assert len(table) == 37  # the cliff tranche (12 months) and 36 monthly ones
    assert table[0] == (1, date(2026, 1, 15), 1200 * UNIT, "pending")
    assert table[1] == (2, date(2026, 2, 15), 100 * UNIT, "pending")
    assert table[-1] == (37, date(2029, 1, 15), 100 * UNIT, "pending")
    for day, vested in ((date(2026, 1, 14), 0), (date(2026, 1, 15), 1200),
                        (date(2026, 2, 14), 1200), (date(2026, 2, 15), 1300)):
        set_clock(app, day)
        with app.app_context():
            grant_actions.vest(db.session(), slug="acme", actor=CLI)
        assert wallet_of(app, world.ada) == vested * UNIT, day
        assert unvested_of(app, world.ada) == (4800 - vested) * UNIT


def test_grant_starting_in_the_past_vests_what_is_due_at_once(
        app: Flask, world: World) -> None:
    set_clock(app, date(2026, 11, 27))
    result = _grant(app, world.ada, "48000.00", start=date(2025, 5, 27), every="month",
                    months=48, cliff_months=12)
    # 18 months have passed: the cliff tranche (12 x 1,000.00) and six monthly ones.
    assert result.vested_now == 18_000 * UNIT
    assert wallet_of(app, world.ada) == 18_000 * UNIT
    assert unvested_of(app, world.ada) == 30_000 * UNIT
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "vest") == 7
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None
        again = grant_actions.vest(s, slug="acme", actor=CLI)
    assert again.count == 0


def test_future_immediate_grant_waits_for_its_date(app: Flask, world: World) -> None:
    set_clock(app, date(2026, 1, 1))
    _grant(app, world.ada, "10.00", start=date(2026, 2, 1))
    assert (wallet_of(app, world.ada), unvested_of(app, world.ada)) == (0, 10 * UNIT)
    set_clock(app, date(2026, 2, 1))
    with app.app_context():
        assert grant_actions.vest(db.session(), slug="acme", actor=CLI).count == 1
    assert (wallet_of(app, world.ada), unvested_of(app, world.ada)) == (10 * UNIT, 0)


def test_grant_to_someone_who_is_not_a_member_is_refused(app: Flask, world: World) -> None:
    with pytest.raises(NotFound, match="not a member of acme"):
        _grant(app, "stranger@example.test", "10.00")
    with pytest.raises(NotFound):
        _grant(app, world.globex_admin, "10.00")  # a member of globex only
    assert count(app, Grant.__table__) == 0


def test_grant_to_someone_whose_employment_ended_is_refused(app: Flask, world: World) -> None:
    with app.app_context():
        grant_actions.terminate(db.session(), slug="acme", email=world.bob,
                                on=date.today(), actor=CLI)
    with pytest.raises(Conflict, match="grants go to current employees"):
        _grant(app, world.bob, "10.00")
    assert count(app, Grant.__table__) == 0


def test_grant_larger_than_the_pool_stores_nothing(app: Flask, world: World) -> None:
    with pytest.raises(InsufficientFunds, match=r"the pool holds 250,000\.00 USD"):
        _grant(app, world.ada, "250000.01", every="month", months=12)
    assert count(app, Grant.__table__) == 0
    assert count(app, Tranche.__table__) == 0
    assert balance(app, "pool") == POOL
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "grant") == 0


@pytest.mark.parametrize(("amount", "schedule", "error"), [
    ("0", {}, AmountInvalid),
    ("-5", {}, AmountInvalid),
    ("1e3", {}, AmountInvalid),
    ("10.00", {"every": "week", "months": 12}, Malformed),
    ("10.00", {"every": "month"}, Malformed),
    ("10.00", {"months": 12}, Malformed),
    ("10.00", {"every": "quarter", "months": 10}, Malformed),
    ("10.00", {"every": "month", "months": 12, "cliff_months": 13}, Malformed),
])
def test_bad_grants_are_refused(app: Flask, world: World, amount: str,
                                schedule: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        _grant(app, world.ada, amount, **schedule)
    assert count(app, Grant.__table__) == 0


def test_request_key_makes_a_double_submit_one_grant(app: Flask, world: World) -> None:
    first = _grant(app, world.ada, "100.00", every="month", months=12, request_key="form-1")
    again = _grant(app, world.ada, "100.00", every="month", months=12, request_key="form-1")
    assert first.created and not again.created
    assert again.grant.id == first.grant.id
    assert count(app, Grant.__table__) == 1
    assert unvested_of(app, world.ada) == 100 * UNIT
    with pytest.raises(IdempotencyConflict):
        _grant(app, world.ada, "200.00", every="month", months=12, request_key="form-1")
    assert count(app, Grant.__table__) == 1


def test_only_administrators_grant(app: Flask, world: World) -> None:
    with app.app_context():
        s = db.session()
        bob = people.person_by_email(s, email=world.bob)
        assert bob is not None
        with pytest.raises(Forbidden):
            grant_actions.create_grant(s, slug="acme", email=world.ada, amount="1.00",
                                       actor=Actor.of(bob))
    assert count(app, Grant.__table__) == 0


# -- CLI -----------------------------------------------------------------------------------


def test_cli_grant_create(app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(app, capsys, "grant", "create", "--org", "acme", "--email", world.ada,
                "--amount", "1200.00", "--start", "2020-01-15", "--every", "quarter",
                "--months", "12", "--json")
    assert r.exit_code == 0, r.err
    out = json.loads(r.out)
    assert out["amount"] == "1200.00" and out["vested_now"] == "1200.00"
    assert [t["due_on"] for t in out["tranches"]] == [
        "2020-04-15", "2020-07-15", "2020-10-15", "2021-01-15"]
    r = run_cli(app, capsys, "grant", "create", "--org", "acme", "--email", world.bob,
                "--amount", "50.00")
    assert r.exit_code == 0 and "immediately" in r.out
    r = run_cli(app, capsys, "balance", "--org", "acme", "--email", world.ada, "--json")
    assert json.loads(r.out)["available"] == "1200.00"


@pytest.mark.parametrize("args", [
    ("--email", "nobody@acme.test", "--amount", "1.00"),
    ("--email", "ada@example.test", "--amount", "1,00"),
    ("--email", "ada@example.test", "--amount", "999999.00"),
    ("--email", "ada@example.test", "--amount", "1.00", "--every", "month"),
    ("--email", "ada@example.test", "--amount", "1.00", "--start", "2025-02-30"),
    ("--email", "ada@example.test", "--amount", "1.00", "--every", "year", "--months", "12"),
])
def test_cli_grant_errors_are_one_line_exit_2(app: Flask, world: World,
                                              capsys: pytest.CaptureFixture[str],
                                              args: tuple[str, ...]) -> None:
    r = run_cli(app, capsys, "grant", "create", "--org", "acme", *args)
    assert r.exit_code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), r.err
    assert count(app, Grant.__table__) == 0
