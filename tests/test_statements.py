"""Signed balance statements end to end: ada downloads hers from the portal, anyone checks
it offline with acme's published JWKS (`wallet statement verify`), and the figures are the
dashboard's, to the micro. Both databases."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import notes_support as ns
from tests.support import World, login, run_cli
from wallet import clock, db
from wallet.actions import grants, wallets
from wallet.actions._base import Actor
from wallet.core import jose, notes, statements
from wallet.store import people


def _grant_and_spend(app: Flask, world: World) -> None:
    """ada: an immediate grant, a monthly one half vested, a note exported."""
    ns.generate_key(app)
    with app.app_context():
        grants.create_grant(db.session(), slug="acme", email=world.ada, amount="1000.000001",
                            actor=Actor.cli())
        grants.create_grant(db.session(), slug="acme", email=world.ada, amount="1200.00",
                            start=clock.today() - timedelta(days=190), every="month",
                            months=12, actor=Actor.cli())
    ns.export(app, "250.50")


def _download(client: FlaskClient, email: str, slug: str = "acme") -> str:
    login(client, email)
    answer = client.get(f"/orgs/{slug}/wallet/statement.jwt")
    assert answer.status_code == 200, answer.get_data(as_text=True)[:300]
    assert answer.mimetype == "application/jwt"
    assert "attachment" in answer.headers["Content-Disposition"]
    assert answer.headers["Cache-Control"] == "no-store"
    return answer.get_data(as_text=True)


def test_ada_downloads_a_statement_that_verifies_offline_with_the_dashboards_figures(
        app: Flask, client: FlaskClient, world: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _grant_and_spend(app, world)
    token = _download(client, world.ada)
    assert 'data-testid="statement-download"' in client.get("/orgs/acme/wallet").get_data(
        as_text=True)
    statement_file, jwks_file = tmp_path / "ada.jwt", tmp_path / "acme.jwks"
    statement_file.write_text(token)
    jwks_file.write_text(json.dumps(ns.served_jwks(client)))

    done = run_cli(None, capsys, "statement", "verify", str(statement_file), "--jwks",
                   str(jwks_file), "--json")
    assert done.exit_code == 0, done.err
    report = json.loads(done.out)
    assert report["valid"] is True and report["errors"] == []
    claims = report["statement"]
    assert claims["iss"] == f"{ns.ACME}" and claims["sub"] == world.ada
    assert claims["as_of"] == clock.today().isoformat()
    with app.app_context():
        s = db.session()
        acme = people.org_by_slug(s, slug="acme")
        ada = people.person_by_email(s, email=world.ada)
        assert acme and ada
        summary = wallets.summary(s, org=acme, person=ada, charts=False)
    totals = {k: statements.micros_of(v) for k, v in claims["totals"].items()}
    assert totals["available"] == summary.available == 1000_000_001 + 600_000_000 - 250_500_000
    assert totals["unvested"] == summary.unvested == 600_000_000
    assert totals["granted"] == 2200_000_001 and totals["vested"] == 1600_000_001
    assert totals["exported"] == 250_500_000 and totals["spent"] == summary.spent == 0
    assert totals["forfeited"] == 0 and totals["held"] == summary.held == 0
    assert [len(g["tranches"]) for g in claims["grants"]] == [12, 1]  # by start date

    shown = run_cli(None, capsys, "statement", "verify", str(statement_file), "--jwks",
                    str(jwks_file))
    assert shown.exit_code == 0
    assert f"VALID statement for {world.ada}" in shown.out and "1,349.500001 USD" in shown.out
    with app.app_context():
        acme = people.org_by_slug(db.session(), slug="acme")
        assert acme is not None and acme.id is not None
        events = people.audit_events(db.session(), org_id=acme.id)
    assert any(e.action == "statement.issue" and e.target == claims["jti"] for e in events)


def test_another_issuers_jwks_or_a_changed_figure_is_invalid_and_bad_input_is_exit_2(
        app: Flask, client: FlaskClient, world: World, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _grant_and_spend(app, world)
    ns.generate_key(app, "globex")
    token = _download(client, world.ada)
    statement_file = tmp_path / "ada.jwt"
    statement_file.write_text(token)
    globex = tmp_path / "globex.jwks"
    globex.write_text(json.dumps(ns.served_jwks(client, "globex")))
    wrong = run_cli(None, capsys, "statement", "verify", str(statement_file), "--jwks",
                    str(globex))
    assert wrong.exit_code == 1 and "INVALID" in wrong.out and "unknown_key" in wrong.out

    acme = tmp_path / "acme.jwks"
    acme.write_text(json.dumps(ns.served_jwks(client)))
    header, payload, signature = token.strip().split(".")
    claims = json.loads(jose.b64url_decode(payload))
    claims["totals"]["available"] = "1000000.00"
    forged = tmp_path / "forged.jwt"
    forged.write_text(".".join([header, ns.b64(json.dumps(claims).encode()), signature]))
    assert run_cli(None, capsys, "statement", "verify", str(forged), "--jwks",
                   str(acme)).exit_code == 1

    empty = tmp_path / "empty.jwt"
    empty.write_text("\n")
    for args in ([str(empty), "--jwks", str(acme)],
                 [str(tmp_path / "missing.jwt"), "--jwks", str(acme)],
                 [str(statement_file), "--jwks", str(statement_file)],  # not a JWKS
                 [str(statement_file)]):  # no --jwks at all
        bad = run_cli(None, capsys, "statement", "verify", *args)
        assert bad.exit_code == 2, (args, bad.out, bad.err)
        assert bad.err.count("\n") == 1 and bad.err.startswith("wallet: error:"), bad.err


def test_the_cli_issues_one_never_over_a_file_and_only_for_a_member(
        app: Flask, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _grant_and_spend(app, world)
    out = tmp_path / "bob.jwt"
    made = run_cli(app, capsys, "statement", "issue", "--org", "acme", "--email", world.bob,
                   "--out", str(out))
    assert made.exit_code == 0, made.err
    found = statements.read(out.read_text().strip(), resolve=_keys_of(app.test_client()),
                            now=clock.unix())
    assert found.subject == world.bob and found.granted == 0 and found.grants == ()
    again = run_cli(app, capsys, "statement", "issue", "--org", "acme", "--email",
                    world.bob, "--out", str(out))
    assert again.exit_code == 2 and "exists" in again.err
    stranger = run_cli(app, capsys, "statement", "issue", "--org", "globex", "--email",
                       world.bob, "--out", str(tmp_path / "x.jwt"))
    assert stranger.exit_code == 2 and not (tmp_path / "x.jwt").exists()


def _keys_of(client: FlaskClient, slug: str = "acme") -> Callable[[str], notes.IssuerKeys]:
    """The keys acme publishes, as an offline verifier holding its JWKS has them."""
    keys = jose.jwks_keys(ns.served_jwks(client, slug))
    return lambda iss: notes.IssuerKeys(iss, {k: notes.KeyInfo(v) for k, v in keys.items()})


def test_an_engineer_gets_only_their_own_statement_and_alumni_keep_theirs(
        app: Flask, client: FlaskClient, world: World) -> None:
    _grant_and_spend(app, world)
    login(client, world.bob)
    assert client.get("/orgs/globex/wallet/statement.jwt").status_code in (403, 404)
    bob = statements.read(client.get("/orgs/acme/wallet/statement.jwt").get_data(
        as_text=True).strip(), resolve=_keys_of(app.test_client()), now=clock.unix())
    assert bob.subject == world.bob and bob.available == 0
    with app.app_context():
        grants.terminate(db.session(), slug="acme", on=date.today(), actor=Actor.cli(),
                         email=world.ada)
    alumni = app.test_client()
    token = _download(alumni, world.ada)
    found = statements.read(token.strip(), resolve=_keys_of(app.test_client()),
                            now=clock.unix())
    assert found.forfeited == 600_000_000 and found.unvested == 0
