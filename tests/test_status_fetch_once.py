"""A verifier fetches each status list at most once per `ttl` and process (issue 14).

bench/status_fetch.py found a verifier under `wallet serve` fetching each list once per
*thread* when its lists were cold: every request that missed the list fetched it,
concurrently. Here eight verify requests arrive at once at globex (threads), for notes of
acme in two lists, and the issuer is slow to answer (so that every request misses the
list while the first fetch is under way): acme must see one fetch per list; then none
until the `ttl` has passed (the one clock, faked); then one per list again.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests import fed_support as fs
from tests import support
from wallet import clock, db
from wallet.actions.lookups import Lookups
from wallet.store import people

TTL = 60  # WALLET_STATUS_LIST_TTL's default
THREADS = 8


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    # Two notes per list, so that four notes span two lists; verify is not rate limited.
    return support.test_config(db_url, tmp_path, WALLET_STATUS_LIST_MAX_NOTES=2,
                               WALLET_PUBLIC_RATE_PER_MINUTE=0)


def _slow_status_lists(method: str, url: str, forward: Any) -> Any:
    if "/status/" in url:
        time.sleep(0.2)  # every request arriving meanwhile misses the list (< SHARED_WAIT)
    return forward()


def _verify_at_once(app: Flask, notes: list[str]) -> list[dict[str, Any]]:
    """THREADS verify requests at globex released together, the notes in turn."""
    start, answers, lock = threading.Barrier(THREADS), [], threading.Lock()

    def one(i: int) -> None:
        client = app.test_client()
        start.wait()
        answer = client.post("/api/v1/orgs/globex/verify", json={"note": notes[i % len(notes)]})
        with lock:
            answers.append(answer.get_json())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def _fetches(transport: fs.FaultTransport) -> Counter[str]:
    return Counter(c.url.rsplit("/", 1)[-1] for c in transport.calls
                   if c.method == "GET" and "/status/" in c.url)


def test_concurrent_verifiers_fetch_each_list_once_per_ttl(app: Flask) -> None:
    fed = fs.setup_federation(app)
    exported = [fs.export(app, fed.holder, "10.00") for _ in range(4)]
    assert sorted({e.status_list for e in exported}) == [1, 2]
    notes = [e.token for e in exported]
    fake = clock.install(app, clock.FakeClock())
    transport = fs.FaultTransport(_slow_status_lists).install(app)

    answers = _verify_at_once(app, notes)
    assert [a["valid"] for a in answers] == [True] * THREADS, answers
    assert _fetches(transport) == {"1": 1, "2": 1}

    fake.advance(TTL - 1)  # still within the ttl: the lists held answer
    assert all(a["valid"] for a in _verify_at_once(app, notes))
    assert _fetches(transport) == {"1": 1, "2": 1}

    fake.advance(2)  # past it: one fetch per list again, however many ask at once
    assert all(a["valid"] for a in _verify_at_once(app, notes))
    assert _fetches(transport) == {"1": 2, "2": 2}


def test_a_list_held_when_the_lists_were_fetched_stays_for_the_action(app: Flask) -> None:
    # It may expire between `fetch_lists` and `listed` (a slow request, a long batch);
    # the action goes on with the list it held, rather than failing an assertion.
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder, "10.00")
    fake = clock.install(app, clock.FakeClock())
    uri = f"{fs.ACME}/status/{note.status_list}"
    with app.app_context():
        session = db.session()
        org = people.org_by_slug(session, slug="globex")
        assert org is not None
        Lookups(session, org).fetch_lists({uri: fs.ACME})  # now held by the process
        lookups = Lookups(session, org)
        lookups.fetch_lists({uri: fs.ACME})  # held: nothing fetched
        fake.advance(TTL + 1)
        assert lookups.listed(uri).uri == uri
        session.rollback()
