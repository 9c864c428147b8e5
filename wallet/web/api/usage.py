"""`POST /api/v1/orgs/<slug>/usage`: a compute gateway records an engineer's usage.

Service token only, with an `Idempotency-Key` (replays return the stored answer). Body
`{"person": email, "model": str, "input_tokens": int, "output_tokens": int}`; the answer
(201) carries the cost, the price snapshot used and the new available balance. A wallet
that cannot cover the cost answers 422 `insufficient_funds` and nothing is debited.
"""

from __future__ import annotations

from typing import Any

from flask import Response

from wallet import db
from wallet.actions import usage as usage_actions
from wallet.core.errors import Malformed
from wallet.web import guard, idempotency
from wallet.web.api import bp

FIELDS = {"person", "model", "input_tokens", "output_tokens"}


@bp.post("/orgs/<slug>/usage")
def usage(slug: str) -> Response:
    """Debit one usage record from an engineer's wallet."""
    principal = guard.api_principal(slug, service=True)
    assert principal.org.id is not None
    return idempotency.run(org_id=principal.org.id, scope="usage",
                           handler=lambda body: _record(slug, principal, body))


def _record(slug: str, principal: guard.Principal,
            body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    unknown = sorted(set(body) - FIELDS)
    missing = sorted(FIELDS - set(body))
    if missing or unknown:
        raise Malformed("the body must hold exactly person, model, input_tokens and"
                        " output_tokens" + (f" (missing: {', '.join(missing)})" if missing
                                            else f" (unknown: {', '.join(unknown)})"))
    person = body["person"]
    if not isinstance(person, str) or not person.strip():
        raise Malformed("person must be the engineer's email address")
    # The same key names the usage record and its ledger transfer, so even a lost answer
    # debits once.
    result = usage_actions.record_usage(
        db.session(), slug=slug, email=person, model=body["model"],
        input_tokens=_whole(body["input_tokens"]),
        output_tokens=_whole(body["output_tokens"]),
        idempotency_key=idempotency.request_key().strip(), actor=principal.actor)
    return 201, usage_actions.usage_json(result, email=person.strip().lower())


def _whole(value: object) -> object:
    """`12.0` is the integer 12 to JSON (and JSON Schema's `integer`); other values pass."""
    if type(value) is float and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value
