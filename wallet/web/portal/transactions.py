"""The engineer's transactions: every ledger movement of their wallet and unvested credit."""

from __future__ import annotations

from typing import Any

from flask import render_template, request

from wallet import db
from wallet.core import ledger as rules
from wallet.models import Transfer
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
    items = [_item(r, names, rules.wallet(access.person.id)) for r in rows[:PAGE]]
    return render_template("portal/transactions.html", access=access, items=items, page=page,
                           has_next=len(rows) > PAGE, kind=kind, kinds=KINDS)


def _item(row: Transfer, names: dict[int, str], wallet_name: str) -> dict[str, Any]:
    """One transfer as the page lists it: its accounts by name, and what it did to the
    available balance (`sign`: in 1, out -1, or neither 0)."""
    return {
        "row": row, "source": names.get(row.from_account_id, "?"),
        "destination": names.get(row.to_account_id, "?"),
        "sign": 1 if names.get(row.to_account_id) == wallet_name else (
            -1 if names.get(row.from_account_id) == wallet_name else 0),
    }
