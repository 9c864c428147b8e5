"""The CLI contract (docs/protocol.md §8 "Error codes"): one line on stderr, exit 0 / 1 / 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import support
from tests.support import World, run_cli


def test_org_person_fund_balance_token(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(app, capsys, "org", "create", "initech", "--name", "Initech",
                "--admin-email", "boss@initech.test")
    assert r.exit_code == 0, r.err
    assert "Invitation link" in r.out and "/invite/" in r.out
    r = run_cli(app, capsys, "person", "add", "--org", "initech", "--email", "Peter@Initech.test",
                "--start", "2026-01-05")
    assert r.exit_code == 0, r.err
    assert "peter@initech.test" in r.out and "2026-01-05" in r.out
    r = run_cli(app, capsys, "fund", "--org", "initech", "--amount", "250000.00",
                "--idempotency-key", "q1")
    assert r.exit_code == 0 and "250,000.00 USD" in r.out
    r = run_cli(app, capsys, "fund", "--org", "initech", "--amount", "250000.00",
                "--idempotency-key", "q1", "--json")
    assert r.exit_code == 0 and json.loads(r.out)["created"] is False
    r = run_cli(app, capsys, "balance", "--org", "initech", "--email", "peter@initech.test",
                "--json")
    assert r.exit_code == 0
    assert json.loads(r.out)["available"] == "0.00"
    r = run_cli(app, capsys, "token", "create", "--org", "initech", "--email",
                "peter@initech.test")
    assert r.exit_code == 0 and r.out.startswith("ccw_")
    r = run_cli(app, capsys, "ledger", "check", "--org", "initech")
    assert r.exit_code == 0 and "initech: ok" in r.out


@pytest.mark.parametrize("args", [
    ("fund", "--org", "acme", "--amount", "-5", "--idempotency-key", "k"),
    ("fund", "--org", "acme", "--amount", "0", "--idempotency-key", "k"),
    ("fund", "--org", "acme", "--amount", "1.5", "--idempotency-key", "k", "--currency", "usd"),
    ("fund", "--org", "acme", "--amount", "2.5e3", "--idempotency-key", "k"),
    ("fund", "--org", "acme", "--amount", "1.0000001", "--idempotency-key", "k"),
    ("fund", "--org", "acme", "--amount", "99999999999999", "--idempotency-key", "k"),
    ("fund", "--org", "acme", "--amount", "3.14"),
    ("fund", "--org", "nope", "--amount", "1.00", "--idempotency-key", "k"),
    ("person", "add", "--org", "acme", "--email", "not-an-email"),
    ("person", "add", "--org", "acme", "--email", "x@y.test", "--start", "2026-13-01"),
    ("org", "create", "Bad_Slug", "--name", "x", "--admin-email", "a@b.test"),
    ("org", "create", "acme", "--name", "Again", "--admin-email", "a@b.test"),
    ("no-such-command",),
    ("token", "create", "--org", "acme"),
])
def test_bad_input_is_one_line_and_exit_2(app: Flask, world: World,
                                          capsys: pytest.CaptureFixture[str],
                                          args: tuple[str, ...]) -> None:
    r = run_cli(app, capsys, *args)
    assert r.exit_code == 2, (r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), r.err
    assert "Traceback" not in r.err + r.out


def test_conflicting_replay_is_refused(app: Flask, world: World,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    r = run_cli(app, capsys, "fund", "--org", "acme", "--amount", "9.00",
                "--idempotency-key", "world")
    assert r.exit_code == 2 and "[idempotency_conflict]" in r.err


def test_ledger_check_lists_broken_invariants_and_exits_1(
        app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    from wallet import db

    with app.app_context():
        s = db.session()
        s.execute(sa.text("UPDATE account SET balance = balance + 5 WHERE name = 'pool'"))
        s.commit()
    r = run_cli(app, capsys, "ledger", "check")
    assert r.exit_code == 1
    assert "acme: pool (USD): cached balance" in r.err
    assert "balances in USD sum to 5, not zero" in r.err
    assert "globex: ok" in r.out
    with app.app_context():  # repair, so the fixture's own check passes
        s = db.session()
        s.execute(sa.text("UPDATE account SET balance = balance - 5 WHERE name = 'pool'"))
        s.commit()


def test_demo_twice_changes_nothing_the_second_time(app: Flask,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    first = run_cli(app, capsys, "demo", "--password", "demo-password-x")
    assert first.exit_code == 0, first.err
    assert "Created Acme AI (acme)" in first.out
    second = run_cli(app, capsys, "demo", "--password", "demo-password-x")
    assert second.exit_code == 0
    assert "nothing changed" in second.out
    # 18,000.00 vested - 5,500.00 spent - 1,750.00 exported as two notes, and the gateway's
    # calls (wallet.actions.demo.ADA_CALLS): 0.08895 + 0.03654 + 0.1338 captured, 2.7288 held.
    r = run_cli(app, capsys, "balance", "--org", "acme", "--email", "ada@example.test", "--json")
    acme = json.loads(r.out)
    assert (acme["available"], acme["unvested"], acme["spent"], acme["outstanding_notes"],
            acme["held"], acme["holds_open"]) == (
        "10747.01191", "30000.00", "5500.25929", "500.00", "2.7288", 1)
    assert acme["next_vesting"]["amount"] == "1000.00"
    r = run_cli(app, capsys, "balance", "--org", "globex", "--email", "ada@example.test", "--json")
    assert json.loads(r.out)["available"] == "1250.00"  # the note honoured at globex
    # Acme paid 1,000.00 of the 1,250.00 it owes by a settlement statement globex
    # acknowledged: both sides show the same figures.
    settled = json.loads(run_cli(app, capsys, "settlement", "list", "--org", "acme", "--json").out)
    assert [(s["we_owe"], s["redeemed_count"]) for s in settled] == [("250.00", 1)]
    owed = json.loads(run_cli(app, capsys, "settlement", "list", "--org", "globex",
                              "--json").out)
    assert [(s["they_owe"], s["honoured_count"]) for s in owed] == [("250.00", 1)]
    assert run_cli(app, capsys, "ledger", "check").exit_code == 0
    client = app.test_client()
    support.login(client, "ada@example.test", "demo-password-x")
    assert client.get("/orgs/globex/wallet").status_code == 200
    # The wallet file left for the walkthrough holds the 500.00 note, under the password.
    from wallet.core import walletfile

    path = Path(app.instance_path) / "demo" / "ada.ccwallet"
    wallet = walletfile.parse(path.read_text())
    wallet.unlock("demo-password-x")
    assert len(wallet.notes) == 1 and oct(path.stat().st_mode & 0o777) == "0o600"


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (("--help",), ("fund", "--help"), ("ledger", "check", "--help"),
                 ("org", "create", "--help")):
        r = run_cli(None, capsys, *args)
        assert r.exit_code == 0 and "Usage:" in r.out


class _Terminal:
    """A stdin that says it is a terminal and answers one line."""

    def __init__(self, answer: str) -> None:
        self._answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self._answer


def test_confirm_refuses_without_a_terminal_and_asks_on_one(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    import click

    from wallet.cli.base import confirm

    confirm("Revoke it?", yes=True)  # --yes: no question asked, nothing read
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # a pipe, not a terminal
    with pytest.raises(click.UsageError, match="pass --yes"):
        confirm("Revoke it?", yes=False)
    for answer, accepted in (("y\n", True), ("n\n", False), ("\n", False)):
        monkeypatch.setattr(sys, "stdin", _Terminal(answer))
        monkeypatch.setattr(click.termui, "visible_prompt_func", lambda _p, a=answer: a.strip())
        if accepted:
            confirm("Revoke it?", yes=False)
        else:
            with pytest.raises(click.ClickException, match="nothing changed"):
                confirm("Revoke it?", yes=False)
