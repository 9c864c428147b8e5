"""The JSON API under /api/v1 (docs/protocol.md). Errors are problem+json (errors.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from wallet import db
from wallet.actions import wallets
from wallet.core.errors import Forbidden
from wallet.core.money import format_amount
from wallet.models import Person
from wallet.web import guard

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def summary_json(summary: wallets.Summary) -> dict[str, Any]:
    """Balances as decimal strings."""
    return {
        "currency": summary.currency,
        "available": format_amount(summary.available),
        "unvested": format_amount(summary.unvested),
        "spent": format_amount(summary.spent),
        "outstanding_notes": format_amount(summary.outstanding_notes),
        "held": format_amount(summary.held),
        "holds_open": summary.holds_open,
    }


def person_of(principal: guard.Principal, why: str = "a service token has no wallet") -> Person:
    """The engineer behind an API call, or `Forbidden` for a service token."""
    if principal.person is None:
        raise Forbidden(why)
    return principal.person


@bp.get("/orgs/<slug>/me")
def me(slug: str) -> dict[str, Any]:
    """The caller's balances at this organisation."""
    principal = guard.api_principal(slug)
    person = person_of(principal)
    summary = wallets.summary(db.session(), org=principal.org, person=person)
    return {"email": person.email, "balance": summary_json(summary)}


# Each capability registers its routes on `bp` from its own module.
from wallet.web.api import _routes  # noqa: E402,F401  isort: skip
