"""Run an API handler under an `Idempotency-Key` (IETF draft semantics).

Same key and body: the stored response, with `Idempotent-Replayed: true`. Same key,
different body: 422 `idempotency_conflict`. Same key while the first request runs:
409 `idempotency_in_flight`. Successful and client-error responses are stored; a
server-side or upstream failure (5xx, e.g. `issuer_unavailable`) releases the key so
that a retry with the same key runs again.

The claim, the handler's writes and the stored response share one transaction unless
the handler commits on the way (honour does, before it calls another organisation):
the response is stored exactly when the work is, and a short handler costs one commit.
A duplicate that arrives meanwhile waits on the claim's unique key, then replays the
stored response or, while the first request is still out on the network, gets 409.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Response, current_app, request

from wallet import db
from wallet.actions._base import utcnow
from wallet.core.errors import Malformed, WalletError
from wallet.core.ledger import fingerprint
from wallet.store import idempotency
from wallet.web import boundary
from wallet.web.errors import from_error

HEADER = "Idempotency-Key"
KEY_RE = re.compile("[!-~]{1,200}")


def json_body() -> dict[str, Any]:
    """Return the request's JSON object or raise `Malformed`."""
    if not request.is_json:
        raise Malformed("send a JSON body with Content-Type: application/json")
    body = boundary.json_value()  # depth and NUL already screened; parsed once
    if not isinstance(body, dict):
        raise Malformed("the body must be a JSON object")
    return body


def run(*, org_id: int, scope: str,
        handler: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]) -> Response:
    """Call `handler(body)` at most once per (scope, Idempotency-Key) and request body."""
    key = request.headers.get(HEADER, "")
    if KEY_RE.fullmatch(key) is None:  # the rule the OpenAPI document states
        raise Malformed(f"send an {HEADER} header (1-200 visible ASCII characters, such"
                        " as a UUID)")
    body = json_body()
    session = db.session()
    lease = timedelta(seconds=int(current_app.config["WALLET_IDEMPOTENCY_LEASE_SECONDS"]))
    request_hash = fingerprint(body)
    stored = idempotency.claim(session, org_id=org_id, scope=scope, key=key,
                               request_hash=request_hash, now=utcnow(), lease=lease)
    if stored is not None:
        session.rollback()
        mimetype = "application/problem+json" if stored.status >= 400 else "application/json"
        replay = Response(stored.body, status=stored.status, mimetype=mimetype)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    try:
        status, payload = handler(body)
    except WalletError as err:
        session.rollback()
        if err.status >= 500:
            idempotency.release(session, org_id=org_id, scope=scope, key=key)
            session.commit()
            raise
        response = from_error(err)
        _finish(org_id, scope, key, request_hash, response.status_code,
                response.get_data(as_text=True))
        return response
    except BaseException:
        session.rollback()
        idempotency.release(session, org_id=org_id, scope=scope, key=key)
        session.commit()
        raise
    text = json.dumps(payload)
    try:
        _finish(org_id, scope, key, request_hash, status, text)
    except BaseException:
        session.rollback()  # the handler's uncommitted work goes with the answer
        raise
    return Response(text, status=status, mimetype="application/json")


def _finish(org_id: int, scope: str, key: str, request_hash: str, status: int,
            body: str) -> None:
    session = db.session()
    idempotency.finish(session, org_id=org_id, scope=scope, key=key,
                       request_hash=request_hash, status=status, body=body)
    session.commit()
