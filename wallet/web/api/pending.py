"""API: how a pending honour stands (docs/federation.md, "When the issuer sleeps")."""

from __future__ import annotations

from typing import Any

from wallet import db
from wallet.actions import pending
from wallet.web import guard
from wallet.web.api import bp, person_of


@bp.get("/orgs/<slug>/honours/<public_id>")
def pending_honour(slug: str, public_id: str) -> dict[str, Any]:
    """The state of one of the caller's pending honours: pending, honoured, refused
    (with the reason) or expired."""
    principal = guard.api_principal(slug)
    person = person_of(principal, "a pending honour is a person's: use a personal token")
    return pending.status(db.session(), slug=slug, person=person,
                          public_id=public_id).as_json()
