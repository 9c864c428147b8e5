"""API: export notes, verify, nonces, reissue (DESIGN §7)."""

from __future__ import annotations

from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import notes as note_actions
from wallet.actions.verify import verify_as
from wallet.core import notes
from wallet.core.errors import Forbidden, Malformed
from wallet.core.money import format_amount
from wallet.models import Note
from wallet.web import guard, idempotency, ratelimit
from wallet.web.api import bp


def note_json(row: Note) -> dict[str, Any]:
    """A note record as the API shows it to its holder."""
    return {
        "jti": row.jti, "note": row.token, "state": row.state,
        "amount": {"value": format_amount(row.amount), "currency": row.currency},
        "issued_at": row.issued_at.isoformat(), "expires_at": row.expires_at.isoformat(),
        "holder_jkt": row.holder_jkt,
        "status": notes.decode(row.token)["claims"]["status"],
    }


@bp.post("/orgs/<slug>/me/notes")
def export_note(slug: str) -> Any:
    """Export part of the caller's wallet as a note bound to `holder_jwk`."""
    principal = guard.api_principal(slug)
    if principal.person is None:
        raise Forbidden("a service token has no wallet")
    person = principal.person
    assert principal.org.id is not None

    def handler(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if set(body) - {"amount", "currency", "holder_jwk"}:
            raise Malformed("body members are amount, currency (optional) and holder_jwk")
        row = note_actions.export(db.session(), slug=slug, email=person.email,
                                  amount=body.get("amount"), currency=body.get("currency"),
                                  holder_jwk=body.get("holder_jwk"), actor=principal.actor,
                                  request_key=request.headers.get(idempotency.HEADER))
        return 201, note_json(row)

    return idempotency.run(org_id=principal.org.id, scope=f"me/notes:{person.id}",
                           handler=handler)


@bp.get("/orgs/<slug>/me/notes")
def my_notes(slug: str) -> dict[str, Any]:
    """The caller's notes at this organisation."""
    principal = guard.api_principal(slug)
    if principal.person is None:
        raise Forbidden("a service token has no wallet")
    views = note_actions.of_person(db.session(), org=principal.org, person=principal.person)
    return {"notes": [note_json(v.row) | {"state": v.display_state} for v in views]}


@bp.post("/orgs/<slug>/verify")
def verify(slug: str) -> dict[str, Any]:
    """Verify a note or presentations as this organisation would; no side effects."""
    ratelimit.limit("verify", guard.client_address())
    if not request.is_json:
        raise Malformed("send JSON with Content-Type: application/json")
    try:
        body = request.get_json()  # `null` is JSON too and gets a report
    except BadRequest:
        raise Malformed("the body is not valid JSON") from None
    return verify_as(db.session(), slug=slug, body=body)


@bp.post("/orgs/<slug>/notes/reissue")
def reissue(slug: str) -> tuple[dict[str, Any], int]:
    """Reissue an expired note to its holder (proof: a presentation made for this issuer)."""
    ratelimit.limit("reissue", guard.client_address())
    body = idempotency.json_body()
    if set(body) != {"presentation"}:
        raise Malformed('send {"presentation": "<expired note>~<KB-JWT for this issuer>"}')
    fresh, old = note_actions.reissue_presented(db.session(), slug=slug,
                                                presentation=body["presentation"])
    return {**note_json(fresh), "replaces": old}, 201


@bp.post("/orgs/<slug>/nonces")
def nonces(slug: str) -> tuple[dict[str, Any], int]:
    """A fresh single-use nonce for presentations to this organisation."""
    ratelimit.limit("nonces", guard.client_address())
    value, expires = nonce_actions.new_nonce(db.session(), slug=slug)
    return {"nonce": value, "audience": key_actions.issuer_id_of(slug),
            "expires_at": int(expires.timestamp())}, 201
