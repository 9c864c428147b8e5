"""The engineer's transactions: every ledger movement of their wallet and unvested credit."""

from __future__ import annotations

from flask import render_template, request

from wallet import db
from wallet.core import ledger as rules
from wallet.store import ledger as ledger_store
from wallet.web import guard
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
    assert access.org.id is not None and access.person.id is not None
    kind = request.args.get("kind") or None
    if kind not in KINDS:
        kind = None
    page = page_number()
    session = db.session()
    mine = [rules.wallet(access.person.id), rules.unvested(access.person.id)]
    rows = ledger_store.transfers(session, org_id=access.org.id, account_names=mine, kind=kind,
                                  limit=PAGE + 1, offset=(page - 1) * PAGE)
    names = ledger_store.account_names(
        session, ids={r.from_account_id for r in rows} | {r.to_account_id for r in rows})
    wallet_name = rules.wallet(access.person.id)
    items = [{
        "row": r, "source": names.get(r.from_account_id, "?"),
        "destination": names.get(r.to_account_id, "?"),
        # What the movement did to the available balance: in, out, or neither.
        "sign": 1 if names.get(r.to_account_id) == wallet_name else (
            -1 if names.get(r.from_account_id) == wallet_name else 0),
    } for r in rows[:PAGE]]
    return render_template("portal/transactions.html", access=access, items=items, page=page,
                           has_next=len(rows) > PAGE, kind=kind, kinds=KINDS)
