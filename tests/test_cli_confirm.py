"""Destructive CLI commands ask first; without a terminal they need --yes (both databases).

Key rotation and revocation are tested in tests/test_keys.py; trust removal with the
federation commands.
"""

from __future__ import annotations

import sys
from datetime import date

import click.termui
import pytest
from flask import Flask

from tests import notes_support as ns
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions._base import Actor
from wallet.store import people


class _Terminal:
    def isatty(self) -> bool:
        return True


def _at_a_terminal(monkeypatch: pytest.MonkeyPatch, answer: str) -> list[str]:
    asked: list[str] = []
    monkeypatch.setattr(sys, "stdin", _Terminal())
    monkeypatch.setattr(click.termui, "visible_prompt_func",
                        lambda prompt: asked.append(prompt) or answer)
    return asked


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wallet: error: "), err
    return lines[0]


def test_note_revoke_asks_first(app: Flask, world: World, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    ns.generate_key(app)
    ns.give(app, "100.00")
    note = ns.export(app, "40.00")
    revoke = ("note", "revoke", "--org", "acme", "--jti", note.jti, "--reason", "wrong key")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 2 and "pass --yes" in _one_line(r.err)
    asked = _at_a_terminal(monkeypatch, "n")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 2 and "nothing changed" in _one_line(r.err)
    assert note.jti in asked[0]
    assert ns.note_row(app, note.jti).state == "active"
    assert ns.balance(app, "wallet") == 60 * ns.UNIT
    _at_a_terminal(monkeypatch, "yes")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 0, r.err
    assert ns.note_row(app, note.jti).state == "revoked"
    assert ns.balance(app, "wallet") == 100 * ns.UNIT
    # What cannot be revoked is refused before anything is asked.
    asked = _at_a_terminal(monkeypatch, "y")
    r = run_cli(app, capsys, *revoke)
    assert r.exit_code == 2 and "[conflict]" in _one_line(r.err) and asked == []
    r = run_cli(app, capsys, "note", "revoke", "--org", "acme", "--jti", "urn:uuid:nope",
                "--reason", "x")
    assert r.exit_code == 2 and "[not_found]" in _one_line(r.err) and asked == []


def test_person_terminate_asks_first(app: Flask, world: World,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob,
                                   amount="1200.00", every="month", months=12,
                                   actor=Actor.cli())
    today = date.today().isoformat()
    terminate = ("person", "terminate", "--org", "acme", "--email", world.bob, "--on", today)

    def ended() -> date | None:
        with app.app_context():
            s = db.session()
            org, bob = people.org_by_slug(s, slug="acme"), people.person_by_email(
                s, email=world.bob)
            assert org and org.id and bob and bob.id
            membership = people.membership(s, org_id=org.id, person_id=bob.id)
            assert membership is not None
            return membership.ended_on

    r = run_cli(app, capsys, *terminate)
    assert r.exit_code == 2 and "pass --yes" in _one_line(r.err)
    asked = _at_a_terminal(monkeypatch, "n")
    r = run_cli(app, capsys, *terminate)
    assert r.exit_code == 2 and ended() is None
    assert world.bob in asked[0] and today in asked[0]
    # Someone who is not a member is refused before anything is asked.
    asked.clear()
    r = run_cli(app, capsys, "person", "terminate", "--org", "acme", "--email",
                "nobody@acme.test", "--on", today)
    assert r.exit_code == 2 and "[not_found]" in _one_line(r.err) and asked == []
    _at_a_terminal(monkeypatch, "y")
    r = run_cli(app, capsys, *terminate)
    assert r.exit_code == 0, r.err
    assert ended() == date.today()
