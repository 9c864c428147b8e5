"""API: the caller's balances."""

from __future__ import annotations

from typing import Any

from wallet import db
from wallet.actions import wallets
from wallet.core.money import format_amount
from wallet.web import guard
from wallet.web.api import bp, person_of


def summary_json(summary: wallets.Summary) -> dict[str, Any]:
    """Balances as decimal strings."""
    return {
        "currency": summary.currency,
        "available": format_amount(summary.available),
        "unvested": format_amount(summary.unvested),
        "spent": format_amount(summary.spent),
        "outstanding_notes": format_amount(summary.outstanding_notes),
        "held": format_amount(summary.held),  # reserved by calls in progress
        "holds_open": summary.holds_open,
    }


@bp.get("/orgs/<slug>/me")
def me(slug: str) -> dict[str, Any]:
    """The caller's balances at this organisation."""
    principal = guard.api_principal(slug)
    person = person_of(principal)
    summary = wallets.summary(db.session(), org=principal.org, person=person, charts=False)
    return {"email": person.email, "balance": summary_json(summary)}
