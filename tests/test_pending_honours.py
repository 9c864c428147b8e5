"""Honour while the issuer sleeps (docs/federation.md, "When the issuer sleeps"), on both
databases: a verified note whose issuer cannot be reached answers 202 and waits as a
pending honour (nothing credited, the nonce spent); the retry job redeems it once the
issuer is back and credits exactly once, however many tries race; a refusal or the
note's expiry ends it; the engineer sees its state in the API and the portal. Every
test ends with both ledgers sound (the `app` fixture checks them too)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from wallet import clock, db, jobs
from wallet.actions import notes as note_actions
from wallet.actions import pending
from wallet.actions._base import Actor
from wallet.core.errors import IssuerUnavailable
from wallet.models import PendingHonour
from wallet.store import pending as pending_store


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _down(method: str, url: str, forward: Callable[[], Any]) -> Any:
    raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] Connection refused")


def _redeem_down(method: str, url: str, forward: Callable[[], Any]) -> Any:
    if fs.is_redeem(url):
        raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] Connection refused")
    return forward()


class World:
    """acme issues, globex honours; ada holds a note; the clock moves only when told."""

    def __init__(self, app: Flask, client: FlaskClient, fault: Callable[..., Any]) -> None:
        self.app, self.client = app, client
        self.clock = clock.install(app, clock.FakeClock())
        assert isinstance(self.clock, clock.FakeClock)
        self.fed = fs.setup_federation(app)
        self.note = fs.export(app, self.fed.holder)
        self.token = self.fed.token("globex")
        self.presentations = [fs.present(self.note.token, self.fed.holder, "globex",
                                         fs.nonce(client, "globex", self.token),
                                         iat=int(self.clock.now().timestamp()))]
        self.transport = fs.FaultTransport(fault).install(app)

    def honour(self, key: str = "first") -> Any:
        return fs.honour(self.client, "globex", self.token, self.presentations, key=key)

    def status(self, url: str, token: str | None = None) -> Any:
        path = url.removeprefix(fs.BASE_URL)
        return self.client.get(path, headers={"Authorization": f"Bearer {token or self.token}"})

    def row(self) -> PendingHonour:
        with self.app.app_context():
            s = db.session()
            found = s.scalars(sa.select(PendingHonour)).one()
            s.expunge(found)  # kept as read: the rollback below would expire it
            s.rollback()
            return found

    def back(self, after: float) -> None:
        """The issuer answers again, `after` seconds later."""
        self.transport.fault = None
        self.clock.advance(after)


def _pending_answer(answer: Any) -> str:
    assert answer.status_code == 202, answer.get_data(as_text=True)
    data = answer.get_json()
    assert data["state"] == "pending" and data["honoured"] == 0
    (result,) = data["results"]
    assert result["state"] == "pending" and result["status_url"] == data["status_url"]
    assert "error" not in result
    return str(data["status_url"])


def _nothing_moved(w: World) -> None:
    assert fs.note_state(w.app, w.note.jti) == "active"
    assert fs.wallet_balance(w.app, "globex") == 0
    assert fs.count(w.app, "HonouredNote") == 0
    assert fs.count(w.app, "Transfer", kind="honour") == 0
    fs.assert_sound(w.app)


def _exactly_once(w: World) -> None:
    assert fs.note_state(w.app, w.note.jti) == "redeemed"
    assert fs.count(w.app, "Redemption") == 1
    assert fs.count(w.app, "HonouredNote", note_jti=w.note.jti) == 1
    assert fs.count(w.app, "Transfer", kind="honour") == 1
    assert fs.count(w.app, "Transfer", kind="redeem") == 1
    assert fs.wallet_balance(w.app, "globex") == w.note.amount
    fs.assert_sound(w.app)


# -- the issuer sleeps, wakes up, and the engineer is credited once ---------------------------


@pytest.mark.parametrize("fault", [_down, _redeem_down], ids=["all-down", "redeem-down"])
def test_issuer_down_then_back_the_retry_job_credits_exactly_once(
        app: Flask, client: FlaskClient, fault: Callable[..., Any]) -> None:
    w = World(app, client, fault)
    url = _pending_answer(w.honour())
    _nothing_moved(w)
    shown = w.status(url)
    assert shown.status_code == 200 and shown.get_json()["state"] == "pending"
    assert shown.get_json()["amount"] == {"value": "100.00", "currency": "USD"}
    # The same key replays the same answer; the nonce is spent for anyone else's request.
    replay = w.honour()
    assert replay.status_code == 202 and replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json()["status_url"] == url
    assert fs.code_of(w.honour(key="another")) == "nonce_invalid"
    assert jobs.retry_pending(app) == 0  # not due yet: its first try is 30 s away

    # The issuer is back 20 minutes later: past the 15 minutes it forgives a forwarded
    # presentation, which only the request's "pending" mark lets through.
    w.back(after=20 * 60)
    with ThreadPoolExecutor(2) as pool:  # two workers take the same sweep at once
        tried = list(pool.map(lambda _i: jobs.retry_pending(app), range(2)))
    assert sorted(tried) == [0, 1]
    _exactly_once(w)
    done = w.status(url).get_json()
    assert done["state"] == "honoured" and done["attempts"] == 1 and "error" not in done
    assert w.row().honoured_id is not None
    assert jobs.retry_pending(app) == 0
    w.clock.advance(hours=2)
    assert jobs.retry_pending(app) == 0  # finished rows are never tried again
    _exactly_once(w)


def test_two_tries_racing_past_their_claim_still_credit_once(
        app: Flask, client: FlaskClient) -> None:
    """Even two tries that both run (a worker whose lease ran out while a second took
    over) credit once: the issuer hands both the same receipt, the honoured-note row and
    the transfer key are unique, and the row is finished by one conditional update."""
    w = World(app, client, _down)
    url = _pending_answer(w.honour())
    w.back(after=60)
    row = w.row()

    def attempt(_i: int) -> str:
        with app.app_context():
            return pending.attempt(db.session(), row)

    with ThreadPoolExecutor(2) as pool:
        states = list(pool.map(attempt, range(2)))
    assert states == ["honoured", "honoured"]
    _exactly_once(w)
    assert w.status(url).get_json()["state"] == "honoured"


def test_the_backoff_doubles_while_the_issuer_stays_down(app: Flask,
                                                         client: FlaskClient) -> None:
    w = World(app, client, _down)
    _pending_answer(w.honour())
    gaps = []
    for _ in range(4):
        before = w.row().next_attempt_at
        w.clock.set(before)
        assert jobs.retry_pending(app) == 1
        gaps.append((w.row().next_attempt_at - before).total_seconds())
    assert gaps == [60, 120, 240, 480]
    assert w.row().state == "pending" and w.row().attempts == 4
    assert "could not be reached" in w.row().last_error
    _nothing_moved(w)


def test_a_lost_retry_job_changes_nothing_the_next_sweep_finds_the_row(
        app: Flask, client: FlaskClient) -> None:
    w = World(app, client, _down)
    _pending_answer(w.honour())
    queue = jobs.queue(app)
    assert queue.enqueue("retry_honour", w.row().id)
    queue.huey.flush()  # the queued job is lost
    w.back(after=31)
    assert jobs.retry_honour(app, w.row().id) == 1  # run by hand, as a duplicate would
    assert jobs.retry_honour(app, w.row().id) == 0  # and again: nothing is due
    _exactly_once(w)


# -- it ends without a credit: refused, or expired ---------------------------------------------


def test_a_refusal_by_the_issuer_ends_it_as_refused_with_the_reason(
        app: Flask, client: FlaskClient) -> None:
    w = World(app, client, _down)
    url = _pending_answer(w.honour())
    with app.app_context():  # while it waits, acme revokes the note
        note_actions.revoke(db.session(), slug="acme", jti=w.note.jti,
                            reason="issued by mistake", actor=Actor.cli())
    w.back(after=31)
    assert jobs.retry_pending(app) == 1
    shown = w.status(url).get_json()
    assert shown["state"] == "refused"
    assert shown["error"]["code"] == "revoked"
    assert "issuer refused" in shown["error"]["message"]
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0
    w.clock.advance(hours=2)
    assert jobs.retry_pending(app) == 0
    fs.assert_sound(app)


@pytest.mark.parametrize("issuer_back", [False, True], ids=["still-down", "back-too-late"])
def test_a_note_that_expires_while_waiting_ends_it_as_expired(
        app: Flask, client: FlaskClient, issuer_back: bool) -> None:
    w = World(app, client, _down)
    url = _pending_answer(w.honour())
    with app.app_context():
        expires = pending_store.by_id(db.session(), pending_id=w.row().id or 0)
        assert expires is not None
        w.clock.set(expires.note_expires_at)
    w.clock.advance(600)  # well past its expiry and the clock skew allowed
    if issuer_back:
        w.transport.fault = None
    assert jobs.retry_pending(app) == 1
    shown = w.status(url).get_json()
    assert shown["state"] == "expired" and shown["error"]["code"] == "expired"
    _nothing_moved(w)


# -- who sees it ------------------------------------------------------------------------------


def test_only_the_engineer_sees_their_pending_honour(app: Flask, client: FlaskClient) -> None:
    w = World(app, client, _down)
    url = _pending_answer(w.honour())
    with app.app_context():
        from wallet.actions import orgs

        orgs.add_person(db.session(), slug="globex", email="eve@example.test",
                        password=support.PASSWORD, actor=Actor.cli())
    eve = fs.api_token(app, "globex", "eve@example.test")
    assert w.status(url, token=eve).status_code == 404
    assert w.status(url + "x").status_code == 404


def test_the_bring_credits_page_lists_pending_honours_with_their_state(
        app: Flask, client: FlaskClient) -> None:
    w = World(app, client, _redeem_down)
    _pending_answer(w.honour())
    support.login(client, fs.ADA)
    page = client.get("/orgs/globex/bring").get_data(as_text=True)
    assert 'data-testid="pending"' in page and "Pending credits" in page
    assert 'data-state="pending"' in page and "has not answered yet. Next try:" in page
    w.back(after=31)
    assert jobs.retry_pending(app) == 1
    page = client.get("/orgs/globex/bring").get_data(as_text=True)
    assert 'data-state="honoured"' in page and "credited" in page


def test_pending_honours_off_answers_503_and_keeps_nothing(app: Flask,
                                                          client: FlaskClient) -> None:
    app.config["WALLET_PENDING_HONOURS"] = False
    w = World(app, client, _redeem_down)
    answer = w.honour()
    assert answer.status_code == 503 and fs.code_of(answer) == "issuer_unavailable"
    assert fs.count(app, "PendingHonour") == 0
    _nothing_moved(w)
