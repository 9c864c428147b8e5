"""The JSON API under /api/v1 (DESIGN §7). Errors are problem+json (errors.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from wallet import db
from wallet.actions import wallets
from wallet.core.errors import Forbidden
from wallet.core.money import format_amount
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
    }


@bp.get("/orgs/<slug>/me")
def me(slug: str) -> dict[str, Any]:
    """The caller's balances at this organisation."""
    principal = guard.api_principal(slug)
    if principal.person is None:
        raise Forbidden("a service token has no wallet")
    summary = wallets.summary(db.session(), org=principal.org, person=principal.person)
    return {"email": principal.person.email, "balance": summary_json(summary)}


# Each capability registers its routes on `bp` from its own module.
from wallet.web.api import _routes  # noqa: E402,F401  isort: skip
