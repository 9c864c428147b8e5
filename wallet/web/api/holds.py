"""Holds: a gateway reserves credit before a model call and settles it after
(docs/gateway.md). Service token only; writes need an `Idempotency-Key`.

The writes store their answer without claiming the key first (`claim=False`): each is
one short transaction that never commits on the way, and its duplicates meet on the
hold's own unique key or on the conditional update of its row.

    POST /api/v1/orgs/<slug>/holds                 place (201)
    POST /api/v1/orgs/<slug>/holds/<id>/capture    settle with the usage (200)
    POST /api/v1/orgs/<slug>/holds/<id>/void       release it all (200)
    GET  /api/v1/orgs/<slug>/holds/<id>            the hold as it stands
"""

from __future__ import annotations

from typing import Any

from flask import Response

from wallet import db
from wallet.actions import holds as hold_actions
from wallet.web import guard, idempotency
from wallet.web.api import bp


@bp.post("/orgs/<slug>/holds")
def place_hold(slug: str) -> Response:
    """Reserve the worst case of one call for an engineer."""
    principal = guard.api_principal(slug, service=True)
    assert principal.org.id is not None

    def place(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        placed = hold_actions.place(db.session(), slug=slug, body=body,
                                    idempotency_key=idempotency.request_key(),
                                    actor=principal.actor)
        return 201, hold_actions.as_json(placed)

    return idempotency.run(org_id=principal.org.id, scope="holds", handler=place,
                           claim=False)


@bp.post("/orgs/<slug>/holds/<hold_id>/capture")
def capture_hold(slug: str, hold_id: str) -> Response:
    """Settle a hold with what the call used."""
    principal = guard.api_principal(slug, service=True)
    assert principal.org.id is not None

    def capture(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        closed = hold_actions.capture(db.session(), slug=slug, hold_id=hold_id, body=body,
                                      actor=principal.actor)
        return 200, hold_actions.as_json(closed)

    return idempotency.run(org_id=principal.org.id, scope=f"holds/{hold_id[:60]}/capture",
                           handler=capture, claim=False)


@bp.post("/orgs/<slug>/holds/<hold_id>/void")
def void_hold(slug: str, hold_id: str) -> Response:
    """Release a hold whose call failed or was not made."""
    principal = guard.api_principal(slug, service=True)
    assert principal.org.id is not None

    def void(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        closed = hold_actions.void(db.session(), slug=slug, hold_id=hold_id,
                                   actor=principal.actor, body=body)
        return 200, hold_actions.as_json(closed)

    return idempotency.run(org_id=principal.org.id, scope=f"holds/{hold_id[:60]}/void",
                           handler=void, claim=False)


@bp.get("/orgs/<slug>/holds/<hold_id>")
def get_hold(slug: str, hold_id: str) -> dict[str, Any]:
    """One hold of this organisation."""
    principal = guard.api_principal(slug, service=True)
    return hold_actions.as_json(hold_actions.get(db.session(), slug=slug, hold_id=hold_id,
                                                 actor=principal.actor))
