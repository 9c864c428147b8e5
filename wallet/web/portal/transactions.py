"""The engineer's transactions: every ledger movement of their wallet and unvested credit."""

from __future__ import annotations

from flask import Response, render_template, request

from wallet import db
from wallet.actions import exports as export_actions
from wallet.actions import ledger as ledger_actions
from wallet.web import guard
from wallet.web.admin.exports import csv_response
from wallet.web.paging import page_number
from wallet.web.portal import bp

PAGE = 25
KINDS = ("grant", "vest", "forfeit", "spend", "export", "note_revoke", "note_reclaim",
         "honour")


@bp.get("/transactions")
@guard.login_required
def transactions(slug: str) -> str:
    """Paginated, filterable list of my transfers."""
    access = guard.org_access(slug)
    kind = request.args.get("kind") or None
    if kind not in KINDS:
        kind = None
    page = page_number()
    rows = ledger_actions.transfers_of(db.session(), org=access.org, person=access.person,
                                       kind=kind, limit=PAGE + 1, offset=(page - 1) * PAGE)
    return render_template("portal/transactions.html", access=access, items=rows[:PAGE],
                           page=page, has_next=len(rows) > PAGE, kind=kind, kinds=KINDS)


@bp.get("/transactions.csv")
@guard.login_required
def transactions_csv(slug: str) -> Response:
    """Download my transactions at this organisation as CSV (optional from/to dates)."""
    access = guard.org_access(slug)
    prepared = export_actions.my_transactions(db.session(), org=access.org,
                                              person=access.person,
                                              start=request.args.get("from"),
                                              end=request.args.get("to"))
    return csv_response(prepared)
