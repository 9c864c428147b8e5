"""The API's side of `Idempotency-Key`: read the header and the body, answer what the
action answered (`wallet.actions.idempotency.once`, which owns the transactions).

A replayed answer carries `Idempotent-Replayed: true`; problem answers (4xx, stored like
any other) are `application/problem+json`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flask import Response, request

from wallet import db
from wallet.actions import idempotency
from wallet.core.errors import Malformed, WalletError
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


def request_key() -> str:
    """The request's Idempotency-Key, or `Malformed` (the rule the OpenAPI document states)."""
    key = request.headers.get(HEADER, "")
    if KEY_RE.fullmatch(key) is None:
        raise Malformed(f"send an {HEADER} header (1-200 visible ASCII characters, such"
                        " as a UUID)")
    return key


def run(*, org_id: int, scope: str, handler: Callable[[dict[str, Any]], idempotency.Reply],
        claim: bool = True) -> Response:
    """Call `handler(body)` at most once per (scope, Idempotency-Key) and request body
    (`claim=False`: see `wallet.actions.idempotency.once`)."""
    key = request_key()
    body = json_body()
    answer = idempotency.once(db.session(), idempotency.Keyed(org_id, scope, key, body),
                              lambda: handler(body), problem=_problem, claim=claim)
    mimetype = "application/problem+json" if answer.status >= 400 else "application/json"
    response = Response(answer.body, status=answer.status, mimetype=mimetype)
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


def _problem(err: WalletError) -> str:
    """The problem+json text of a refusal, as the API answers it."""
    return from_error(err).get_data(as_text=True)
