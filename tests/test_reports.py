"""The liability roll-forward and balances as of a date (issue 15), over a ledger with
every kind of activity: funding, immediate and vesting grants, vesting runs, forfeiture on
termination, usage, holds placed, captured (within, above and beyond the wallet) and
voided, notes exported, revoked, redeemed at another organisation, reissued and booked as
breakage, honours of another organisation's note, and settlements both ways.

The checks are independent of the report's own queries: after each day of activity the
accounts' cached balances (what `finance.liabilities` and the ledger check read) are
recorded, and the balances as of that day, computed from the transfers, must equal them.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import fed_support as fs
from tests import support
from tests.grant_helpers import set_clock
from wallet import clock, db
from wallet.actions import finance, reports, settlement
from wallet.actions import grants as grant_actions
from wallet.actions import holds as hold_actions
from wallet.actions import notes as note_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor, atomic
from wallet.core import ledger as rules
from wallet.core import rollforward as rf
from wallet.models import Note, Organization, Person, Transfer
from wallet.store import ledger as ledger_store
from wallet.store import people

CLI = Actor.cli()
M = fs.MICROS
ADA, BOB = fs.ADA, "bob@acme.test"
DAY0 = date(2026, 3, 2)


@dataclass
class Books:
    """What the accounts' cached balances said at the end of each day of activity."""

    days: list[date] = field(default_factory=list)
    org: dict[tuple[str, date], rf.Position] = field(default_factory=dict)
    person: dict[tuple[str, str, date], tuple[int, ...]] = field(default_factory=dict)


def _org(slug: str) -> Organization:
    found = people.org_by_slug(db.session(), slug=slug)
    assert found is not None
    return found


def _person(email: str) -> Person:
    found = people.person_by_email(db.session(), email=email)
    assert found is not None
    return found


def _snapshot(app: Flask, books: Books, day: date) -> None:
    """Record the cached balances (independent of the transfers' dates) at the end of `day`."""
    with app.app_context():
        s = db.session()
        books.days.append(day)
        for slug in ("acme", "globex"):
            org = _org(slug)
            summary = finance.liabilities(s, org=org)
            books.org[slug, day] = rf.Position(
                pool=summary.pool, unvested=summary.unvested, available=summary.available,
                held=summary.held, notes=summary.outstanding_notes, payable=summary.payable)
            assert org.id is not None
            for email in (ADA, BOB):
                who = _person(email)
                assert who.id is not None
                names = [rules.wallet(who.id), rules.held(who.id), rules.unvested(who.id)]
                found = ledger_store.balances_named(s, org_id=org.id, currency="USD",
                                                    names=names)
                spent = ledger_store.total_moved(s, org_id=org.id, currency="USD",
                                                 source=tuple(names[:2]),
                                                 destination=rules.SPENT)
                notes = s.execute(sa.select(sa.func.coalesce(sa.func.sum(Note.amount), 0),
                                            sa.func.count()).where(
                    Note.org_id == org.id, Note.person_id == who.id,
                    Note.state == "active")).one()
                books.person[slug, email, day] = (
                    found.get(names[0], 0), found.get(names[1], 0), found.get(names[2], 0),
                    spent, int(notes[0]), int(notes[1]))
        s.rollback()


def _bring(fed: fs.Fed, app: Flask, note: fs.Exported) -> None:
    """Present and honour one of acme's notes at globex at the app's (fake) time."""
    client = app.test_client()
    value = fs.nonce(client, "globex", fed.token("globex"))
    with app.app_context():
        iat = int(clock.now().timestamp())
    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(note.token, fed.holder, "globex", value, iat=iat)])
    assert answer.status_code == 200, answer.get_json()


def _hold(app: Flask, email: str, amount: str, key: str) -> str:
    with app.app_context():
        s = db.session()
        with atomic(s):
            placed = hold_actions.place(s, slug="acme", body={
                "person": email, "amount": amount, "ttl_seconds": 600}, idempotency_key=key,
                actor=CLI)
        return placed.hold.public_id


def _capture(app: Flask, hold_id: str, amount: str) -> None:
    with app.app_context():
        s = db.session()
        with atomic(s):
            hold_actions.capture(s, slug="acme", hold_id=hold_id, body={"amount": amount},
                                 actor=CLI)


def build_books(app: Flask) -> tuple[fs.Fed, Books]:
    """Two months of activity at acme (the issuer) and globex (the verifier), one day at a
    time on a fake clock; the cached balances recorded at the end of each day."""
    books = Books()
    set_clock(app, DAY0 - timedelta(days=3))
    fed = fs.setup_federation(app)  # funds acme, ada gets 5,000.00 straight from the pool
    with app.app_context():
        s = db.session()
        s.execute(sa.update(Organization).where(Organization.slug == "acme")
                  .values(note_ttl_days=20))
        s.commit()
    _snapshot(app, books, DAY0 - timedelta(days=3))

    def day(n: int) -> date:
        today = DAY0 + timedelta(days=n)
        set_clock(app, today)
        return today

    def act(fn: object, **kw: object) -> object:
        with app.app_context():
            return fn(db.session(), **kw)  # type: ignore[operator]

    today = day(0)
    act(grant_actions.create_grant, slug="acme", email=BOB, amount="1200.00", start=today,
        every="month", months=12, actor=CLI)
    act(grant_actions.create_grant, slug="acme", email=BOB, amount="250.00", actor=CLI)
    act(grant_actions.create_grant, slug="acme", email=ADA, amount="600.00", start=today,
        every="month", months=6, actor=CLI)
    _snapshot(app, books, today)

    today = day(2)
    act(usage_actions.record_usage, slug="acme", email=BOB, model="claude-sonnet-4",
        input_tokens=100_000, output_tokens=20_000, idempotency_key="u-1", actor=CLI)
    held = _hold(app, ADA, "30.00", "h-1")
    _capture(app, held, "12.50")  # within the hold: capture and release
    voided = _hold(app, ADA, "8.00", "h-2")
    with app.app_context():
        s = db.session()
        with atomic(s):
            hold_actions.void(s, slug="acme", hold_id=voided, actor=CLI)
    _hold(app, BOB, "40.00", "h-3")  # left open: held at the end of the day
    _snapshot(app, books, today)

    today = day(5)
    first = fs.export(app, fed.holder, "100.00")
    _bring(fed, app, first)  # acme: redeem (notes -> payable); globex: honour
    revoked = fs.export(app, fed.holder, "50.00")
    act(note_actions.revoke, slug="acme", jti=revoked.jti, reason="lost device", actor=CLI)
    expiring = fs.export(app, fed.holder, "20.00")
    reissued = fs.export(app, fed.holder, "15.00")
    _snapshot(app, books, today)

    today = day(12)
    act(settlement.record, slug="acme", counterparty=fs.GLOBEX, direction="paid",
        amount="60.00", reference="wire 1", idempotency_key="s-1", actor=CLI)
    act(settlement.record, slug="globex", counterparty=fs.ACME, direction="received",
        amount="60.00", reference="wire 1", idempotency_key="s-1", actor=CLI)
    big = _hold(app, BOB, "5.00", "h-4")
    _capture(app, big, "9.00")  # above the hold: the wallet pays the rest (hold_extra)
    _snapshot(app, books, today)

    today = day(31)  # the notes exported on day 5 expired on day 25
    act(grant_actions.vest, slug="acme", as_of=today, actor=CLI)
    act(note_actions.breakage, slug="acme", jti=expiring.jti, actor=CLI)
    with app.app_context():
        s = db.session()
        row = s.execute(sa.select(Note).where(Note.jti == reissued.jti)).scalar_one()
        note_actions.reissue(s, org=_org("acme"), row=row)
    _snapshot(app, books, today)

    today = day(40)
    act(grant_actions.terminate, slug="acme", email=BOB, on=today, actor=CLI)
    _snapshot(app, books, today)

    today = day(62)
    act(grant_actions.vest, slug="acme", as_of=today, actor=CLI)
    with app.app_context():  # a call that costs more than the hold and the whole wallet
        s = db.session()
        ada = _person(ADA)
        assert ada.id is not None
        left = ledger_store.balance(s, org_id=_org("acme").id or 0, name=rules.wallet(ada.id),
                                    currency="USD")
    last = _hold(app, ADA, "1.00", "h-5")
    _capture(app, last, f"{(left + 3 * M) // M}.00")  # beyond both: an overrun
    _snapshot(app, books, today)
    return fed, books


def _kinds(app: Flask) -> set[str]:
    with app.app_context():
        s = db.session()
        found = {str(k) for k in s.execute(sa.select(Transfer.kind).distinct()).scalars()}
        s.rollback()
        return found


def test_the_roll_forward_reconciles_over_random_ranges(app: Flask) -> None:
    _fed, books = build_books(app)
    posted = _kinds(app)
    known = {kind for _n, _l, kinds in rf.LINES for kind in kinds}
    assert posted <= known, f"kinds the roll-forward does not name: {posted - known}"
    # every kind of activity the brief lists happened at least once
    assert posted >= {"fund", "grant", "vest", "forfeit", "spend", "hold", "hold_release",
                      "hold_capture", "hold_extra", "hold_overrun", "export", "note_revoke",
                      "note_reclaim", "note_breakage", "redeem", "honour", "settle"}
    first, end = books.days[0] - timedelta(days=2), books.days[-1] + timedelta(days=3)
    span = (end - first).days
    rng = random.Random(15)
    ranges = [(first, end)] + [tuple(sorted(rng.sample(range(span + 1), 2))) for _ in range(40)]
    with app.app_context():
        s = db.session()
        for slug in ("acme", "globex"):
            org = _org(slug)
            for pair in ranges:
                start, stop = ((first + timedelta(days=pair[0]), first + timedelta(days=pair[1]))
                               if isinstance(pair[0], int) else pair)
                report = reports.roll_forward(s, org=org, start=start, end=stop)
                roll = report.rollforward
                assert roll.reconciles, (slug, start, stop, roll)
                assert all(line.name != rf.OTHER for line in roll.lines)
                # the ends are balances as of the day before each bound
                assert roll.opening == reports.org_position(s, org=org,
                                                            on=start - timedelta(days=1))
                assert roll.closing == reports.org_position(s, org=org,
                                                            on=stop - timedelta(days=1))
            # the whole history: from nothing to the accounts' cached balances now
            whole = reports.roll_forward(s, org=org, start=first, end=end).rollforward
            assert whole.opening == rf.Position()
            assert whole.closing == books.org[slug, books.days[-1]]
            assert whole.closing.liability == finance.liabilities(s, org=org).liability
        # adjacent ranges chain: one's closing is the next one's opening
        acme = _org("acme")
        cuts = sorted({first + timedelta(days=d) for d in rng.sample(range(span + 1), 6)})
        rolls = [reports.roll_forward(s, org=acme, start=a, end=b).rollforward
                 for a, b in itertools.pairwise(cuts)]
        for before, after in itertools.pairwise(rolls):
            assert before.closing == after.opening
        s.rollback()
    support.assert_ledger_sound(app)


def test_balances_as_of_each_day_are_what_the_accounts_said_then(app: Flask) -> None:
    _fed, books = build_books(app)
    with app.app_context():
        s = db.session()
        for slug in ("acme", "globex"):
            org = _org(slug)
            for day in books.days:
                assert reports.org_position(s, org=org, on=day) == books.org[slug, day], day
                for email in (ADA, BOB):
                    got = reports.person_balance(s, org=org, person=_person(email), on=day)
                    assert (got.available, got.held, got.unvested, got.spent,
                            got.outstanding_notes, got.outstanding_count) == \
                        books.person[slug, email, day], (slug, email, day)
        # before anything happened: nothing
        acme = _org("acme")
        assert reports.org_position(s, org=acme, on=books.days[0] - timedelta(days=1)) \
            == rf.Position()
        s.rollback()
    support.assert_ledger_sound(app)


def test_the_month_s_lines_at_the_issuer_and_the_verifier(app: Flask) -> None:
    build_books(app)
    with app.app_context():
        s = db.session()
        # day 5 to day 12 inclusive: the notes and the settlement
        start, end = DAY0 + timedelta(days=5), DAY0 + timedelta(days=13)
        acme = reports.roll_forward(s, org=_org("acme"), start=start, end=end).rollforward
        assert acme.line("exported").gross == 185 * M
        assert acme.line("exported").change.liability == 0
        assert acme.line("redeemed").change == rf.Position(notes=-100 * M, payable=100 * M)
        assert acme.line("revoked").change == rf.Position(notes=-50 * M, available=50 * M)
        assert acme.line("settled").change.liability == -60 * M
        assert acme.line("honoured").gross == 0
        globex = reports.roll_forward(s, org=_org("globex"), start=start, end=end).rollforward
        assert globex.line("honoured").change.liability == 100 * M
        assert globex.line("settled").gross == 60 * M
        assert globex.line("settled").change.liability == 0  # external -> receivable
        assert globex.reconciles and acme.reconciles
        s.rollback()
    support.assert_ledger_sound(app)


# -- the surfaces ------------------------------------------------------------------------


def test_cli_rollforward_text_and_json(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    build_books(app)
    start, end = DAY0.isoformat(), (DAY0 + timedelta(days=63)).isoformat()
    text = support.run_cli(app, capsys, "report", "rollforward", "--org", "acme",
                           "--from", start, "--to", end)
    assert text.exit_code == 0, text.err
    assert "Opening" in text.out and "Closing" in text.out and "Redeemed by others" in text.out
    assert "reconciles" in text.out
    out = support.run_cli(app, capsys, "report", "rollforward", "--org", "acme",
                          "--from", start, "--to", end, "--json")
    assert out.exit_code == 0, out.err
    data = json.loads(out.out)
    assert data["reconciles"] is True
    assert data["from"] == start and data["to"] == end and data["currency"] == "USD"
    opening = {k: _micros(v) for k, v in data["opening"].items()}
    moved = {k: sum(_micros(line["change"][k]) for line in data["lines"]) for k in opening}
    assert {k: opening[k] + moved[k] for k in opening} == \
        {k: _micros(v) for k, v in data["closing"].items()}
    support.assert_ledger_sound(app)


def _micros(text: str) -> int:
    negative = text.startswith("-")
    whole, _, fraction = text.lstrip("-").partition(".")
    value = int(whole) * M + int(fraction.ljust(6, "0"))
    return -value if negative else value


@pytest.mark.parametrize("args, message", [
    (("--from", "2026-13-01", "--to", "2026-12-01"), "from must be a date"),
    (("--from", "2026-12-01", "--to", "tomorrow"), "to must be a date"),
    (("--from", "2026-12-01", "--to", "2026-12-01"), "from must be before to"),
    (("--from", "2026-12-02", "--to", "2026-12-01"), "from must be before to"),
])
def test_cli_rollforward_refuses_a_bad_range(app: Flask, capsys: pytest.CaptureFixture[str],
                                             args: tuple[str, ...], message: str) -> None:
    support.build_world(app)
    done = support.run_cli(app, capsys, "report", "rollforward", "--org", "acme", *args)
    assert done.exit_code == 2
    assert message in done.err and len(done.err.strip().splitlines()) == 1
    assert "Traceback" not in done.err


def test_cli_balance_as_of(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    _fed, books = build_books(app)
    day = DAY0 + timedelta(days=5)
    expected = books.person["acme", ADA, day]
    done = support.run_cli(app, capsys, "balance", "--org", "acme", "--email", ADA,
                           "--as-of", day.isoformat(), "--json")
    assert done.exit_code == 0, done.err
    data = json.loads(done.out)
    assert data["as_of"] == day.isoformat()
    assert [_micros(data[k]) for k in ("available", "held", "unvested", "spent",
                                       "outstanding_notes")] == list(expected[:5])
    assert data["outstanding_count"] == expected[5]
    text = support.run_cli(app, capsys, "balance", "--org", "acme", "--email", ADA,
                           "--as-of", day.isoformat())
    assert text.exit_code == 0 and f"as of {day.isoformat()}" in text.out
    bad = support.run_cli(app, capsys, "balance", "--org", "acme", "--email", ADA,
                          "--as-of", "2026-02-30")
    assert bad.exit_code == 2 and len(bad.err.strip().splitlines()) == 1
    support.assert_ledger_sound(app)


def test_admin_reports_page(app: Flask) -> None:
    build_books(app)
    client = app.test_client()
    support.login(client, "admin@acme.test")
    start, end = DAY0.isoformat(), (DAY0 + timedelta(days=63)).isoformat()
    page = client.get(f"/orgs/acme/admin/reports?from={start}&to={end}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'data-testid="rollforward"' in html and "Redeemed by others" in html
    assert re.search(r"\d{1,3}(,\d{3})+\.\d\d USD", html)  # "245,000.00 USD"
    assert "does not reconcile" not in html
    default = client.get("/orgs/acme/admin/reports")
    assert default.status_code == 200
    with app.app_context():
        first, _ = reports.this_month(clock.today())
    assert f'value="{first.isoformat()}"' in default.get_data(as_text=True)
    bad = client.get("/orgs/acme/admin/reports?from=2026-05-01&to=2026-04-01")
    assert bad.status_code == 400
    assert 'id="to-error"' in bad.get_data(as_text=True)
    worse = client.get("/orgs/acme/admin/reports?from=yesterday&to=2026-04-01")
    assert worse.status_code == 400 and 'id="from-error"' in worse.get_data(as_text=True)
    engineer = app.test_client()
    support.login(engineer, BOB)
    assert engineer.get("/orgs/acme/admin/reports").status_code == 403
    support.assert_ledger_sound(app)


def test_reports_nav_entry_shows(app: Flask) -> None:
    support.build_world(app)
    client = app.test_client()
    support.login(client, "admin@acme.test")
    html = client.get("/orgs/acme/admin/").get_data(as_text=True)
    assert 'href="/orgs/acme/admin/reports"' in html


def test_the_widest_dates_answer(app: Flask, capsys: pytest.CaptureFixture[str]) -> None:
    """The first and last days a date can name: the whole ledger, no overflow."""
    _fed, books = build_books(app)
    done = support.run_cli(app, capsys, "report", "rollforward", "--org", "acme",
                           "--from", "0001-01-01", "--to", "9999-12-31", "--json")
    assert done.exit_code == 0, done.err
    data = json.loads(done.out)
    assert data["reconciles"] is True
    assert _micros(data["closing"]["liability"]) == books.org["acme", books.days[-1]].liability
    last = support.run_cli(app, capsys, "balance", "--org", "acme", "--email", ADA,
                           "--as-of", "9999-12-31", "--json")
    assert last.exit_code == 0, last.err
    assert _micros(json.loads(last.out)["available"]) == \
        books.person["acme", ADA, books.days[-1]][0]
    support.assert_ledger_sound(app)


def test_wallet_balance_as_of_a_day_for_the_organisation(
        app: Flask, world: support.World, capsys: pytest.CaptureFixture[str]) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob, amount="1200.00",
                            actor=Actor.cli())
    today = clock.today()
    r = support.run_cli(app, capsys, "balance", "--org", "acme", "--as-of", today.isoformat(),
                        "--json")
    assert r.exit_code == 0, r.err
    shown = json.loads(r.out)
    assert (shown["pool"], shown["available"], shown["liability"], shown["outstanding_notes"]) \
        == ("248800.00", "1200.00", "1200.00", "0.00")
    before = support.run_cli(app, capsys, "balance", "--org", "acme", "--as-of",
                     (today - timedelta(days=1)).isoformat(), "--json")
    assert json.loads(before.out)["liability"] == "0.00"  # nothing was owed yet
    neither = support.run_cli(app, capsys, "balance", "--org", "acme")
    assert neither.exit_code == 2 and "--email" in neither.err
