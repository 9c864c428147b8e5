"""A misbehaving trusted peer cannot stall a real `wallet serve` (issue: one slow peer).

One real gunicorn process (1 worker x 4 threads) trusts a loopback issuer whose status
lists drip one byte a second, drip their head, never answer, or answer bytes that are not
HTTP. While 12 anonymous verify requests name that issuer at once, `/healthz` and a local
page are polled: they answer promptly throughout, every verify answers
`issuer_unavailable` within the total deadline plus a margin, and once the circuit
breaker is open the answers come at once, without a request to the peer. Both databases.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests import support
from tests.bad_peer import BadPeer
from tests.test_two_instances import Instance, _instance

pytestmark = pytest.mark.slow

DEADLINE = 2.0  # WALLET_FEDERATION_TIMEOUT for the server under test
CAP = 2  # WALLET_PEER_MAX_CONCURRENT
FAILURES = 2  # WALLET_PEER_BREAKER_FAILURES
MARGIN = 1.5  # scheduling on a shared two-core machine
PROMPT = 1.0  # what "answers promptly" means for /healthz and a page
AT_ONCE = 0.75  # an answer from an open breaker


def _timed(method: str, url: str, body: dict[str, Any] | None = None,
           timeout: float = DEADLINE + 8) -> tuple[float, int, Any]:
    """One request on a new connection; (seconds, status, JSON or text). A client timeout
    is reported as status 0, so that a stalled server fails the assertions, not the
    thread."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,  # noqa: S310 (loopback)
                                 headers={"Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:  # noqa: S310
            raw, status = answer.read(), answer.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    except OSError as err:
        return time.monotonic() - started, 0, str(err)
    elapsed = time.monotonic() - started
    try:
        return elapsed, status, json.loads(raw)
    except ValueError:
        return elapsed, status, raw.decode(errors="replace")


class Poller:
    """Polls /healthz and the sign-in page every 100 ms; records how long each took."""

    def __init__(self, base: str) -> None:
        self.base, self.seen = base, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in ("/healthz", "/login"):
                elapsed, status, _body = _timed("GET", self.base + path, timeout=10)
                self.seen.append((path, elapsed, status))
            self._stop.wait(0.1)

    def worst(self) -> float:
        return max(elapsed for _p, elapsed, _s in self.seen)


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[Instance]:
    instance = _instance("verifier", db_url, tmp_path)
    instance.env.update({
        "WALLET_FEDERATION_TIMEOUT": str(DEADLINE),
        "WALLET_PEER_MAX_CONCURRENT": str(CAP),
        "WALLET_PEER_BREAKER_FAILURES": str(FAILURES),
        "WALLET_PEER_BREAKER_COOLDOWN_SECONDS": "120",
        "WALLET_PUBLIC_RATE_PER_MINUTE": "100000",
    })
    password = tmp_path / "password"
    password.write_text(support.PASSWORD + "\n")
    instance.cli("org", "create", "globex", "--name", "Globex", "--admin-email",
                 "admin@globex.test", "--password-file", str(password))
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _verify_wave(server: Instance, note: str, n: int = 12) -> list[tuple[float, int, Any]]:
    url = f"{server.base}/api/v1/orgs/globex/verify"
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _i: _timed("POST", url, {"note": note}), range(n)))


def _unavailable(answer: tuple[float, int, Any]) -> bool:
    _elapsed, status, body = answer
    return (status == 200 and isinstance(body, dict) and body["valid"] is False
            and [e["code"] for e in body["errors"]] == ["issuer_unavailable"])


@pytest.mark.parametrize("mode", ["drip", "drip-head", "hang", "garbage"])
def test_a_misbehaving_peer_cannot_stall_the_server(server: Instance, mode: str) -> None:
    with BadPeer(mode) as peer:
        server.cli("trust", "add", "--org", "globex", peer.issuer)
        note = peer.note()
        with Poller(server.base) as polls:
            started = time.monotonic()
            first = _verify_wave(server, note)
            first_took = time.monotonic() - started
            asked = peer.status_requests()
            second = _verify_wave(server, note)  # the breaker is open now
            time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))  # a few polls at least
        summary = {"first": [(round(e, 2), s) for e, s, _b in first],
                   "second": [(round(e, 2), s) for e, s, _b in second],
                   "worst_poll": round(polls.worst(), 3), "asked": asked}

        assert all(_unavailable(a) for a in first + second), (summary, first[0])
        assert max(e for e, _s, _b in first) < DEADLINE + MARGIN, summary
        assert first_took < DEADLINE + MARGIN, summary
        # At most CAP requests at once, and the breaker opened after FAILURES failures.
        assert 1 <= asked <= CAP + FAILURES, summary
        assert max(e for e, _s, _b in second) < AT_ONCE, summary
        assert peer.status_requests() == asked, summary  # nothing more reached the peer
        assert len(polls.seen) >= 6, summary
        assert all(status == 200 for _p, _e, status in polls.seen), summary
        assert polls.worst() < PROMPT, summary
    assert "Traceback" not in server.log(), server.log()
    print(f"\n{mode}: {summary}")
