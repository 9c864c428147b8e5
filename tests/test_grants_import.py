"""Bulk grants from CSV: all or nothing, line numbers in every error, 10,000 rows."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path

import pytest
from flask import Flask

from tests.grant_helpers import UNIT, add_members, balance, count, set_clock, wallet_of
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions._base import Actor
from wallet.core.errors import InsufficientFunds, RowsInvalid
from wallet.models import AuditEvent, Grant, Tranche, Transfer

CLI = Actor.cli()
HEADER = "email,amount,start,cliff_months,every,months\n"


def _import(app: Flask, text: str | bytes, **kw: object) -> grant_actions.ImportResult:
    data = text.encode() if isinstance(text, str) else text
    with app.app_context():
        return grant_actions.import_grants(db.session(), slug="acme", data=data, actor=CLI,
                                           filename="grants.csv", **kw)  # type: ignore[arg-type]


def _nothing_imported(app: Flask) -> None:
    assert count(app, Grant.__table__) == 0
    assert count(app, Tranche.__table__) == 0
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "grant") == 0
    assert balance(app, "pool") == 250_000 * UNIT


def _problems(app: Flask, text: str | bytes) -> list[tuple[int, str]]:
    with pytest.raises(RowsInvalid) as caught:
        _import(app, text)
    _nothing_imported(app)
    return caught.value.problems


def test_small_file_imports_immediate_and_vesting_rows(app: Flask, world: World) -> None:
    set_clock(app, date(2026, 1, 10))
    text = (HEADER
            + f"{world.ada},100.00,,,,\n"
            + f"{world.bob.upper()},1200.00,2025-01-10,12,month,12\n"
            + f"{world.ada},400.00,2026-01-10,,quarter,12\n")
    result = _import(app, text)
    assert (result.created, result.count, result.total) == (True, 3, 1700 * UNIT)
    assert result.vested_now == 1200 * UNIT  # bob's cliff passed on 2026-01-10
    assert wallet_of(app, world.ada) == 100 * UNIT
    assert wallet_of(app, world.bob) == 1200 * UNIT
    assert balance(app, "pool") == (250_000 - 1700) * UNIT
    assert count(app, Tranche.__table__) == 1 + 1 + 4
    a = AuditEvent.__table__
    assert count(app, a, a.c.action == "grant.import") == 1


def test_the_same_file_twice_grants_once(app: Flask, world: World) -> None:
    text = HEADER + f"{world.ada},100.00,,,,\n"
    assert _import(app, text).created
    again = _import(app, text)
    assert not again.created and again.count == 1
    assert count(app, Grant.__table__) == 1
    assert wallet_of(app, world.ada) == 100 * UNIT


def test_unknown_and_former_people_refuse_the_file_with_line_numbers(app: Flask,
                                                                     world: World) -> None:
    with app.app_context():
        grant_actions.terminate(db.session(), slug="acme", email=world.bob, on=date.today(),
                                actor=CLI)
    text = (HEADER + f"{world.ada},1.00,,,,\n" + "nobody@acme.test,1.00,,,,\n"
            + f"{world.bob},1.00,,,,\n" + f"{world.globex_admin},1.00,,,,\n")
    problems = _problems(app, text)
    assert [line for line, _ in problems] == [3, 4, 5]
    assert "nobody@acme.test is not a member of acme" in problems[0][1]
    assert "grants go to current employees" in problems[1][1]
    assert "admin@globex.test is not a member of acme" in problems[2][1]


def test_malformed_csv_wrong_header_duplicates_and_encoding(app: Flask, world: World) -> None:
    assert _problems(app, "mail,amount\nx,1\n")[0][0] == 1
    problems = _problems(app, HEADER + f'{world.ada},1.00,,,,\n"{world.bob},2.00,,,,\n')
    assert problems == [(3, "malformed CSV: a quoted field is never closed")]
    problems = _problems(app, HEADER + f"{world.ada},1.00,,,,\n{world.ada},1.00,,,,\n")
    assert problems == [(3, "duplicates line 2")]
    problems = _problems(app, HEADER + f"{world.ada},1.00,,,,\n{world.bob},2.00,,,,,\n")
    assert problems == [(3, "expected 6 fields, got 7")]
    problems = _problems(app, (HEADER + f"{world.ada},1.00,,,,\n").encode()
                         + b"bob\xe9@acme.test,1.00,,,,\n")
    assert problems[0][0] == 3 and "not UTF-8" in problems[0][1]
    problems = _problems(app, HEADER)
    assert problems == [(1, "file has no rows")]


def test_pool_must_cover_the_whole_file(app: Flask, world: World) -> None:
    text = HEADER + f"{world.ada},200000.00,,,,\n{world.bob},50000.01,,,month,12\n"
    with pytest.raises(InsufficientFunds, match="the 2 grants in this file"):
        _import(app, text)
    _nothing_imported(app)


@pytest.mark.slow
def test_ten_thousand_rows_import_in_one_transaction(app: Flask, world: World) -> None:
    emails = add_members(app, "acme", 10_000)
    rows = [f"{e},12.00,{date.today().isoformat()},3,month,12" for e in emails]
    started = time.perf_counter()
    result = _import(app, HEADER + "\n".join(rows) + "\n")
    elapsed = time.perf_counter() - started
    assert result.created and result.count == 10_000
    assert result.total == 120_000 * UNIT
    assert count(app, Grant.__table__) == 10_000
    assert count(app, Tranche.__table__) == 10_000 * 10  # the 3-month cliff merges three
    assert balance(app, "pool") == 130_000 * UNIT
    t = Transfer.__table__
    assert count(app, t, t.c.kind == "grant") == 10_000
    assert elapsed < 60, f"10,000 rows took {elapsed:.1f} s"


@pytest.mark.slow
def test_one_bad_row_among_ten_thousand_imports_nothing(app: Flask, world: World) -> None:
    emails = add_members(app, "acme", 10_000)
    rows = [f"{e},12.00,,,month,12" for e in emails]
    rows[7_776] = f"{emails[7_776]},12.00,,,yearly,12"  # file line 7,778 (header is line 1)
    problems = _problems(app, HEADER + "\n".join(rows) + "\n")
    assert problems == [(7_778, "every must be empty, \"month\" or \"quarter\" (got 'yearly')")]


# -- CLI -----------------------------------------------------------------------------------


def test_cli_import_and_its_errors(app: Flask, world: World, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    # Problems of form and of people are reported together; the pool once the rows are good.
    bad.write_text(HEADER + f"{world.ada},1.00,,,,\nnobody@acme.test,1.00,,,week,\n"
                   + f"{world.bob},-1,,,,\n")
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(bad))
    assert r.exit_code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and "line 3" in lines[0] and "line 4" in lines[0], r.err
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(bad), "--json")
    assert r.exit_code == 2 and len(r.err.strip().splitlines()) == 1
    report = json.loads(r.out)
    assert report["ok"] is False
    assert [p["line"] for p in report["problems"]] == [3, 3, 4]
    assert "nobody@acme.test is not a member of acme" in report["problems"][1]["reason"]
    assert report["total"] == 3
    _nothing_imported(app)

    good = tmp_path / "good.csv"
    good.write_text(HEADER + f"{world.ada},1.00,,,,\n{world.bob},12.00,,,month,12\n")
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(good))
    assert r.exit_code == 0 and "Imported 2 grant(s) totalling 13.00 USD" in r.out, r.err
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(good), "--json")
    assert r.exit_code == 0 and json.loads(r.out)["created"] is False


# -- one pass, bounded -----------------------------------------------------------------------


def test_row_and_membership_problems_are_reported_in_one_pass(app: Flask, world: World) -> None:
    """Regression: a non-member was reported only once every other row was fixed."""
    with app.app_context():
        grant_actions.terminate(db.session(), slug="acme", email=world.bob, on=date.today(),
                                actor=CLI)
    text = (HEADER
            + f"{world.ada},ten,,,,\n"  # 2: a member, a bad amount
            + "nobody@acme.test,1.00,,,,\n"  # 3: a good row for a stranger
            + "stranger@acme.test,0,,,week,\n"  # 4: a stranger with two bad fields
            + f"{world.bob},1.00,,,,\n"  # 5: a leaver
            + "not an address,1.00,,,,\n")  # 6
    with pytest.raises(RowsInvalid) as caught:
        _import(app, text)
    problems = caught.value.problems
    assert [line for line, _ in problems] == [2, 3, 4, 4, 4, 5, 6], problems
    reasons = dict(problems)
    assert "not a plain decimal" in reasons[2]
    assert reasons[3] == "nobody@acme.test is not a member of acme"
    assert [r for line, r in problems if line == 4] == [
        "amount must be greater than zero",
        'every must be empty, "month" or "quarter" (got \'week\')',
        "stranger@acme.test is not a member of acme"]
    assert "grants go to current employees" in reasons[5]
    assert caught.value.total == 7
    _nothing_imported(app)


def test_a_file_of_600000_problems_reports_the_first_100_and_the_count(
        app: Flask, world: World) -> None:
    # Every row names a stranger and has five more bad fields: 100,000 x 6 problems.
    rows = [f"s{i}@acme.test,x,x,x,x,x" for i in range(100_000)]
    with pytest.raises(RowsInvalid) as caught:
        _import(app, HEADER + "\n".join(rows) + "\n")
    assert caught.value.total == 600_000
    assert len(caught.value.problems) == 100
    assert [line for line, _ in caught.value.problems] == [2 + i // 6 for i in range(100)]
    assert (2, "s0@acme.test is not a member of acme") in caught.value.problems[:6]
    _nothing_imported(app)


def test_cli_prints_the_first_100_problems_and_the_count(app: Flask, world: World,
                                                          tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "x,x,x,x,x,x\n" * 100_000)
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(bad), "--json")
    assert r.exit_code == 2, r.err
    report = json.loads(r.out)
    assert report["total"] == 600_000 and len(report["problems"]) == 100
    assert len(r.out) < 30_000
    assert r.err.startswith("wallet: error: 600,000 problem(s): line 2: ")
    assert len(r.err.strip().splitlines()) == 1
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(bad))
    assert r.exit_code == 2
    shown = r.out.strip().splitlines()
    assert len(shown) == 101 and shown[0].startswith("line 2: ")
    assert shown[-1] == "(the first 100 of 600,000 problems; nothing was imported)"
    _nothing_imported(app)


@pytest.mark.parametrize("what", ["missing", "directory", "unreadable", "empty", "latin-1",
                                  "blank"])
def test_cli_import_of_a_file_it_cannot_use_is_one_line(
        app: Flask, world: World, tmp_path: Path, what: str,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import errno
    import os
    from typing import Any

    path = tmp_path / "grants.csv"
    if what == "directory":
        path.mkdir()
    elif what == "unreadable":  # chmod 0 means nothing to root: refuse the open instead
        path.write_text(HEADER + f"{world.ada},1.00,,,,\n")
        real_open = Path.open

        def refused(self: Path, *args: Any, **kwargs: Any) -> Any:
            if self == path:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_open(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refused)
    elif what == "empty":
        path.write_bytes(b"")
    elif what == "latin-1":
        path.write_bytes((HEADER + "ren\u00e9@acme.test,1.00,,,,\n").encode("latin-1"))
    elif what == "blank":
        path.write_text(HEADER + "\n ,,,,,\n\n")
    r = run_cli(app, capsys, "grant", "import", "--org", "acme", str(path))
    assert r.exit_code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), r.err
    assert "Traceback" not in r.out + r.err and "internal error" not in r.err
    _nothing_imported(app)
