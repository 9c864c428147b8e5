"""Trust changes are explicit: re-adding never replaces a policy silently (a cap of
25,000.00 became no cap), `trust update` changes policy on purpose, `trust remove` asks.

Both databases; CLI in-process and the admin page through real forms.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator

import click
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.fed_support import ACME, MICROS
from tests.support import run_cli


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _entry(app: Flask, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    (entry,) = json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex",
                                  "--json").out)
    return entry  # type: ignore[no-any-return]


def _audit(app: Flask, action: str) -> list[dict[str, object]]:
    from wallet import db
    from wallet.store import people

    with app.app_context():
        events = people.audit_events(db.session(), org_id=fs.org_id(app, "globex"))
        return [dict(e.details or {}) for e in events if e.action == action]


def _capped(app: Flask) -> None:
    fs.setup_federation(app)  # globex trusts acme, no cap
    fs.clear_caches()
    from wallet import db
    from wallet.actions import trust as trust_actions
    from wallet.actions._base import Actor

    with app.app_context():
        trust_actions.update(db.session(), slug="globex", issuer=ACME, cap="25000.00",
                         actor=Actor.cli())


def test_re_adding_a_trusted_issuer_says_what_would_change_and_changes_nothing(
        app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    _capped(app)

    again = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME)

    assert again.exit_code == 2, (again.out, again.err)
    assert "cap 25000.00 -> none" in again.err and "--replace" in again.err
    assert len(again.err.strip().splitlines()) == 1
    assert _entry(app, capsys)["cap"] == "25000.00"  # nothing was replaced
    assert _audit(app, "trust.replace") == []

    scripted = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME, "--json",
                       "--currency", "EUR")
    assert scripted.exit_code == 2
    assert json.loads(scripted.out) == {"issuer": ACME, "outcome": "refused", "would_change": [
        {"field": "cap", "before": "25000.00", "after": "none"},
        {"field": "currencies", "before": "USD", "after": "EUR"}]}

    replaced = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME, "--replace",
                       "--json")
    assert replaced.exit_code == 0, replaced.err
    data = json.loads(replaced.out)
    assert data["outcome"] == "replaced" and data["cap"] is None
    assert data["changes"] == [{"field": "cap", "before": "25000.00", "after": "none"}]
    assert _audit(app, "trust.replace") == [{"changes": data["changes"]}]


def test_re_adding_with_the_same_policy_and_keys_changes_nothing(
        app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    _capped(app)
    before = _entry(app, capsys)

    same = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME, "--cap", "25000")

    assert same.exit_code == 0, same.err
    assert "nothing changed" in same.out
    assert _entry(app, capsys) == before  # not even re-pinned


def test_re_adding_after_a_key_rotation_names_the_new_key(
        app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    from wallet import db
    from wallet.actions import keys as key_actions
    from wallet.actions._base import Actor

    fs.setup_federation(app)
    with app.app_context():
        key_actions.rotate(db.session(), slug="acme", actor=Actor.cli())

    again = run_cli(app, capsys, "trust", "add", "--org", "globex", ACME)

    assert again.exit_code == 2 and "keys " in again.err
    assert len(_entry(app, capsys)["keys"]) == 1  # type: ignore[arg-type]


def test_trust_update_changes_policy_explicitly_without_a_fetch(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    fed = fs.setup_federation(app)
    transport = fs.FaultTransport().install(app)

    capped = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME,
                     "--cap", "50.00", "--json")

    assert capped.exit_code == 0, capped.err
    assert json.loads(capped.out)["changes"] == [
        {"field": "cap", "before": "none", "after": "50.00"}]
    assert transport.calls == []  # no refetch
    assert _audit(app, "trust.update") == [{"changes": json.loads(capped.out)["changes"]}]
    # The new cap applies to the very next honour (the config version was bumped).
    refused = fs.bring(fed, client, fs.export(app, fed.holder, "60.00"))
    assert fs.code_of(refused) == "policy_rejected"

    printed = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME, "--no-cap",
                      "--currency", "usd", "--currency", "EUR")
    assert printed.exit_code == 0, printed.err
    assert "cap 50.00 -> none" in printed.out and "currencies USD -> EUR,USD" in printed.out
    entry = _entry(app, capsys)
    assert entry["cap"] is None and entry["currencies"] == ["EUR", "USD"]
    assert fs.bring(fed, client, fs.export(app, fed.holder, "60.00")).status_code == 200
    assert fs.wallet_balance(app, "globex") == 60 * MICROS

    unchanged = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME, "--no-cap")
    assert unchanged.exit_code == 0 and "nothing changed" in unchanged.out
    for args, words in ((("--cap", "1", "--no-cap"), "not both"), ((), "nothing to change"),
                        (("--cap", "lots"), "amount")):
        bad = run_cli(app, capsys, "trust", "update", "--org", "globex", ACME, *args)
        assert bad.exit_code == 2 and words in bad.err, bad.err
    unknown = run_cli(app, capsys, "trust", "update", "--org", "globex",
                      f"{fs.BASE_URL}/orgs/nobody", "--cap", "1")
    assert unknown.exit_code == 2 and "[not_found]" in unknown.err
    fs.assert_sound(app)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_trust_remove_asks_first_and_takes_yes(app: Flask, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fs.setup_federation(app)

    piped = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME)
    assert piped.exit_code == 2 and "--yes" in piped.err
    monkeypatch.setattr(sys, "stdin", _Terminal("n\n"))
    asked: list[str] = []
    monkeypatch.setattr(click.termui, "visible_prompt_func",
                        lambda prompt: asked.append(prompt) or "n")
    declined = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME)
    assert declined.exit_code == 2 and "nothing changed" in declined.err
    assert asked and asked[0].startswith(f"Stop trusting Acme AI ({ACME})?")
    assert _entry(app, capsys)["issuer"] == ACME

    monkeypatch.setattr(click.termui, "visible_prompt_func", lambda _prompt: "y")
    accepted = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME, "--json")
    assert accepted.exit_code == 0, accepted.err
    assert json.loads(accepted.out) == {"issuer": ACME, "removed": True}
    assert json.loads(run_cli(app, capsys, "trust", "list", "--org", "globex",
                              "--json").out) == []
    gone = run_cli(app, capsys, "trust", "remove", "--org", "globex", ACME, "--yes")
    assert gone.exit_code == 2 and "[not_found]" in gone.err


def test_the_admin_page_shows_what_re_adding_would_change_and_needs_a_confirm(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    _capped(app)
    support.login(client, "admin@globex.test")
    page = "/orgs/globex/admin/trust"

    asked = support.post_form(client, page, {"issuer": ACME, "cap": "", "currencies": "USD"})

    assert asked.status_code == 409
    html = asked.get_data(as_text=True)
    assert 'data-testid="trust-replace"' in html
    assert "<code>25000.00</code> → <code>none</code>" in html
    assert 'name="replace" value="1"' in html
    assert _entry(app, capsys)["cap"] == "25000.00"

    confirmed = support.post_form(client, page, {"issuer": ACME, "cap": "",
                                                 "currencies": "USD", "replace": "1"})

    assert confirmed.status_code == 302
    assert _entry(app, capsys)["cap"] is None
    shown = client.get(page).get_data(as_text=True)
    assert "Replaced Acme AI" in shown and "cap 25000.00 -&gt; none" in shown
