"""Run a request at most once per Idempotency-Key (IETF draft semantics).

`once` owns the transactions: claim the key, run the handler, store its answer, commit.
Same key and body: the stored answer, replayed. Same key, other body: 422
`idempotency_conflict`. Same key while the first request runs: 409
`idempotency_in_flight`. Successful and client-error answers are stored; a server-side
or upstream failure (5xx, e.g. `issuer_unavailable`) releases the key so that a retry
with the same key runs again.

The claim, the handler's writes and the stored answer share one transaction, unless the
handler commits on the way (honour does, before it calls another organisation: its
claim commits with the nonce): the answer is stored exactly when the work is, and a
short handler costs one commit. A duplicate that arrives meanwhile waits on the claim's
unique key, then replays the stored answer or, while the first request is still out on
the network, gets 409.

A short handler whose own writes already serialise duplicates (a hold's unique key, a
conditional update of its row) and that never commits may skip the claim
(`claim=False`): it runs first and its answer is stored with one INSERT at the end, in
the same transaction. A key found taken there (a replay, another body, a request in
flight) rolls the handler's work back and the request goes the claiming way, which
answers exactly as above: the claim's two statements become one and nothing else
changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.actions._base import atomic, commit
from wallet.core.errors import WalletError
from wallet.core.ledger import fingerprint
from wallet.store import idempotency as store

Reply = tuple[int, dict[str, Any]]  # a status and a JSON object


@dataclass(frozen=True, slots=True)
class Keyed:
    """A request under an Idempotency-Key: whose, which endpoint, the key, its body."""

    org_id: int
    scope: str
    key: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    """What a keyed request answers (JSON text), fresh or replayed from the store."""

    status: int
    body: str
    replayed: bool = False


def once(session: Session, request: Keyed, run: Callable[[], Reply], *,
         problem: Callable[[WalletError], str], claim: bool = True) -> Answer:
    """Call `run()` at most once per (scope, key) and body; answer what it answered.

    A `WalletError` below 500 is an answer too, written by `problem` (the adapter's
    problem+json) and stored; one of 500 or more, or any other exception, releases the
    key and propagates. `claim=False`: run first, claim with the answer (module
    docstring); only for a handler that never commits and serialises its duplicates.
    """
    request_hash = fingerprint(request.body)
    if not claim:
        answer = _run_then_store(session, request, request_hash, run, problem)
        if answer is not None:
            return answer
    lease = timedelta(seconds=int(current_app.config["WALLET_IDEMPOTENCY_LEASE_SECONDS"]))
    stored = store.claim(session, org_id=request.org_id, scope=request.scope,
                         key=request.key, request_hash=request_hash, now=clock.now(),
                         lease=lease)
    if stored is not None:
        session.rollback()
        return Answer(stored.status, stored.body, replayed=True)
    try:
        status, payload = run()
    except WalletError as err:
        session.rollback()
        if err.status >= 500:
            _release(session, request)
            raise
        return _finish(session, request, request_hash, err.status, problem(err))
    except BaseException:
        session.rollback()
        _release(session, request)
        raise
    return _finish(session, request, request_hash, status, json.dumps(payload))


def _run_then_store(session: Session, request: Keyed, request_hash: str,
                    run: Callable[[], Reply],
                    problem: Callable[[WalletError], str]) -> Answer | None:
    """Run the handler, then store its answer under the key it never claimed, in one
    commit; None (everything rolled back) when the key is taken: the caller claims."""
    try:
        status, payload = run()
        body = json.dumps(payload)
    except WalletError as err:
        session.rollback()
        if err.status >= 500:
            raise  # nothing was claimed, so nothing to release
        status, body = err.status, problem(err)
    except BaseException:
        session.rollback()
        raise
    try:
        stored = store.record(session, org_id=request.org_id, scope=request.scope,
                              key=request.key, request_hash=request_hash, status=status,
                              body=body, now=clock.now())
        if stored:
            commit(session)
    except BaseException:  # an error here rolls the handler's work back with the answer
        session.rollback()
        raise
    if not stored:
        session.rollback()  # the handler's work too: the claiming way decides
        return None
    return Answer(status, body)


def _finish(session: Session, request: Keyed, request_hash: str, status: int,
            body: str) -> Answer:
    """Store the answer with the handler's writes, in one commit."""
    with atomic(session):  # an error here rolls the handler's work back with the answer
        store.finish(session, org_id=request.org_id, scope=request.scope, key=request.key,
                     request_hash=request_hash, status=status, body=body)
    return Answer(status, body)


def _release(session: Session, request: Keyed) -> None:
    with atomic(session):
        store.release(session, org_id=request.org_id, scope=request.scope, key=request.key)
