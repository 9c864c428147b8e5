"""`wallet org|person|grant|note|token list`, `token revoke` and `audit`: each lists one
organisation's rows only, as a table and as JSON, and bad input is exit 2. Both databases."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from tests import notes_support as ns
from tests.support import World, run_cli
from wallet import db
from wallet.actions import grants, orgs
from wallet.actions._base import Actor


def _json(app: Flask, capsys: pytest.CaptureFixture[str], *args: str) -> object:
    r = run_cli(app, capsys, *args, "--json")
    assert r.exit_code == 0, r.err
    return json.loads(r.out)


def test_each_list_shows_one_organisations_rows(
        app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    ns.generate_key(app)
    with app.app_context():
        grants.create_grant(db.session(), slug="acme", email=world.bob, amount="1200.00",
                            every="month", months=12, actor=Actor.cli())
    ns.give(app, "50.00")
    note = ns.export(app, "20.00")

    assert [o["slug"] for o in _json(app, capsys, "org", "list")] == ["acme", "globex"]
    people = _json(app, capsys, "person", "list", "--org", "globex")
    assert [p["email"] for p in people] == [world.ada, world.globex_admin]  # type: ignore[union-attr]
    listed = _json(app, capsys, "grant", "list", "--org", "acme")
    assert [(g["email"], g["amount"], g["every"]) for g in listed] == [  # type: ignore[union-attr]
        (world.bob, "1200.00", "month")]
    assert _json(app, capsys, "grant", "list", "--org", "globex") == []
    assert _json(app, capsys, "grant", "list", "--org", "acme", "--email", world.ada) == []
    issued = _json(app, capsys, "note", "list", "--org", "acme")
    assert [(n["jti"], n["email"], n["state"]) for n in issued] == [  # type: ignore[union-attr]
        (note.jti, world.ada, "active")]
    assert _json(app, capsys, "note", "list", "--org", "globex") == []
    assert _json(app, capsys, "note", "list", "--org", "acme", "--state", "redeemed") == []

    table = run_cli(app, capsys, "grant", "list", "--org", "acme")
    assert table.exit_code == 0 and "1,200.00 USD" in table.out and "12 months by month" \
        in table.out
    empty = run_cli(app, capsys, "note", "list", "--org", "globex")
    assert empty.exit_code == 0 and "globex has issued no notes" in empty.out
    for bad in (["grant", "list", "--org", "nope"], ["note", "list", "--org", "acme",
                                                      "--state", "lost"],
                ["audit", "--org", "acme", "--limit", "0"]):
        r = run_cli(app, capsys, *bad)
        assert r.exit_code == 2 and r.err.count("\n") == 1, (bad, r.err)


def test_a_token_is_listed_without_its_secret_and_revoked_once_it_is_confirmed(
        app: Flask, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    with app.app_context():
        secret, row = orgs.create_token(db.session(), slug="acme", email=None,
                                        actor=Actor.cli(), label="gateway")
        mine, _ = orgs.create_token(db.session(), slug="acme", email=world.ada,
                                    actor=Actor.cli())
    listed = _json(app, capsys, "token", "list", "--org", "acme")
    assert [(t["id"], t["label"], t["kind"], t["revoked"]) for t in listed] == [  # type: ignore[union-attr]
        (row.id, "gateway", "service", False)]
    assert secret not in json.dumps(listed) and mine not in json.dumps(listed)
    assert len(_json(app, capsys, "token", "list", "--org", "acme", "--email", world.ada)) == 1  # type: ignore[arg-type]
    assert _json(app, capsys, "token", "list", "--org", "globex") == []

    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"/api/v1/orgs/acme/holds/hld_{'x' * 24}", headers=auth).status_code \
        == 404  # authenticated: the hold is what is missing
    refused = run_cli(app, capsys, "token", "revoke", "--org", "acme", str(row.id))
    assert refused.exit_code == 2 and "--yes" in refused.err  # no terminal, no --yes
    other = run_cli(app, capsys, "token", "revoke", "--org", "globex", str(row.id), "--yes")
    assert other.exit_code == 2 and "no such live token" in other.err  # not globex's
    done = _json(app, capsys, "token", "revoke", "--org", "acme", str(row.id), "--yes")
    assert done == {"id": row.id, "revoked": True}
    assert client.get(f"/api/v1/orgs/acme/holds/hld_{'x' * 24}", headers=auth).status_code \
        == 401
    again = run_cli(app, capsys, "token", "revoke", "--org", "acme", str(row.id), "--yes")
    assert again.exit_code == 2
    log = _json(app, capsys, "audit", "--org", "acme", "--limit", "3")
    assert log[0]["action"] == "token.revoke" and log[0]["actor"] == "cli"  # type: ignore[index]
    assert all(e["action"] != "token.revoke" for e in _json(  # type: ignore[union-attr]
        app, capsys, "audit", "--org", "globex"))
