"""API: redeem (issuer side) and honour (verifier side) — DESIGN §8."""

from __future__ import annotations

from typing import Any

from flask import request

from wallet import db
from wallet.actions import federation as fed
from wallet.core.errors import Forbidden, IssuerUnavailable, Malformed, Refusal
from wallet.core.money import format_amount
from wallet.web import guard, idempotency, ratelimit
from wallet.web.api import bp


@bp.post("/orgs/<slug>/redeem")
def redeem(slug: str) -> dict[str, Any]:
    """Another organisation redeems notes presented to it; answers signed receipts."""
    ratelimit.limit("redeem", guard.client_address())
    if request.mimetype == "application/jwt":
        token: object = request.get_data(as_text=True).strip()
    else:
        body = idempotency.json_body()
        token = body.get("request")
    if not isinstance(token, str) or not token:
        raise Malformed('send {"request": "<redeem request JWS>"}')
    return fed.redeem_request(db.session(), slug=slug, token=token)


@bp.post("/orgs/<slug>/honour")
def honour(slug: str) -> Any:
    """The signed-in engineer hands over presentations; this org redeems and credits them."""
    principal = guard.api_principal(slug, write=True)
    if principal.person is None:
        raise Forbidden("honour credits a person: use a personal token or sign in")
    person = principal.person
    assert principal.org.id is not None
    key = request.headers.get(idempotency.HEADER, "")

    def handler(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if set(body) != {"presentations"}:
            raise Malformed('send {"presentations": ["<presentation>", …]}')
        result = fed.honour(db.session(), slug=slug, email=person.email,
                            org=principal.org, person=person,
                            presentations=body["presentations"],
                            consumer=f"honour:{person.id}:{key}"[:250],
                            commit=False)  # credited in one commit with the stored answer
        held = result.balances
        payload = {"results": [o.as_json() for o in result.outcomes],
                   "honoured": len(result.credited),
                   "balance": {"currency": principal.org.currency,
                               **{k: format_amount(v) for k, v in held.items()}}}
        if result.credited:
            return 200, payload
        errors = [o.error for o in result.outcomes if o.error]
        if errors and all(e["code"] == "issuer_unavailable" for e in errors):
            raise IssuerUnavailable("no issuer could be reached; nothing was credited;"
                                    " retry with the same Idempotency-Key", **payload)
        first = errors[0] if errors else {"code": "malformed", "message": "nothing honoured"}
        raise Refusal(first["code"], first["message"], **payload)

    return idempotency.run(org_id=principal.org.id, scope=f"honour:{person.id}",
                           handler=handler)
