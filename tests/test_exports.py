"""CSV exports (issue 15): every kind from the admin route and the CLI, date ranges, tenant
isolation, an engineer's own transactions, formula injection, bad input."""

from __future__ import annotations

import csv
import io
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import notes_support as ns
from tests.grant_helpers import real_clock, set_clock
from tests.support import World, login, run_cli
from wallet import db
from wallet.actions import exports as export_actions
from wallet.actions import grants as grant_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor

CLI = Actor.cli()
EVIL = "=HYPERLINK(\"http://evil.example\",\"click\")"
TRICKY = 'a "quoted", comma\nand a line break, Zoë 日本 🚀'


def parse(data: bytes) -> list[list[str]]:
    """Read an export back as a spreadsheet or a script would."""
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def as_dicts(data: bytes) -> list[dict[str, str]]:
    header, *rows = parse(data)
    return [dict(zip(header, row, strict=True)) for row in rows]


def populate(app: Flask) -> None:
    """Money at both organisations on two days: January and February 2026."""
    set_clock(app, date(2026, 1, 10))
    with app.app_context():
        s = db.session()
        ledger_actions.fund(s, slug="acme", amount="10.00", idempotency_key="evil",
                            memo=EVIL, actor=CLI)
        ledger_actions.fund(s, slug="acme", amount="1.00", idempotency_key="tricky",
                            memo=TRICKY, actor=CLI)
        grant_actions.create_grant(s, slug="acme", email="bob@acme.test", amount="12.00",
                                   start=date(2026, 1, 1), every="month", months=12,
                                   actor=CLI)
        ledger_actions.fund(s, slug="globex", amount="500.00", idempotency_key="g",
                            memo="globex-only funding", actor=CLI)
        grant_actions.create_grant(s, slug="globex", email="ada@example.test",
                                   amount="50.00", actor=CLI)
    set_clock(app, date(2026, 2, 10))
    with app.app_context():
        s = db.session()
        grant_actions.create_grant(s, slug="acme", email="ada@example.test", amount="100.00",
                                   memo="-2+3 welcome", actor=CLI)
        grant_actions.vest(s, slug="acme", actor=CLI)  # bob's first tranche
        usage_actions.record_usage(s, slug="acme", email="ada@example.test", model="gpt-4o",
                                   input_tokens=400_000, output_tokens=1000,
                                   idempotency_key="u1", actor=CLI)
    ns.generate_key(app)
    ns.export(app, "4.00")
    real_clock(app)


def download(client: FlaskClient, path: str) -> bytes:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[-800:]
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="')
    return response.get_data()


HEADERS = {
    "transactions": export_actions.TRANSACTIONS_HEADER, "grants": export_actions.GRANTS_HEADER,
    "usage": export_actions.USAGE_HEADER, "notes": export_actions.NOTES_HEADER,
    "settlement": export_actions.SETTLEMENT_HEADER, "audit": export_actions.AUDIT_HEADER,
    "people": export_actions.PEOPLE_HEADER,
}


def test_every_kind_from_the_admin_route_and_the_cli(
        app: Flask, world: World, client: FlaskClient,
        capsys: pytest.CaptureFixture[str]) -> None:
    populate(app)
    login(client, world.acme_admin)
    for kind in export_actions.KINDS:
        data = download(client, f"/orgs/acme/admin/export/{kind}.csv")
        assert tuple(parse(data)[0]) == HEADERS[kind]
        done = run_cli(app, capsys, "export", kind, "--org", "acme")
        assert done.exit_code == 0, done.err
        assert parse(done.out.encode()) == parse(data), kind

    rows = as_dicts(download(client, "/orgs/acme/admin/export/transactions.csv"))
    memos = {r["memo"]: r for r in rows}
    assert memos["'" + EVIL]["amount"] == "10.00"  # neutralised, and the amount untouched
    assert TRICKY in memos  # quotes, commas and a line break survive
    assert memos["'-2+3 welcome"]["to_account"] == "wallet:ada@example.test"
    assert {r["kind"] for r in rows} >= {"fund", "grant", "vest", "spend", "export"}
    assert all(not r["amount"].startswith(("-", "'")) for r in rows)
    assert "globex-only funding" not in {r["memo"] for r in rows}

    grants = as_dicts(download(client, "/orgs/acme/admin/export/grants.csv"))
    bob = [g for g in grants if g["email"] == "bob@acme.test"]
    assert len(bob) == 12 and {g["schedule"] for g in bob} == {"month"}
    assert [g["tranche_seq"] for g in bob] == [str(i) for i in range(1, 13)]
    assert bob[0]["tranche_state"] == "vested" and bob[-1]["tranche_state"] == "pending"
    ada = [g for g in grants if g["email"] == "ada@example.test"]
    assert len(ada) == 1 and ada[0]["grant_amount"] == "100.00"
    assert ada[0]["schedule"] == "immediate"

    usage = as_dicts(download(client, "/orgs/acme/admin/export/usage.csv"))
    assert [(u["email"], u["model"], u["input_tokens"]) for u in usage] == [
        ("ada@example.test", "gpt-4o", "400000")]
    notes = as_dicts(download(client, "/orgs/acme/admin/export/notes.csv"))
    assert [(n["email"], n["amount"], n["state"]) for n in notes] == [
        ("ada@example.test", "4.00", "active")]
    audit = as_dicts(download(client, "/orgs/acme/admin/export/audit.csv"))
    assert "pool.fund" in {a["action"] for a in audit}
    assert all(a["details"].startswith("{") for a in audit)


def test_settlement_is_the_settlement_page_now(app: Flask, world: World,
                                               client: FlaskClient) -> None:
    login(client, world.acme_admin)
    response = client.get("/orgs/acme/admin/export/settlement.csv")
    assert parse(response.get_data()) == [list(export_actions.SETTLEMENT_HEADER)]
    assert "settlement-as-of-" in response.headers["Content-Disposition"]
    refused = client.get("/orgs/acme/admin/export/settlement.csv?from=2026-01-01")
    assert refused.status_code == 400
    assert "snapshot" in refused.get_data(as_text=True)


def test_date_ranges_include_both_days(app: Flask, world: World, client: FlaskClient,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    populate(app)
    login(client, world.acme_admin)

    def kinds(query: str) -> list[str]:
        rows = as_dicts(download(client, f"/orgs/acme/admin/export/transactions.csv{query}"))
        # Leave out the world's own funding (no memo), made today on the real clock.
        return [r["kind"] for r in rows if r["kind"] != "fund" or r["memo"] != ""]

    january = client.get("/orgs/acme/admin/export/transactions.csv?from=2026-01-10"
                         "&to=2026-01-10")
    january.close()  # a streamed answer holds its context until read or closed
    assert ('filename="acme-transactions-2026-01-10-to-2026-01-10.csv"'
            in january.headers["Content-Disposition"])
    assert sorted(kinds("?from=2026-01-10&to=2026-01-10")) == ["fund", "fund", "grant"]
    assert "grant" not in kinds("?to=2026-01-09") and kinds("?to=2026-01-09") == []
    february = kinds("?from=2026-02-01")
    assert sorted(february) == ["export", "grant", "spend", "vest"]
    assert sorted(kinds("")) == sorted(kinds("?from=2026-01-10"))
    empty = client.get("/orgs/acme/admin/export/grants.csv?from=2030-01-01&to=2030-12-31")
    assert parse(empty.get_data()) == [list(export_actions.GRANTS_HEADER)]
    # The CLI takes the same range.
    done = run_cli(app, capsys, "export", "usage", "--org", "acme", "--to", "2026-01-31")
    assert done.exit_code == 0 and parse(done.out.encode()) == [list(export_actions.USAGE_HEADER)]
    done = run_cli(app, capsys, "export", "usage", "--org", "acme", "--from", "2026-02-10",
                   "--to", "2026-02-10")
    assert len(parse(done.out.encode())) == 2


def test_exports_stay_inside_the_organisation_and_its_admins(
        app: Flask, world: World, client: FlaskClient) -> None:
    populate(app)
    login(client, world.acme_admin)
    assert client.get("/orgs/globex/admin/export/transactions.csv").status_code == 404
    globex = app.test_client()
    login(globex, world.globex_admin)
    rows = as_dicts(download(globex, "/orgs/globex/admin/export/transactions.csv"))
    assert {r["memo"] for r in rows} >= {"globex-only funding"}
    assert not {r["memo"] for r in rows} & {"'" + EVIL, TRICKY}
    assert as_dicts(download(globex, "/orgs/globex/admin/export/usage.csv")) == []
    engineer = app.test_client()
    login(engineer, world.ada)
    for kind in export_actions.KINDS:
        assert engineer.get(f"/orgs/acme/admin/export/{kind}.csv").status_code == 403
        assert engineer.get(f"/orgs/globex/admin/export/{kind}.csv").status_code == 403
    anonymous = app.test_client().get("/orgs/acme/admin/export/audit.csv")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_an_engineer_exports_their_own_transactions_only(
        app: Flask, world: World, client: FlaskClient) -> None:
    populate(app)
    login(client, world.ada)
    page = client.get("/orgs/acme/transactions").get_data(as_text=True)
    assert "/orgs/acme/transactions.csv" in page and "Download CSV" in page
    response = client.get("/orgs/acme/transactions.csv")
    assert 'filename="acme-my-transactions-all.csv"' in response.headers["Content-Disposition"]
    header, *_ = parse(response.get_data())
    assert tuple(header) == export_actions.MY_TRANSACTIONS_HEADER
    rows = as_dicts(response.get_data())
    assert [(r["kind"], r["direction"], r["amount"]) for r in rows] == [
        ("grant", "in", "100.00"), ("spend", "out", "1.01"), ("export", "out", "4.00")]
    assert all("ada@example.test" in r["from_account"] + r["to_account"] for r in rows)
    at_globex = as_dicts(download(client, "/orgs/globex/transactions.csv"))
    assert [(r["kind"], r["amount"]) for r in at_globex] == [("grant", "50.00")]
    assert as_dicts(download(client, "/orgs/acme/transactions.csv?to=2026-01-31")) == []
    bob = app.test_client()
    login(bob, world.bob)
    mine = as_dicts(download(bob, "/orgs/acme/transactions.csv"))
    assert {r["kind"] for r in mine} == {"grant", "vest"}
    assert all("bob@acme.test" in r["from_account"] + r["to_account"] for r in mine)
    assert bob.get("/orgs/globex/transactions.csv").status_code == 404
    assert bob.get("/orgs/acme/transactions.csv?from=yesterday").status_code == 400


def test_every_admin_table_links_its_download(app: Flask, world: World,
                                              client: FlaskClient) -> None:
    login(client, world.acme_admin)
    for page, kinds in (("", ("transactions", "usage")), ("grants", ("grants",)),
                        ("notes", ("notes",)), ("settlement", ("settlement",)),
                        ("audit", ("audit",)), ("people", ("people",))):
        html = client.get(f"/orgs/acme/admin/{page}").get_data(as_text=True)
        assert "Download CSV" in html, page
        for kind in kinds:
            assert f"/orgs/acme/admin/export/{kind}.csv" in html, (page, kind)


@pytest.mark.parametrize(("query", "words"), [
    ("?from=2026-13-01", "'from' must be a date written YYYY-MM-DD"),
    ("?to=31/01/2026", "'to' must be a date written YYYY-MM-DD"),
    ("?from=2026-02-01&to=2026-01-01", "is before 'from'"),
    ("?from=" + "9" * 5000, "'from' must be a date"),
])
def test_bad_dates_are_a_400_with_a_message(app: Flask, world: World, client: FlaskClient,
                                            query: str, words: str) -> None:
    login(client, world.acme_admin)
    response = client.get(f"/orgs/acme/admin/export/audit.csv{query}")
    assert response.status_code == 400
    assert words.replace("'", "&#39;") in response.get_data(as_text=True)


def test_an_unknown_kind_is_not_found(app: Flask, world: World, client: FlaskClient) -> None:
    login(client, world.acme_admin)
    response = client.get("/orgs/acme/admin/export/passwords.csv")
    assert response.status_code == 404
    assert "no export named" in response.get_data(as_text=True)


def test_cli_bad_input_is_one_line_and_exit_2(app: Flask, world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for args, words in (
            (("export", "passwords", "--org", "acme"), "'passwords' is not one of"),
            (("export", "audit", "--org", "nope"), "no organisation 'nope'"),
            (("export", "audit", "--org", "acme", "--from", "2026-1-1"),
             "'from' must be a date written YYYY-MM-DD"),
            (("export", "audit", "--org", "acme", "--from", "2026-02-02", "--to",
              "2026-02-01"), "is before 'from'"),
            (("export", "settlement", "--org", "acme", "--to", "2026-02-01"), "snapshot"),
    ):
        done = run_cli(app, capsys, *args)
        assert done.exit_code == 2, (args, done)
        assert done.out == "" and len(done.err.strip().splitlines()) == 1, done.err
        assert words in done.err, done.err


def test_cli_output_file_is_never_overwritten_without_force(
        app: Flask, world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "audit.csv"
    done = run_cli(app, capsys, "export", "audit", "--org", "acme", "--output", str(target))
    assert done.exit_code == 0 and done.out == ""
    first = target.read_bytes()
    assert tuple(parse(first)[0]) == export_actions.AUDIT_HEADER and len(parse(first)) > 1
    assert os.stat(target).st_mode & 0o077 == 0  # the books are private
    target.write_bytes(b"keep me")
    done = run_cli(app, capsys, "export", "audit", "--org", "acme", "--output", str(target))
    assert done.exit_code == 2 and "exists" in done.err
    assert len(done.err.strip().splitlines()) == 1
    assert target.read_bytes() == b"keep me"
    done = run_cli(app, capsys, "export", "audit", "--org", "acme", "--output", str(target),
                   "--force")
    assert done.exit_code == 0 and target.read_bytes() == first
    bad = run_cli(app, capsys, "export", "audit", "--org", "acme", "--output", str(tmp_path))
    assert bad.exit_code == 2 and "directory" in bad.err
    # A refused export leaves no file behind.
    refused = tmp_path / "refused.csv"
    bad = run_cli(app, capsys, "export", "audit", "--org", "acme", "--from", "x",
                  "--output", str(refused))
    assert bad.exit_code == 2 and not refused.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_big_exports_are_read_page_by_page(app: Flask, world: World, client: FlaskClient,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    populate(app)
    with app.app_context():
        s = db.session()
        for i in range(7):
            ledger_actions.fund(s, slug="acme", amount="1.00", idempotency_key=f"p{i}",
                                memo=f"page {i}", actor=CLI)
    login(client, world.acme_admin)
    whole = {k: parse(download(client, f"/orgs/acme/admin/export/{k}.csv"))
             for k in ("transactions", "grants", "audit")}
    monkeypatch.setattr(export_actions, "PAGE", 2)
    for kind, rows in whole.items():
        paged = parse(download(client, f"/orgs/acme/admin/export/{kind}.csv"))
        assert paged == rows, kind  # every row once, in the same order
    assert len(whole["transactions"]) > 10 and len(whole["grants"]) == 1 + 12 + 1


def test_a_download_in_progress_holds_no_transaction(
        app: Flask, world: World, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite a transaction holds the one write lock: a client reading slowly must not
    stop payments. Half-way through a download, another request's write goes through."""
    populate(app)
    monkeypatch.setattr(export_actions, "PAGE", 2)
    login(client, world.acme_admin)
    response = client.get("/orgs/acme/admin/export/transactions.csv")
    pieces = iter(response.response)
    received = [next(pieces), next(pieces)]  # the header, then the first page
    assert len(parse(b"".join(received))) == 3

    def fund() -> None:
        with app.app_context():
            ledger_actions.fund(db.session(), slug="acme", amount="1.00",
                                idempotency_key="meanwhile", actor=CLI)

    with ThreadPoolExecutor(1) as pool:
        pool.submit(fund).result(timeout=10)  # SQLite's busy timeout is 30 s
    received += list(pieces)
    response.close()
    rows = parse(b"".join(received))
    assert len(rows) == len(set(map(tuple, rows)))  # no row twice
    assert rows[1][2] == "fund"  # oldest first


def test_settlement_rows_are_the_settlement_pages_figures(
        app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]) -> None:
    fs.clear_caches()
    try:
        fed = fs.setup_federation(app)
        note = fs.export(app, fed.holder, "100.00")
        assert fs.bring(fed, app.test_client(), note).status_code == 200
    finally:
        fs.clear_caches()
    login(client, "admin@acme.test")
    (acme,) = as_dicts(download(client, "/orgs/acme/admin/export/settlement.csv"))
    assert acme["counterparty"] == fs.GLOBEX and acme["currency"] == "USD"
    assert (acme["our_notes_redeemed_count"], acme["our_notes_redeemed_gross"],
            acme["we_owe_outstanding"]) == ("1", "100.00", "100.00")
    assert (acme["their_notes_honoured_count"], acme["they_owe_outstanding"]) == ("0", "0.00")
    done = run_cli(app, capsys, "export", "settlement", "--org", "globex")
    (globex,) = as_dicts(done.out.encode())
    assert globex["counterparty"] == fs.ACME
    assert (globex["their_notes_honoured_count"], globex["their_notes_honoured_gross"],
            globex["they_owe_outstanding"]) == ("1", "100.00", "100.00")
    moved = as_dicts(download(client, "/orgs/acme/admin/export/transactions.csv"))
    assert f"payable:{fs.GLOBEX}" in {r["to_account"] for r in moved}


def test_people_is_a_snapshot_of_the_members_of_one_organisation(
        app: Flask, world: World, client: FlaskClient) -> None:
    login(client, world.acme_admin)
    answer = client.get("/orgs/acme/admin/export/people.csv")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(answer.get_data(as_text=True))))
    assert rows[0] == ["email", "name", "role", "state", "started_on", "ended_on"]
    assert sorted((r[0], r[2], r[3]) for r in rows[1:]) == [
        (world.ada, "engineer", "member"), (world.acme_admin, "admin", "member"),
        (world.bob, "engineer", "member")]
    assert world.globex_admin not in answer.get_data(as_text=True)
    dated = client.get("/orgs/acme/admin/export/people.csv?from=2026-01-01")
    assert dated.status_code == 400 and "snapshot" in dated.get_data(as_text=True)
