"""Public issuer documents: metadata, JWKS and status lists.

What each document holds: docs/protocol.md, §6 "Issuer documents".
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import notes as note_actions
from wallet.actions._base import org_or_404

bp = Blueprint("wellknown", __name__)


def _cached(response: Response, seconds: int) -> Response:
    response.headers["Cache-Control"] = f"public, max-age={seconds}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


@bp.get("/.well-known/jwt-vc-issuer/orgs/<slug>")
def metadata(slug: str) -> Response:
    """SD-JWT VC issuer metadata of an organisation."""
    session = db.session()
    return _cached(jsonify(key_actions.metadata(session, org=org_or_404(session, slug))), 300)


@bp.get("/orgs/<slug>/jwks.json")
def jwks(slug: str) -> Response:
    """The organisation's active and retired public keys."""
    session = db.session()
    response = jsonify(key_actions.jwks(session, org=org_or_404(session, slug)))
    response.mimetype = "application/jwk-set+json"
    return _cached(response, 300)


@bp.get("/orgs/<slug>/status/<int(max=2147483647):number>")
def status_list(slug: str, number: int) -> Response:
    """A signed status list token (IETF Token Status List)."""
    session = db.session()
    token = note_actions.status_list_token(session, org=org_or_404(session, slug),
                                           number=number)
    response = Response(token, mimetype="application/statuslist+jwt")
    return _cached(response, int(current_app.config["WALLET_STATUS_LIST_TTL"]))
