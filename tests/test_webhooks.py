"""Webhooks end to end on both databases: events written in the business transaction,
signed deliveries to a real HTTP server on loopback (verified with the independent
`standardwebhooks` package), retries on the spec's schedule, giving up, one attempt per
due delivery however many workers sweep, and the sweep of reminders."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from standardwebhooks.webhooks import Webhook

from tests import support
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import usage as usage_actions
from wallet.actions import webhooks
from wallet.actions._base import Actor
from wallet.core import webhooks as core
from wallet.core.vesting import add_months
from wallet.models import Grant, WebhookDelivery, WebhookMessage
from wallet.store import people

CLI = Actor.cli()


class Receiver:
    """A webhook receiver on 127.0.0.1: records every request, answers the statuses
    queued (200 once they run out)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.lock = threading.Lock()
        self.delay = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with owner.lock:
                    owner.requests.append(({k.lower(): v for k, v in self.headers.items()},
                                           body))
                    status = owner.statuses.pop(0) if owner.statuses else 200
                if owner.delay:
                    threading.Event().wait(owner.delay)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def app_config(db_url: str, tmp_path: Any) -> dict[str, Any]:
    # Loopback endpoints: the private-address policy allows them for these tests only.
    return support.test_config(db_url, tmp_path, WALLET_FEDERATION_ALLOW_PRIVATE=True,
                               WALLET_FEDERATION_ALLOW_HTTP=True)


def _endpoint(app: Flask, url: str, *types: str, slug: str = "acme") -> webhooks.Created:
    with app.app_context():
        return webhooks.create_endpoint(db.session(), slug=slug, url=url,
                                        types=types or list(core.EVENT_TYPES), actor=CLI)


def _deliver(app: Flask) -> int:
    with app.app_context():
        return webhooks.deliver_due(db.session())


def _deliveries(app: Flask) -> list[WebhookDelivery]:
    with app.app_context():
        s = db.session()
        return list(s.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))


def _messages(app: Flask) -> list[dict[str, Any]]:
    with app.app_context():
        rows = db.session().scalars(sa.select(WebhookMessage).order_by(WebhookMessage.id))
        return [json.loads(m.body) for m in rows]


def _spend(app: Flask, email: str, micros: int, key: str) -> None:
    """Record usage of gpt-4o costing `micros` (2.50 per million input tokens)."""
    with app.app_context():
        usage_actions.record_usage(db.session(), slug="acme", email=email, model="gpt-4o",
                                   input_tokens=micros * 2 // 5, output_tokens=0,
                                   idempotency_key=key, actor=CLI)


def _grant(app: Flask, email: str, amount: str) -> None:
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=email, amount=amount,
                                   actor=CLI)


# -- signing and delivery ------------------------------------------------------------------


def test_a_test_event_is_delivered_signed(app: Flask, world: support.World,
                                          receiver: Receiver) -> None:
    created = _endpoint(app, receiver.url, "note.redeemed")
    assert created.secret.startswith("whsec_")
    with app.app_context():
        webhooks.send_test(db.session(), slug="acme", public_id=created.endpoint.public_id,
                           actor=CLI)
    assert _deliver(app) == 1
    [(headers, body)] = receiver.requests
    payload = Webhook(created.secret).verify(body, headers)  # the independent verifier
    assert payload["type"] == "webhook.test" and payload["data"]["organisation"] == "acme"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"].startswith("msg_")
    [delivery] = _deliveries(app)
    assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert _deliver(app) == 0  # delivered once


def test_the_secret_is_sealed_at_rest(app: Flask, world: support.World) -> None:
    created = _endpoint(app, "https://hooks.example.test/x", "note.redeemed")
    with app.app_context():
        stored = db.session().scalar(sa.text("SELECT secret_sealed FROM webhook_endpoint"))
    assert created.secret not in stored and created.secret[6:] not in stored


def test_business_events_are_delivered(app: Flask, world: support.World,
                                       receiver: Receiver) -> None:
    created = _endpoint(app, receiver.url, "tranche.vested", "balance.low")
    start = add_months(date.today(), -2)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob, amount="24.00",
                                   start=start, every="month", months=12, actor=CLI)
    vested = [m for m in _messages(app) if m["type"] == "tranche.vested"]
    assert len(vested) == 2  # one per tranche due by today (start + 1 and + 2 months)
    assert {m["data"]["person"] for m in vested} == {world.bob}
    assert {m["data"]["amount"] for m in vested} == {"2.00"}
    # 4.00 available, threshold 10.00: already below, so spending crosses nothing.
    _spend(app, world.bob, 1_000_000, "u1")
    assert [m["type"] for m in _messages(app)].count("balance.low") == 0
    _grant(app, world.bob, "20.00")  # 23.00
    _spend(app, world.bob, 10_000_000, "u2")  # 13.00: above
    _spend(app, world.bob, 6_000_000, "u3")  # 7.00: crossed
    _spend(app, world.bob, 1_000_000, "u4")  # 6.00: still below, no second event
    low = [m for m in _messages(app) if m["type"] == "balance.low"]
    assert [m["data"] for m in low] == [{"person": world.bob, "available": "7.00",
                                         "currency": "USD", "threshold": "10.00"}]
    assert _deliver(app) == 3
    for headers, body in receiver.requests:
        Webhook(created.secret).verify(body, headers)
    support.assert_ledger_sound(app)


def test_an_event_is_rolled_back_with_its_business_change(
        app: Flask, world: support.World, monkeypatch: pytest.MonkeyPatch) -> None:
    _endpoint(app, "https://hooks.example.test/x", "tranche.vested")
    real = webhooks.tranches_vested

    def then_fail(session: Any, **kwargs: Any) -> int:
        assert real(session, **kwargs) > 0  # the event is written...
        raise RuntimeError("the grant fails after its event was written")

    monkeypatch.setattr(webhooks, "tranches_vested", then_fail)
    with app.app_context(), pytest.raises(RuntimeError):
        grant_actions.create_grant(db.session(), slug="acme", email=world.bob,
                                   amount="24.00", start=add_months(date.today(), -2),
                                   every="month", months=12, actor=CLI)
    with app.app_context():
        s = db.session()
        assert s.scalar(sa.select(sa.func.count()).select_from(Grant)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(WebhookMessage)) == 0  # ...and gone
        assert s.scalar(sa.select(sa.func.count()).select_from(WebhookDelivery)) == 0
    support.assert_ledger_sound(app)


def test_no_endpoint_no_message(app: Flask, world: support.World) -> None:
    _grant(app, world.bob, "20.00")
    _spend(app, world.bob, 15_000_000, "u1")
    assert _messages(app) == []


# -- retries -------------------------------------------------------------------------------


def test_a_500_is_retried_with_backoff_then_delivered(app: Flask, world: support.World,
                                                     receiver: Receiver) -> None:
    fake = clock.install(app, clock.FakeClock(datetime.now(UTC)))
    assert isinstance(fake, clock.FakeClock)
    created = _endpoint(app, receiver.url, "balance.low")
    with app.app_context():
        webhooks.send_test(db.session(), slug="acme", public_id=created.endpoint.public_id,
                           actor=CLI)
    receiver.statuses = [500, 503]
    assert _deliver(app) == 1
    [d] = _deliveries(app)
    assert (d.state, d.attempts, d.last_status, d.last_error) == ("pending", 1, 500,
                                                                  "HTTP 500")
    assert d.next_attempt_at == fake.now() + timedelta(seconds=5)
    assert _deliver(app) == 0  # not due yet
    fake.advance(5)
    assert _deliver(app) == 1
    [d] = _deliveries(app)
    assert (d.state, d.attempts, d.last_status) == ("pending", 2, 503)
    assert d.next_attempt_at == fake.now() + timedelta(minutes=5)
    fake.advance(minutes=4)
    assert _deliver(app) == 0
    fake.advance(minutes=1)
    assert _deliver(app) == 1
    [d] = _deliveries(app)
    assert (d.state, d.attempts, d.last_status) == ("delivered", 3, 200)
    ids = {h["webhook-id"] for h, _b in receiver.requests}
    stamps = [int(h["webhook-timestamp"]) for h, _b in receiver.requests]
    assert len(ids) == 1 and len(receiver.requests) == 3  # the same message, three attempts
    assert stamps == sorted(stamps) and stamps[0] < stamps[-1]  # each attempt signed anew


@pytest.fixture
def no_breaker(app_config: dict[str, Any]) -> None:
    # The transport's breaker would answer for the endpoint after five failures in a row
    # (for 30 s of real time, which the fake clock does not move): off, so that every
    # attempt reaches the receiver.
    app_config["WALLET_PEER_BREAKER_FAILURES"] = 0


@pytest.mark.usefixtures("no_breaker")
def test_gives_up_after_the_last_attempt(app: Flask, world: support.World,
                                         receiver: Receiver) -> None:
    fake = clock.install(app, clock.FakeClock(datetime.now(UTC)))
    assert isinstance(fake, clock.FakeClock)
    created = _endpoint(app, receiver.url, "balance.low")
    with app.app_context():
        webhooks.send_test(db.session(), slug="acme", public_id=created.endpoint.public_id,
                           actor=CLI)
    receiver.statuses = [500] * 20
    for wait in core.RETRY_DELAYS:
        assert _deliver(app) == 1
        fake.advance(wait.total_seconds())
    assert _deliver(app) == 1  # the eighth and last
    [d] = _deliveries(app)
    assert (d.state, d.attempts, d.last_status) == ("failed", core.MAX_ATTEMPTS, 500)
    assert d.closed_at is not None
    fake.advance(days=30)
    assert _deliver(app) == 0 and len(receiver.requests) == core.MAX_ATTEMPTS


def test_an_unreachable_endpoint_is_retried(app: Flask, world: support.World) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    created = _endpoint(app, f"http://127.0.0.1:{port}/gone", "balance.low")
    with app.app_context():
        webhooks.send_test(db.session(), slug="acme", public_id=created.endpoint.public_id,
                           actor=CLI)
    assert _deliver(app) == 1
    [d] = _deliveries(app)
    assert (d.state, d.attempts, d.last_status) == ("pending", 1, None)
    assert "could not be reached" in d.last_error


@pytest.fixture
def no_private(app_config: dict[str, Any]) -> None:
    app_config["WALLET_FEDERATION_ALLOW_PRIVATE"] = False


@pytest.mark.usefixtures("no_private")
def test_private_addresses_are_refused_unless_allowed(app: Flask, world: support.World,
                                                      receiver: Receiver) -> None:
    created = _endpoint(app, receiver.url, "balance.low")  # an admin may type it...
    with app.app_context():
        webhooks.send_test(db.session(), slug="acme", public_id=created.endpoint.public_id,
                           actor=CLI)
    assert _deliver(app) == 1
    [d] = _deliveries(app)
    assert "not a public address" in d.last_error  # ...but nothing is sent there
    assert receiver.requests == []


# -- one attempt, however many workers -----------------------------------------------------


def test_two_workers_deliver_each_message_once(app: Flask, world: support.World,
                                               receiver: Receiver) -> None:
    created = _endpoint(app, receiver.url, "balance.low")
    with app.app_context():
        for _ in range(6):
            webhooks.send_test(db.session(), slug="acme",
                               public_id=created.endpoint.public_id, actor=CLI)
    receiver.delay = 0.05  # so the two sweeps overlap
    start = threading.Barrier(2)
    tried: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                start.wait()
                tried.append(webhooks.deliver_due(db.session()))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(tried) == 6
    ids = [h["webhook-id"] for h, _b in receiver.requests]
    assert len(ids) == 6 and len(set(ids)) == 6  # each message POSTed exactly once
    assert {d.state for d in _deliveries(app)} == {"delivered"}
    assert {d.attempts for d in _deliveries(app)} == {1}


# -- reminders -----------------------------------------------------------------------------


def test_reminders_are_emitted_once(app: Flask, world: support.World) -> None:
    from tests import notes_support

    _endpoint(app, "https://hooks.example.test/x", "note.expiring", "alumni.window_closing")
    fake = clock.install(app, clock.FakeClock(datetime.now(UTC)))
    assert isinstance(fake, clock.FakeClock)
    notes_support.generate_key(app)
    notes_support.give(app, "20.00", email=world.ada)
    soon = notes_support.export(app, "5.00", email=world.ada).jti
    fake.advance(days=30)
    notes_support.export(app, "5.00", email=world.ada)  # expires 30 days after the first
    fake.advance(days=330)  # the first expires in 5 days, the second in 35
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug="acme")
        assert org is not None and org.id is not None
        found = people.member_by_email(s, org_id=org.id, email=world.bob)
        assert found is not None
        membership = found[0]
        membership.ended_on = clock.today() - timedelta(days=org.alumni_days - 10)
        s.add(membership)
        s.commit()
    with app.app_context():
        assert webhooks.remind_due(db.session()) == 2
        assert webhooks.remind_due(db.session()) == 0  # once per note and person
    fake.advance(days=1)
    with app.app_context():
        assert webhooks.remind_due(db.session()) == 0  # the next day too
    by_type = {m["type"]: m["data"] for m in _messages(app)}
    assert by_type["note.expiring"]["note"] == soon
    assert by_type["note.expiring"]["amount"] == "5.00"
    assert by_type["note.expiring"]["person"] == world.ada
    assert by_type["alumni.window_closing"]["person"] == world.bob
    assert by_type["alumni.window_closing"]["window_closes_on"] == (
        clock_today(app) + timedelta(days=9)).isoformat()
    support.assert_ledger_sound(app)


def clock_today(app: Flask) -> date:
    with app.app_context():
        return clock.today()


def test_redeem_and_honour_emit_on_each_side(app: Flask, client: Any,
                                             receiver: Receiver) -> None:
    from tests import fed_support as fs

    fed = fs.setup_federation(app)
    acme = _endpoint(app, receiver.url + "/acme", "note.redeemed", "honour.completed")
    globex = _endpoint(app, receiver.url + "/globex", "note.redeemed", "honour.completed",
                       slug="globex")
    note = fs.export(app, fed.holder, "12.50")
    answer = fs.bring(fed, client, note)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    with app.app_context():
        rows = db.session().execute(sa.select(WebhookMessage.org_id, WebhookMessage.body)
                                    .order_by(WebhookMessage.id)).all()
    acme_id = fs.org_id(app, "acme")
    events = {("acme" if r.org_id == acme_id else "globex", json.loads(r.body)["type"]):
              json.loads(r.body)["data"] for r in rows}
    assert set(events) == {("acme", "note.redeemed"), ("globex", "honour.completed")}
    assert events["acme", "note.redeemed"] == {
        "note": note.jti, "redeemed_by": fs.issuer("globex"), "amount": "12.50",
        "currency": "USD"}
    assert events["globex", "honour.completed"] == {
        "note": note.jti, "issuer": fs.issuer("acme"), "person": fs.ADA, "amount": "12.50",
        "currency": "USD"}
    assert _deliver(app) == 2
    for headers, body in receiver.requests:  # each organisation's secret signs its own
        secret = acme.secret if json.loads(body)["type"] == "note.redeemed" else globex.secret
        Webhook(secret).verify(body, headers)
    support.assert_ledger_sound(app)


def test_a_hold_capture_that_crosses_the_threshold_emits_once(
        app: Flask, world: support.World) -> None:
    from wallet.actions import holds as hold_actions
    from wallet.actions._base import commit

    _endpoint(app, "https://hooks.example.test/x", "balance.low")
    _grant(app, world.bob, "12.00")

    def call(key: str, held: str, cost: str) -> None:
        before = len(_messages(app))
        with app.app_context():
            s = db.session()
            placed = hold_actions.place(s, slug="acme", body={"person": world.bob,
                                                              "amount": held},
                                        idempotency_key=key, actor=CLI)
            commit(s)
            assert len(_messages(app)) == before  # a hold is not a spend
            hold_actions.capture(s, slug="acme", hold_id=placed.hold.public_id,
                                 body={"amount": cost}, actor=CLI)
            commit(s)

    call("h1", "5.00", "1.00")  # 11.00: above
    assert _messages(app) == []
    call("h2", "5.00", "2.00")  # 9.00: crossed
    call("h3", "1.00", "1.00")  # 8.00: still below
    assert [m["data"]["available"] for m in _messages(app)] == ["9.00"]
    support.assert_ledger_sound(app)
