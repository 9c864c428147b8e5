"""Holds under contention (docs/gateway.md, issue #13), on both databases.

Real concurrent requests through the holds API: threads, each with its own test client
(and so its own request, session and database connection), released together by a
barrier; the placement race also runs in two processes ("spawn", each building its own
app on the same database), as tests/test_federation_race.py does. What must hold:

- 64 placements with distinct keys against a wallet that covers exactly N of them:
  exactly N granted, the rest `insufficient_funds`, nothing reserved for a refusal;
- 16 identical captures (one key) of one hold: one capture, 16 identical answers;
- captures and voids of one hold at once: one of them wins, the others get `conflict`;
- an expiry sweep (`wallet holds expire`, and the sweep a new hold runs first) racing a
  capture, on two app instances whose clocks straddle the hold's expiry: one outcome;
- one Idempotency-Key and body sent 16 times at once: one hold.

Every test ends with the money counted: the person's wallet and `held:` accounts, the
hold rows by state, the ledger's transfers by kind, the usage records, and
`wallet.actions.ledger.check` (which includes held:<person> == the sum of open holds).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import holds_support as hs
from tests import support
from tests.holds_support import MICROS, MODEL
from tests.support import World
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import holds as hold_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor, atomic
from wallet.core import ledger
from wallet.models import Hold, IdempotencyRecord, Transfer, UsageRecord
from wallet.store import ledger as ledger_store
from wallet.store import people

CLI = Actor.cli()
ADA = "ada@example.test"
BASE = "/api/v1/orgs/acme/holds"
START = datetime(2031, 5, 5, 9, 0, tzinfo=UTC)

# The placement race: PLACERS holds of HOLD micros each, a wallet of exactly GRANTED x HOLD.
PROCESSES = 2
PLACERS = 64
GRANTED = 23
HOLD = 1_234_567


# -- helpers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One API answer: status, JSON body, whether it was a stored answer replayed."""

    status: int
    body: dict[str, Any]
    replayed: bool

    @property
    def code(self) -> str | None:
        return self.body.get("code")


def _send(client: FlaskClient, token: str, path: str, key: str,
          body: dict[str, Any]) -> Reply:
    r = client.post(path, json=body, headers={"Authorization": f"Bearer {token}",
                                              "Idempotency-Key": key})
    if r.status_code >= 400:
        assert r.mimetype == "application/problem+json", (r.status_code, r.get_data())
    return Reply(r.status_code, r.get_json(), r.headers.get("Idempotent-Replayed") == "true")


def _race(app: Flask, works: list[Callable[[FlaskClient], Any]]) -> list[Any]:
    """Run every `work(client)` in its own thread, all released at once; their results."""
    gate = threading.Barrier(len(works))

    def run(work: Callable[[FlaskClient], Any]) -> Any:
        client = app.test_client()
        gate.wait(timeout=30)
        return work(client)

    with ThreadPoolExecutor(len(works)) as pool:
        return list(pool.map(run, works))


def _fund_ada(app: Flask, credit: int, *others: str) -> str:
    """A service token for acme, and exactly `credit` micros in ada's wallet (and in the
    wallets of `others`, new engineers at acme)."""
    with app.app_context():
        s = db.session()
        token, _row = org_actions.create_token(s, slug="acme", email=None, actor=CLI)
        for email in others:
            org_actions.add_person(s, slug="acme", email=email, password=support.PASSWORD,
                                   actor=CLI)
        for email in (ADA, *others):
            grant_actions.create_grant(s, slug="acme", email=email, amount=hs.money(credit),
                                       actor=CLI)
    return token


@dataclass(frozen=True)
class Books:
    """What the database holds for ada at acme."""

    wallet: int
    held: int
    spent: int
    holds: Counter[str]  # hold rows by state
    open_total: int  # the sum of ada's open holds
    transfers: Counter[str]  # ledger transfers by kind (the holds' kinds)
    usage: int  # usage records
    keyed: Counter[str]  # idempotency records by state


def _books(app: Flask, email: str = ADA) -> Books:
    """The books of one person at acme (the transfers and usage of all of acme's holds)."""
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        found = people.member_by_email(s, org_id=org.id, email=email)
        assert found is not None and found[1].id is not None
        pid = found[1].id

        def balance(name: str) -> int:
            return ledger_store.balance(s, org_id=org.id, name=name, currency="USD")

        hold = Hold.__table__  # type: ignore[attr-defined]
        rows = s.execute(sa.select(hold.c.state, hold.c.amount).where(
            hold.c.org_id == org.id, hold.c.person_id == pid)).all()
        transfer = Transfer.__table__  # type: ignore[attr-defined]
        kinds = Counter({str(kind): int(n) for kind, n in s.execute(
            sa.select(transfer.c.kind, sa.func.count()).where(
                transfer.c.org_id == org.id, transfer.c.kind.like("hold%"))
            .group_by(transfer.c.kind))})
        usage = UsageRecord.__table__  # type: ignore[attr-defined]
        records = s.execute(sa.select(sa.func.count()).select_from(usage).where(
            usage.c.org_id == org.id)).scalar_one()
        keys = IdempotencyRecord.__table__  # type: ignore[attr-defined]
        keyed = Counter({str(state): int(n) for state, n in s.execute(
            sa.select(keys.c.state, sa.func.count()).where(keys.c.org_id == org.id)
            .group_by(keys.c.state))})
        books = Books(balance(ledger.wallet(pid)), balance(ledger.held(pid)),
                      balance(ledger.SPENT), Counter(str(state) for state, _ in rows),
                      sum(int(amount) for state, amount in rows if state == "open"),
                      kinds, int(records), keyed)
        s.rollback()
    return books


def _assert_sound(app: Flask, email: str = ADA) -> Books:
    """The ledger invariants, and held:<person> equal to the sum of their open holds."""
    with app.app_context():
        report = ledger_actions.check(db.session(), slug="acme")
    assert report == {"acme": []}, report
    support.assert_ledger_sound(app)
    books = _books(app, email)
    assert books.held == books.open_total, books
    assert books.wallet >= 0 and books.held >= 0, books
    return books


@pytest.fixture
def fake_clock(app: Flask) -> clock.FakeClock:
    found = clock.install(app, clock.FakeClock(START))
    assert isinstance(found, clock.FakeClock)
    return found


@pytest.fixture
def second_app(app: Flask, app_config: dict[str, Any]) -> Iterator[Flask]:
    """Another app instance on the same database (as a second gateway-facing server)."""
    from wallet import create_app

    other = create_app(app_config)
    yield other
    other.extensions["wallet.engine"].dispose()


# -- 64 placements for a wallet that covers 23 -------------------------------------------


def _place_many(args: tuple[int, dict[str, Any], str, int, Any]) -> list[tuple[int, Any, bool]]:
    """One process: `threads` placements, each with its own key, released together."""
    from wallet import create_app

    index, config, token, threads, barrier = args
    app = create_app(config)
    try:
        gate = threading.Barrier(threads)

        def place(i: int) -> tuple[int, Any, bool]:
            client = app.test_client()
            client.get("/healthz")  # warm up: a connection each, before the race
            gate.wait(timeout=60)
            r = _send(client, token, BASE, f"p{index}-{i}",
                      {"person": ADA, "amount": hs.money(HOLD), "reference": f"call {index}/{i}"})
            return r.status, r.body, r.replayed

        barrier.wait(120)  # both processes start together
        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(place, range(threads)))
    finally:
        app.extensions["wallet.engine"].dispose()


@pytest.mark.slow
def test_64_concurrent_holds_for_a_wallet_that_covers_23_grant_exactly_23(
        app: Flask, app_config: dict[str, Any], world: World) -> None:
    token = _fund_ada(app, GRANTED * HOLD)
    ctx = multiprocessing.get_context("spawn")
    per_process = PLACERS // PROCESSES
    with ctx.Manager() as manager, ctx.Pool(PROCESSES) as pool:
        barrier = manager.Barrier(PROCESSES)
        results = pool.map(_place_many, [(i, app_config, token, per_process, barrier)
                                         for i in range(PROCESSES)])
    replies = [Reply(*r) for batch in results for r in batch]

    assert len(replies) == PLACERS
    outcomes = Counter((r.status, r.code) for r in replies)
    assert outcomes == {(201, None): GRANTED, (422, "insufficient_funds"): PLACERS - GRANTED}
    assert not any(r.replayed for r in replies)
    granted = [r.body for r in replies if r.status == 201]
    assert len({h["id"] for h in granted}) == GRANTED
    assert all(hs.micros(h["amount"]) == HOLD and h["state"] == "open" and h["person"] == ADA
               for h in granted)
    # Each hold saw the wallet right after its own debit: the wallet row serialises
    # them, so the balances they answer are every step from 22 x HOLD down to 0, once.
    assert sorted(hs.micros(h["available"]) for h in granted) == [
        k * HOLD for k in range(GRANTED)]
    # A refusal comes only once nothing is left, and says so.
    for refused in (r.body for r in replies if r.status == 422):
        assert hs.micros(refused["available"]) == 0 and hs.micros(refused["amount"]) == HOLD

    books = _assert_sound(app)
    assert books.wallet == 0
    assert books.held == GRANTED * HOLD == books.open_total  # never more than the balance
    assert books.holds == {"open": GRANTED}  # a refused hold leaves no row
    assert books.transfers == {"hold": GRANTED}
    assert books.keyed == {"done": PLACERS}  # every answer stored, the refusals too


# -- the same place, 16 times at once -----------------------------------------------------


def test_one_key_and_body_placed_16_times_at_once_makes_one_hold(app: Flask,
                                                                world: World) -> None:
    token = _fund_ada(app, 5 * MICROS)
    body = {"person": ADA, "model": MODEL, "max_input_tokens": 100_000,
            "max_output_tokens": 20_000, "reference": "gw:one-call"}
    replies = _race(app, [lambda c: _send(c, token, BASE, "the-one-call", body)] * 16)

    assert {r.status for r in replies} == {201}
    assert all(r.body == replies[0].body for r in replies)  # the same hold, 16 times
    assert sorted(r.replayed for r in replies) == [False] + [True] * 15
    hold = replies[0].body
    assert hs.micros(hold["amount"]) == 600_000  # 100k x 3.00 + 20k x 15.00 per Mtok
    assert hs.micros(hold["available"]) == 5 * MICROS - 600_000
    books = _assert_sound(app)
    assert books.holds == {"open": 1} and books.held == 600_000
    assert books.wallet == 5 * MICROS - 600_000
    assert books.transfers == {"hold": 1}


# -- the same capture, 16 times at once ---------------------------------------------------


def _place(app: Flask, token: str, key: str, **body: Any) -> dict[str, Any]:
    r = _send(app.test_client(), token, BASE, key, {"person": ADA, **body})
    assert r.status == 201, r.body
    return r.body


def test_16_identical_captures_at_once_capture_once(app: Flask, world: World) -> None:
    token = _fund_ada(app, 5 * MICROS)
    hold = _place(app, token, "h", model=MODEL, max_input_tokens=100_000,
                  max_output_tokens=20_000)
    usage = {"input_tokens": 12_345, "cached_input_tokens": 2_345, "output_tokens": 1_001}
    cost = hs.cost(12_345, 2_345, 1_001)
    assert cost == 45_719  # 45,718.5 micros, rounded up once
    path = f"{BASE}/{hold['id']}/capture"
    replies = _race(app, [lambda c: _send(c, token, path, "h:capture", usage)] * 16)

    assert {r.status for r in replies} == {200}, Counter((r.status, r.code) for r in replies)
    assert all(r.body == replies[0].body for r in replies)
    assert sorted(r.replayed for r in replies) == [False] + [True] * 15
    done = replies[0].body
    assert done["state"] == "captured" and hs.micros(done["cost"]) == cost
    assert hs.micros(done["released"]) == 600_000 - cost and hs.micros(done["overrun"]) == 0
    assert hs.micros(done["available"]) == 5 * MICROS - cost
    books = _assert_sound(app)
    assert (books.wallet, books.held, books.spent) == (5 * MICROS - cost, 0, cost)
    assert books.holds == {"captured": 1}
    assert books.transfers == {"hold": 1, "hold_capture": 1, "hold_release": 1}
    assert books.usage == 1


def test_identical_captures_under_different_keys_at_once_capture_once(
        app: Flask, world: World) -> None:
    """Two gateway replicas settling the same call, each with its own key: one capture;
    each answer is that capture or `conflict` "captured"; the money moved once."""
    token = _fund_ada(app, 5 * MICROS)
    hold = _place(app, token, "h", model=MODEL, max_input_tokens=100_000,
                  max_output_tokens=20_000)
    usage = {"input_tokens": 12_345, "cached_input_tokens": 2_345, "output_tokens": 1_001}
    cost = hs.cost(12_345, 2_345, 1_001)
    path = f"{BASE}/{hold['id']}/capture"
    replies = _race(app, [lambda c, i=i: _send(c, token, path, f"replica-{i}", usage)
                          for i in range(8)])

    done = [r for r in replies if r.status == 200]
    assert done and all(r.body == done[0].body for r in done)
    assert done[0].body["state"] == "captured" and hs.micros(done[0].body["cost"]) == cost
    assert not any(r.replayed for r in replies)  # each key ran once
    for r in replies:
        if r.status != 200:
            assert (r.status, r.code, r.body.get("state")) == (409, "conflict", "captured"), r
    books = _assert_sound(app)
    assert (books.wallet, books.held, books.spent) == (5 * MICROS - cost, 0, cost)
    assert books.holds == {"captured": 1} and books.usage == 1
    assert books.transfers == {"hold": 1, "hold_capture": 1, "hold_release": 1}


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite: one writer, no interleaving
def test_identical_captures_that_read_the_hold_together_answer_the_same(
        app: Flask, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequentially, the same usage captured again (another key) answers the capture
    (200). Concurrently it must too: here every capture has read the open hold before
    any of them claims it (a barrier after the read), so all but one lose the claim."""
    token = _fund_ada(app, 5 * MICROS)
    hold = _place(app, token, "h", model=MODEL, max_input_tokens=100_000,
                  max_output_tokens=20_000)
    usage = {"input_tokens": 12_345, "cached_input_tokens": 2_345, "output_tokens": 1_001}
    path = f"{BASE}/{hold['id']}/capture"
    together = threading.Barrier(4)
    read = hold_actions._cost_of

    def read_together(*args: Any) -> Any:
        together.wait(timeout=5)
        return read(*args)

    monkeypatch.setattr(hold_actions, "_cost_of", read_together)
    replies = _race(app, [lambda c, i=i: _send(c, token, path, f"replica-{i}", usage)
                          for i in range(4)])
    monkeypatch.undo()
    later = _send(app.test_client(), token, path, "replica-later", usage)
    assert later.status == 200  # sequentially: the same capture again answers it
    books = _assert_sound(app)
    assert books.holds == {"captured": 1} and books.usage == 1  # money moved once
    assert [(r.status, r.body) for r in replies] == [(200, later.body)] * 4, Counter(
        (r.status, r.code) for r in replies)


# -- captures and voids of one hold at once ------------------------------------------------

ROUNDS = 6
CAPTURERS = VOIDERS = 4


def test_captures_and_voids_of_one_hold_at_once_one_wins(app: Flask, world: World) -> None:
    """Per hold: four identical captures (one key, as a gateway's retries) and four voids
    (each its own key) at once. Either the capture wins (every capture answers it, every
    void is `conflict` "captured") or a void does (every void answers the release,
    every capture is `conflict` "voided"); the money moves for the winner only."""
    credit = 5 * MICROS
    token = _fund_ada(app, credit)
    usage = {"input_tokens": 40_000, "cached_input_tokens": 30_000, "output_tokens": 2_000}
    cost = hs.cost(40_000, 30_000, 2_000)  # 0.03 + 0.009 + 0.03 = 0.069
    winners: Counter[str] = Counter()
    for n in range(ROUNDS):
        before = _books(app)
        hold = _place(app, token, f"h{n}", model=MODEL, max_input_tokens=50_000,
                      max_output_tokens=10_000)  # 0.15 + 0.15 = 0.30
        amount = hs.micros(hold["amount"])
        assert amount == 300_000
        capture_path, void_path = (f"{BASE}/{hold['id']}/capture", f"{BASE}/{hold['id']}/void")
        works: list[Callable[[FlaskClient], Any]] = []
        for i in range(max(CAPTURERS, VOIDERS)):
            works.append(lambda c, path=capture_path, key=f"h{n}:c": (
                "capture", _send(c, token, path, key, usage)))
            works.append(lambda c, path=void_path, key=f"h{n}:v{i}": (
                "void", _send(c, token, path, key, {})))
        results = _race(app, works)
        captures = [r for what, r in results if what == "capture"]
        voids = [r for what, r in results if what == "void"]
        assert not [r for _, r in results if r.status >= 500], results
        after = _books(app)
        if captures[0].status == 200:
            winner, losers = "captured", voids
            assert all((r.status, r.body) == (200, captures[0].body) for r in captures)
            assert captures[0].body["state"] == "captured"
            assert hs.micros(captures[0].body["cost"]) == cost
            assert after.wallet == before.wallet - cost
            assert after.spent == before.spent + cost
            assert after.usage == before.usage + 1
        else:
            winner, losers = "voided", captures
            assert all(r.status == 200 and r.body["state"] == "voided"
                       and hs.micros(r.body["released"]) == amount for r in voids), voids
            assert after.wallet == before.wallet and after.spent == before.spent
            assert after.usage == before.usage
        for r in losers:
            assert (r.status, r.code, r.body.get("state")) == (409, "conflict", winner), r
        winners[winner] += 1
        assert after.holds == before.holds + Counter({winner: 1})
        assert after.held == before.held == 0
        assert after.transfers - before.transfers == Counter(
            {"hold": 1, "hold_release": 1, **({"hold_capture": 1} if winner == "captured"
                                             else {})})
        _assert_sound(app)
    print(f"\ncapture/void race: winners {dict(winners)}")
    final = _books(app)
    assert final.wallet == credit - winners["captured"] * cost
    assert sum(winners.values()) == ROUNDS


# -- an expiry sweep racing captures, on two instances -------------------------------------

ENGINEERS = [f"eng{n}@acme.test" for n in range(6)]
TTL = 60


def _sweep(app: Flask) -> int:
    """`wallet holds expire --org acme`: the command's own transaction and action."""
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None
        with atomic(s):
            return hold_actions.release_due(s, org=org)


def _states(app: Flask, ids: list[str]) -> dict[str, str]:
    with app.app_context():
        s = db.session()
        table = Hold.__table__  # type: ignore[attr-defined]
        found = {str(pid): str(state) for pid, state in s.execute(
            sa.select(table.c.public_id, table.c.state).where(table.c.public_id.in_(ids)))}
        s.rollback()
    return found


def test_an_expiry_sweep_racing_captures_moves_each_hold_once(
        app: Flask, second_app: Flask, world: World, fake_clock: clock.FakeClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One hold per engineer (six), expiring 60 to 65 s after they were placed.
    Instance A's clock is 1 s before the first expiry, instance B's 10 s after the last
    (two servers whose clocks straddle the expiry, or captures that arrive at the last
    moment): A captures every hold while B runs two sweeps (`wallet holds expire`) and
    places a new hold for the first engineer (a place sweeps that person's expired holds
    first), all at once. Each hold ends captured or expired, never both; its money moved
    once; the rounds repeat so both outcomes come up."""
    credit, amount, cost = 5 * MICROS, 500_000, 123_456
    token = _fund_ada(app, credit, *ENGINEERS)
    outcomes: Counter[str] = Counter()
    for n in range(3):
        holds = [_place(app, token, f"r{n}-{i}", person=email, amount=hs.money(amount),
                        ttl_seconds=TTL + i) for i, email in enumerate(ENGINEERS)]
        before = {email: _books(app, email) for email in ENGINEERS}
        placed_at = fake_clock.now()
        fake_clock.advance(seconds=TTL - 1)
        clock.install(second_app, clock.FakeClock(placed_at + timedelta(seconds=TTL + 10)))

        def capture(client: FlaskClient, hold: dict[str, Any]) -> tuple[str, Any]:
            return "capture", _send(client, token, f"{BASE}/{hold['id']}/capture",
                                    f"{hold['id']}:capture", {"amount": hs.money(cost)})

        works: list[Callable[[FlaskClient], Any]] = [
            lambda c, h=h: capture(c, h) for h in holds]
        works += [lambda _c: ("sweep", _sweep(second_app))] * 2
        works.append(lambda _c, key=f"after-{n}": ("place", _send(
            second_app.test_client(), token, BASE, key,
            {"person": ENGINEERS[0], "amount": hs.money(amount)})))
        results = _race(app, works)

        replies = dict(zip([h["id"] for h in holds], [r for _, r in results[:len(holds)]],
                           strict=True))
        captured = {hid for hid, r in replies.items() if r.status == 200}
        for r in replies.values():
            if r.status == 200:
                assert r.body["state"] == "captured" and hs.micros(r.body["cost"]) == cost
                assert hs.micros(r.body["released"]) == amount - cost
            else:
                assert (r.status, r.code, r.body.get("state")) == (409, "conflict",
                                                                   "expired"), r
        swept = sum(r for what, r in results if what == "sweep")
        placed = results[-1][1]
        assert placed.status == 201, placed.body
        # The sweeps (and the place, for its engineer) released every hold the captures
        # did not take, each once.
        assert swept + int(holds[0]["id"] not in captured) >= len(holds) - len(captured)
        assert swept <= len(holds) - len(captured)
        assert _states(app, [h["id"] for h in holds]) == {
            h["id"]: "captured" if h["id"] in captured else "expired" for h in holds}
        for hold, email in zip(holds, ENGINEERS, strict=True):
            after, was = _assert_sound(app, email), before[email]
            took = cost if hold["id"] in captured else 0
            new = amount if email == ENGINEERS[0] else 0  # the place's new hold
            assert after.held == was.held - amount + new == after.open_total
            assert after.wallet == was.wallet + amount - took - new
            state = "captured" if took else "expired"
            assert after.holds == was.holds - Counter({"open": 1}) + Counter(
                {state: 1, **({"open": 1} if new else {})})
        outcomes.update("captured" if h["id"] in captured else "expired" for h in holds)
        # Nothing is left to sweep on either clock; the CLI says so.
        assert _sweep(app) == 0
        cli = support.run_cli(second_app, capsys, "holds", "expire", "--org", "acme", "--json")
        assert cli.exit_code == 0 and json.loads(cli.out) == {"org": "acme", "released": 0}
        # Settle the new hold, so the next round starts with open holds of its own only.
        void = _send(app.test_client(), token, f"{BASE}/{placed.body['id']}/void",
                     f"after-{n}:void", {})
        assert void.status == 200, void.body
        fake_clock.advance(seconds=20)
    print(f"\nexpiry race: holds by outcome {dict(outcomes)}")
    final = _books(app)
    assert final.transfers == Counter({"hold": 7 * 3, "hold_capture": outcomes["captured"],
                                       "hold_release": 7 * 3})  # (a count of 0: absent)


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite: one writer, no interleaving
def test_a_sweep_of_two_holds_and_a_capture_of_the_second_do_not_deadlock(
        app: Flask, second_app: Flask, world: World, fake_clock: clock.FakeClock,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ada's holds h1 (60 s) and h2 (62 s). Instance A at 61 s captures h2 (still open by
    its clock) and has claimed the row when instance B at 70 s sweeps (h1 then h2, both
    due by its clock): B releases h1 (locking ada's wallet and held accounts), then waits
    for h2's row; A's capture then needs those accounts. docs/gateway.md: "concurrent
    holds and captures of one person cannot deadlock". Expected: the capture settles h2
    (200) and the sweep releases h1 only, neither fails."""
    token = _fund_ada(app, 5 * MICROS)
    h1 = _place(app, token, "h1", amount="1.00", ttl_seconds=60)
    h2 = _place(app, token, "h2", amount="2.00", ttl_seconds=62)
    fake_clock.advance(seconds=61)
    clock.install(second_app, clock.FakeClock(START + timedelta(seconds=70)))
    claimed, released_one = threading.Event(), threading.Event()
    post_capture, release = hold_actions._post_capture, hold_actions._release

    def capture_after_a_release(*args: Any) -> Any:
        claimed.set()  # h2's row is claimed (locked) in this transaction
        released_one.wait(timeout=3)
        return post_capture(*args)

    def release_and_say(*args: Any) -> Any:
        release(*args)
        released_one.set()

    monkeypatch.setattr(hold_actions, "_post_capture", capture_after_a_release)
    monkeypatch.setattr(hold_actions, "_release", release_and_say)
    failures: list[BaseException] = []

    def sweep_after_the_claim(_client: FlaskClient) -> int | None:
        claimed.wait(timeout=3)
        try:
            return _sweep(second_app)
        except Exception as err:  # reported below
            failures.append(err)
            return None

    capture, swept = _race(app, [
        lambda c: _send(c, token, f"{BASE}/{h2['id']}/capture", "h2:capture",
                        {"amount": "0.50"}),
        sweep_after_the_claim])
    monkeypatch.undo()
    books = _assert_sound(app)
    assert not failures, failures
    assert capture.status == 200, capture.body
    assert swept == 1
    assert _states(app, [h1["id"], h2["id"]]) == {h1["id"]: "expired", h2["id"]: "captured"}
    assert (books.wallet, books.held, books.spent) == (4_500_000, 0, 500_000)
