"""Fault injection between verifier and issuer, on both databases.

The cases and what each must leave behind: docs/federation.md, "When things fail".

Faults wrap the real in-process transport at `app.extensions["wallet.transport"]`, and two
tests use the real `HttpTransport` against sockets on 127.0.0.1 (refused, and too slow).
Every case ends with both ledgers sound (the `app` fixture checks), the note redeemed at
most once and ada credited at most once — exactly once when a retry completes.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from wallet.core.errors import IssuerUnavailable
from wallet.peers import Fetched


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """Pending honours off: these tests pin what a honour answers at once when its issuer
    fails (503 `issuer_unavailable`, nothing kept); with them on, such a note waits
    instead (tests/test_pending_honours.py)."""
    return support.test_config(db_url, tmp_path, WALLET_PENDING_HONOURS=False)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def _at_most_once(app: Flask, note: fs.Exported) -> None:
    assert fs.count(app, "Redemption") <= 1
    assert fs.count(app, "HonouredNote", note_jti=note.jti) <= 1
    assert fs.wallet_balance(app, "globex") in (0, note.amount)
    fs.assert_sound(app)


def _exactly_once(app: Flask, note: fs.Exported) -> None:
    assert fs.note_state(app, note.jti) == "redeemed"
    assert fs.count(app, "Redemption") == 1
    assert fs.count(app, "HonouredNote", note_jti=note.jti) == 1
    assert fs.wallet_balance(app, "globex") == note.amount
    assert fs.count(app, "Transfer", kind="honour") == 1
    assert fs.count(app, "Transfer", kind="redeem") == 1
    fs.assert_sound(app)


class Request:
    """One presentation request that can be sent, and retried byte-identically."""

    def __init__(self, fed: fs.Fed, client: FlaskClient, note: fs.Exported) -> None:
        self.client, self.token = client, fed.token("globex")
        self.presentations = [fs.present(note.token, fed.holder, "globex",
                                         fs.nonce(client, "globex", self.token))]
        self.key = f"retry-{note.jti[-12:]}"

    def send(self, client: FlaskClient | None = None) -> Any:
        return fs.honour(client or self.client, "globex", self.token, self.presentations,
                         key=self.key)


def _problem(answer: Any, status: int, code: str) -> None:
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert answer.mimetype == "application/problem+json"
    assert fs.code_of(answer) == code


def _down(method: str, url: str, forward: Callable[[], Any]) -> Any:
    raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] Connection refused")


def _redeem_down(method: str, url: str, forward: Callable[[], Any]) -> Any:
    if fs.is_redeem(url):
        raise IssuerUnavailable(f"{url} could not be reached: [Errno 111] Connection refused")
    return forward()


# -- (a) the issuer is down ----------------------------------------------------------------


@pytest.mark.parametrize("fault", [_down, _redeem_down], ids=["all-down", "redeem-down"])
def test_issuer_down_credits_nothing_and_a_retry_with_the_same_key_completes(
        app: Flask, client: FlaskClient, fault: Callable[..., Any]) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    transport = fs.FaultTransport(fault).install(app)

    failed = request.send()

    _problem(failed, 503, "issuer_unavailable")
    assert transport.calls, "the verifier never tried the issuer"
    assert fs.note_state(app, note.jti) == "active"
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0
    _at_most_once(app, note)

    transport.fault = None  # the issuer is back
    retried = request.send()

    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert "Idempotent-Replayed" not in retried.headers  # it ran again, it was not replayed
    _exactly_once(app, note)
    replay = request.send()  # and from now on the key answers the stored success
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    _exactly_once(app, note)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pin_redeem_endpoint(app: Flask, verifier: str, url: str) -> str:
    """Point `verifier`'s pinned redeem endpoint for acme at `url`; return the old one."""
    from wallet import db
    from wallet.models import TrustedIssuer
    from wallet.store import people

    with app.app_context():
        s = db.session()
        entry = s.execute(sa.select(TrustedIssuer).where(
            TrustedIssuer.org_id == fs.org_id(app, verifier),
            TrustedIssuer.issuer == fs.ACME)).scalar_one()
        old = str(entry.issuer_metadata["redeem_endpoint"])
        entry.issuer_metadata = {**entry.issuer_metadata, "redeem_endpoint": url}
        s.add(entry)
        people.bump_config(s, org_id=entry.org_id)  # as every change to a trust entry must
        s.commit()
        return old


def test_issuer_refusing_connections_over_real_http(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    original = _pin_redeem_endpoint(
        app, "globex", f"http://127.0.0.1:{_free_port()}/api/v1/orgs/acme/redeem")

    failed = request.send()

    _problem(failed, 503, "issuer_unavailable")
    assert "could not be reached" in failed.get_json()["results"][0]["error"]["message"]
    assert fs.note_state(app, note.jti) == "active"
    _at_most_once(app, note)
    _pin_redeem_endpoint(app, "globex", original)
    assert request.send().status_code == 200
    _exactly_once(app, note)


# -- (b) the issuer is slower than the timeout ---------------------------------------------


def test_issuer_slower_than_the_timeout(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)

    def slow(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if fs.is_redeem(url):  # what HttpTransport does when the socket times out
            time.sleep(0.5)
            raise IssuerUnavailable(f"{url} could not be reached: timed out")
        return forward()

    transport = fs.FaultTransport(slow).install(app)
    started = time.monotonic()
    failed = request.send()

    assert time.monotonic() - started >= 0.5
    _problem(failed, 503, "issuer_unavailable")
    assert fs.note_state(app, note.jti) == "active"
    _at_most_once(app, note)
    transport.fault = None
    assert request.send().status_code == 200
    _exactly_once(app, note)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    release: threading.Event

    def do_POST(self) -> None:
        self.release.wait(10)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"results": []}')
        except OSError:
            pass  # the client gave up long ago

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_server() -> Iterator[str]:
    release = threading.Event()
    handler = type("Handler", (_SlowHandler,), {"release": release})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1/orgs/acme/redeem"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_issuer_slower_than_the_timeout_over_real_http(
        app: Flask, client: FlaskClient, slow_server: str,
        caplog: pytest.LogCaptureFixture) -> None:
    app.config["WALLET_FEDERATION_TIMEOUT"] = 0.5
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    original = _pin_redeem_endpoint(app, "globex", slow_server)

    started = time.monotonic()
    failed = request.send()
    elapsed = time.monotonic() - started

    _problem(failed, 503, "issuer_unavailable")
    assert 0.5 <= elapsed < 2.5, elapsed
    # Users see a generic message (the reason would map the network); the log has it.
    message = failed.get_json()["results"][0]["error"]["message"]
    assert message.endswith("could not be reached") and "timed out" not in message
    assert any("timed out" in r.getMessage() for r in caplog.records)
    assert fs.note_state(app, note.jti) == "active"
    _at_most_once(app, note)
    _pin_redeem_endpoint(app, "globex", original)
    assert request.send().status_code == 200
    _exactly_once(app, note)


# -- (c) the issuer committed, its answer was lost -----------------------------------------


class DropOnce:
    """Forward the redeem call (the issuer commits), then lose the answer, once."""

    def __init__(self) -> None:
        self.dropped: list[Fetched] = []

    def __call__(self, method: str, url: str, forward: Callable[[], Any]) -> Any:
        answer = forward()
        if fs.is_redeem(url) and not self.dropped:
            self.dropped.append(answer)
            raise IssuerUnavailable(f"{url}: the connection was reset while reading")
        return answer

    def receipt(self) -> str:
        import json

        (answer,) = self.dropped
        assert answer.status == 200
        (result,) = json.loads(answer.body)["results"]
        return str(result["receipt"])


def test_answer_lost_after_the_issuer_committed_then_retry_gets_the_same_receipt(
        app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    drop = DropOnce()
    fs.FaultTransport(drop).install(app)

    failed = request.send()

    _problem(failed, 503, "issuer_unavailable")
    assert fs.note_state(app, note.jti) == "redeemed"  # acme committed
    assert fs.wallet_balance(app, "globex") == 0  # globex never heard of it
    lost = drop.receipt()
    assert fs.redemption_receipt(app, note.jti) is not None
    _at_most_once(app, note)

    retried = request.send()

    assert retried.status_code == 200, retried.get_data(as_text=True)
    (result,) = retried.get_json()["results"]
    assert result["receipt"] == lost
    stored = fs.honoured_receipt(app, "globex", note.jti)
    assert stored is not None and stored == fs.redemption_receipt(app, note.jti)
    assert stored[0] == lost  # the same receipt, hence the same receipt jti
    _exactly_once(app, note)


def test_answer_lost_then_retry_on_a_worker_without_the_status_cache(
        app: Flask, client: FlaskClient) -> None:
    """The retry may land on another worker process (or come after the list's ttl): it
    must still reach the issuer and collect the receipt it is owed."""
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    drop = DropOnce()
    fs.FaultTransport(drop).install(app)
    _problem(request.send(), 503, "issuer_unavailable")
    assert fs.note_state(app, note.jti) == "redeemed"

    fs.clear_caches(app)  # a fresh worker: the status list now says "redeemed" (3)
    retried = request.send()

    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert retried.get_json()["results"][0]["receipt"] == drop.receipt()
    _exactly_once(app, note)


# -- (d) the verifier crashes between receipt and credit -----------------------------------


def _crash_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from wallet.actions import honour as honour_actions

    real, calls = honour_actions.credit, []

    def crashing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("verifier process died before crediting")
        return real(*args, **kwargs)

    monkeypatch.setattr(honour_actions, "credit", crashing)
    return calls


def test_verifier_crash_between_receipt_and_credit_then_retry(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    calls = _crash_once(monkeypatch)

    crashed = request.send()

    assert crashed.status_code == 500, crashed.get_data(as_text=True)
    assert crashed.mimetype == "application/problem+json"
    assert len(calls) == 1
    assert fs.note_state(app, note.jti) == "redeemed"
    assert fs.wallet_balance(app, "globex") == 0
    assert fs.count(app, "HonouredNote") == 0
    receipt = fs.redemption_receipt(app, note.jti)
    _at_most_once(app, note)

    retried = request.send()

    assert retried.status_code == 200, retried.get_data(as_text=True)
    assert retried.get_json()["results"][0]["receipt"] == receipt[0]  # type: ignore[index]
    assert fs.honoured_receipt(app, "globex", note.jti) == receipt
    _exactly_once(app, note)


def test_verifier_crash_then_retry_on_a_worker_without_the_status_cache(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    _crash_once(monkeypatch)
    assert request.send().status_code == 500

    fs.clear_caches(app)
    retried = request.send()

    assert retried.status_code == 200, retried.get_data(as_text=True)
    _exactly_once(app, note)


# -- (e) the issuer answers 5xx ------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_issuer_5xx_is_issuer_unavailable(app: Flask, client: FlaskClient, status: int) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)

    def broken(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if fs.is_redeem(url):
            return Fetched(status, b"<html>upstream trouble</html>", "text/html")
        return forward()

    transport = fs.FaultTransport(broken).install(app)

    failed = request.send()

    _problem(failed, 503, "issuer_unavailable")
    assert str(status) in failed.get_json()["results"][0]["error"]["message"]
    assert fs.note_state(app, note.jti) == "active"
    _at_most_once(app, note)
    transport.fault = None
    assert request.send().status_code == 200
    _exactly_once(app, note)


def test_status_list_unavailable_fails_closed(app: Flask, client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)

    def no_status(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if "/status/" in url:
            return Fetched(502, b"", "text/html")
        return forward()

    transport = fs.FaultTransport(no_status).install(app)

    failed = request.send()

    _problem(failed, 503, "issuer_unavailable")
    assert transport.redeem_calls() == []  # fail closed: never redeemed blind
    assert fs.note_state(app, note.jti) == "active"
    transport.fault = None
    assert request.send().status_code == 200
    _exactly_once(app, note)


def test_garbage_answer_from_the_issuer_is_issuer_unavailable(app: Flask,
                                                              client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)

    def garbage(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if fs.is_redeem(url):
            return Fetched(200, b"not json at all", "text/plain")
        return forward()

    transport = fs.FaultTransport(garbage).install(app)

    _problem(request.send(), 503, "issuer_unavailable")
    assert fs.note_state(app, note.jti) == "active"
    transport.fault = None
    assert request.send().status_code == 200
    _exactly_once(app, note)



# -- the same key while the first request still waits for the issuer -----------------------


def test_same_key_while_the_first_request_is_in_flight_is_409(app: Flask,
                                                             client: FlaskClient) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)
    request = Request(fed, client, note)
    waiting, release = threading.Event(), threading.Event()

    def hold(method: str, url: str, forward: Callable[[], Any]) -> Any:
        if fs.is_redeem(url):
            waiting.set()
            release.wait(30)
        return forward()

    fs.FaultTransport(hold).install(app)
    first: list[Any] = []
    thread = threading.Thread(target=lambda: first.append(request.send(app.test_client())))
    thread.start()
    try:
        assert waiting.wait(30), "the first request never reached the issuer"
        second = request.send()
    finally:
        release.set()
        thread.join(30)

    _problem(second, 409, "idempotency_in_flight")
    assert first[0].status_code == 200, first[0].get_data(as_text=True)
    replay = request.send()
    assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
    _exactly_once(app, note)


def test_a_failure_after_the_state_change_undoes_that_note_only(
        app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: an error raised after `active -> redeemed` was turned into a per-note
    error while the transaction still committed: a redeemed note with no posting."""
    from wallet.actions import redeem as redeem_actions
    from wallet.core.errors import InsufficientFunds

    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise InsufficientFunds("the books refused")

    monkeypatch.setattr(redeem_actions, "_book_redemption", broken)
    failed = Request(fed, client, note).send()
    assert failed.status_code == 422
    assert fs.note_state(app, note.jti) == "active"  # the savepoint undid the state change
