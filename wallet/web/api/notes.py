"""API: export notes, verify, nonces, reissue (docs/protocol.md)."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from werkzeug.exceptions import BadRequest

from wallet import db
from wallet.actions import nonces as nonce_actions
from wallet.actions import notes as note_actions
from wallet.actions import signing
from wallet.actions.verify import verify_as
from wallet.core import notes
from wallet.core.errors import Malformed
from wallet.core.money import format_amount
from wallet.models import Note, Person
from wallet.web import guard, idempotency, ratelimit
from wallet.web.api import bp, person_of


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
def export_note(slug: str) -> Response:
    """Export part of the caller's wallet as a note bound to `holder_jwk`."""
    principal = guard.api_principal(slug)
    person = person_of(principal)
    assert principal.org.id is not None
    return idempotency.run(org_id=principal.org.id, scope=f"me/notes:{person.id}",
                           handler=lambda body: _export(slug, principal, person, body))


def _export(slug: str, principal: guard.Principal, person: Person,
            body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    if set(body) - {"amount", "currency", "holder_jwk"}:
        raise Malformed("body members are amount, currency (optional) and holder_jwk")
    row = note_actions.export(db.session(), slug=slug, email=person.email,
                              amount=body.get("amount"), currency=body.get("currency"),
                              holder_jwk=body.get("holder_jwk"), actor=principal.actor,
                              request_key=idempotency.request_key())
    return 201, note_json(row)


@bp.get("/orgs/<slug>/me/notes")
def my_notes(slug: str) -> dict[str, Any]:
    """The caller's notes at this organisation."""
    principal = guard.api_principal(slug)
    views = note_actions.of_person(db.session(), org=principal.org, person=person_of(principal))
    return {"notes": [note_json(v.row) | {"state": v.display_state} for v in views]}


def _caller(bucket: str, slug: str) -> Person | None:
    """The engineer behind an optionally authenticated call, or None when anonymous;
    the request counted in rate-limit `bucket` (per person or token, else per address).

    A bearer token, or a signed-in session that sends its `X-CSRF-Token` (as every
    session call that changes something must), is checked as for any API call: a bad
    token is 401, never quietly anonymous. A session without the header — a cross-site
    form cannot add one — is anonymous. A service token is no person: anonymous too
    (but counted per token).
    """

    def authenticate() -> guard.Principal | None:
        if request.headers.get("Authorization") or (
                guard.current_person() is not None and request.headers.get("X-CSRF-Token")):
            return guard.api_principal(slug)
        return None

    principal = ratelimit.limit_caller(bucket, authenticate)
    return None if principal is None else principal.person


@bp.post("/orgs/<slug>/verify")
def verify(slug: str) -> dict[str, Any]:
    """Verify a note or presentations as this organisation would; no side effects."""
    caller = _caller("verify", slug)
    if not request.is_json:
        raise Malformed("send JSON with Content-Type: application/json")
    try:
        body = request.get_json()  # `null` is JSON too and gets a report
    except BadRequest:
        raise Malformed("the body is not valid JSON") from None
    return verify_as(db.session(), slug=slug, body=body,
                     person_id=caller.id if caller is not None else None).as_json()


@bp.post("/orgs/<slug>/notes/reissue")
def reissue(slug: str) -> tuple[dict[str, Any], int]:
    """Reissue an expired note to its holder (proof: a presentation made for this issuer)."""
    ratelimit.limit("reissue")
    body = idempotency.json_body()
    if set(body) != {"presentation"}:
        raise Malformed('send {"presentation": "<expired note>~<KB-JWT for this issuer>"}')
    fresh, old = note_actions.reissue_presented(db.session(), slug=slug,
                                                presentation=body["presentation"])
    return {**note_json(fresh), "replaces": old}, 201


@bp.post("/orgs/<slug>/nonces")
def nonces(slug: str) -> tuple[dict[str, Any], int]:
    """A fresh single-use nonce for presentations to this organisation.

    Asked for as an engineer (token or session), it is bound to them: honour spends
    only a nonce bound to the person it credits. Anonymous nonces serve verify.
    """
    caller = _caller("nonces", slug)
    value, expires = nonce_actions.new_nonce(
        db.session(), slug=slug, person_id=caller.id if caller is not None else None)
    return {"nonce": value, "audience": signing.issuer_id_of(slug),
            "expires_at": int(expires.timestamp()), "bound": caller is not None}, 201
