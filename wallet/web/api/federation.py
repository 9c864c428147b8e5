"""API: redeem (issuer side) and honour (verifier side) — docs/federation.md."""

from __future__ import annotations

from typing import Any

from flask import Response, request

from wallet import db
from wallet.actions import honour as honour_actions
from wallet.actions.redeem import redeem_request
from wallet.core.errors import Malformed
from wallet.web import guard, idempotency, ratelimit
from wallet.web.api import bp, person_of


@bp.post("/orgs/<slug>/redeem")
def redeem(slug: str) -> dict[str, Any]:
    """Another organisation redeems notes presented to it; answers signed receipts."""
    ratelimit.limit("redeem")  # per address: the peer's server
    return redeem_request(db.session(), slug=slug, token=_redeem_token()).as_json()


def _redeem_token() -> str:
    """The redeem request JWS: the body itself (application/jwt) or its `request` member."""
    if request.mimetype == "application/jwt":
        token: object = request.get_data(as_text=True).strip()
    else:
        token = idempotency.json_body().get("request")
    if not isinstance(token, str) or not token:
        raise Malformed('send {"request": "<redeem request JWS>"}')
    return token


@bp.post("/orgs/<slug>/honour")
def honour(slug: str) -> Response:
    """The signed-in engineer hands over presentations; this org redeems and credits them."""
    principal = guard.api_principal(slug, write=True)
    person = person_of(principal, "honour credits a person: use a personal token or sign in")
    assert principal.org.id is not None
    consumer = f"honour:{person.id}:{idempotency.request_key()}"[:250]
    return idempotency.run(
        org_id=principal.org.id, scope=f"honour:{person.id}",
        handler=lambda body: honour_actions.honour_api(
            db.session(), org=principal.org, person=person, body=body, consumer=consumer))
