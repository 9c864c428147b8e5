"""API: settlement statements between organisations (DESIGN §11.2, docs/federation.md).

    POST /api/v1/orgs/<slug>/settlements    the payer's signed statement; our signed
                                            acknowledgement (200), once per statement
    GET  /api/v1/orgs/<slug>/settlements/<counterparty issuer id, URL-encoded>?request=<JWS>
                                            our signed view of the pair, for reconciling
"""

from __future__ import annotations

from typing import Any

from flask import request

from wallet import db
from wallet.actions import settlement as settlement_actions
from wallet.core.errors import Malformed
from wallet.web import idempotency, ratelimit
from wallet.web.api import bp


@bp.post("/orgs/<slug>/settlements")
def settlements(slug: str) -> dict[str, Any]:
    """Another organisation pays us: verify its statement, post once, acknowledge."""
    ratelimit.limit("redeem")  # a peer's server, counted per address as its redeem requests
    ack = settlement_actions.receive(db.session(), slug=slug, token=_statement())
    return {"acknowledgement": ack}


def _statement() -> str:
    """The statement JWS: the body itself (application/jwt) or its `statement` member."""
    if request.mimetype == "application/jwt":
        token: object = request.get_data(as_text=True).strip()
    else:
        token = idempotency.json_body().get("statement")
    if not isinstance(token, str) or not token:
        raise Malformed('send {"statement": "<settlement statement JWS>"}')
    return token


@bp.get("/orgs/<slug>/settlements/<path:counterparty>")
def settlement_view(slug: str, counterparty: str) -> dict[str, Any]:
    """A counterparty asks for our signed view of the pair (receipts both ways, payments
    with their acknowledgements), with a request signed by its org key."""
    ratelimit.limit("redeem")
    token = request.args.get("request")
    if not token:
        raise Malformed("send ?request=<view request JWS signed with your org key>")
    return {"view": settlement_actions.view_for(db.session(), slug=slug,
                                                counterparty=counterparty, token=token)}
