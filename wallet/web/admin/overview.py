"""Admin: the overview (the pool, liabilities, funding) and the audit log."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import finance
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.core.errors import IdempotencyConflict, WalletError
from wallet.core.money import format_display
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.fields import add_error
from wallet.web.forms import FundForm


@bp.route("/", methods=["GET", "POST"])
@guard.login_required
def overview(slug: str) -> Response | tuple[str, int]:
    """The pool and the fund form."""
    access = guard.org_access(slug, admin=True)
    form = FundForm()
    status = 200
    if form.validate_on_submit():
        if form.already_recorded():
            status = 409
        else:
            done = _fund(slug, form)
            if isinstance(done, Response):
                return done
            status = done
    pool = ledger_actions.pool(db.session(), org=access.org)
    liabilities = finance.liabilities(db.session(), org=access.org)
    return render_template("admin/overview.html", access=access, form=form, pool=pool,
                           liabilities=liabilities), status


def _fund(slug: str, form: FundForm) -> Response | int:
    """Fund the pool and redirect, or put the refusal on the form (a status)."""
    try:
        recorded = ledger_actions.fund(
            db.session(), slug=slug, amount=form.amount.data or "",
            idempotency_key=form.idempotency_key.data or "",
            memo=form.memo.data or "", actor=guard.actor())
    except IdempotencyConflict:
        form.key_spent()
        return 409
    except WalletError as err:
        add_error(form.amount, err.message)
        return 200
    t = recorded.transfer
    funded = format_display(t.amount, t.currency)
    form.recorded(f"pool funded with {funded}" + (f" ({t.memo})" if t.memo else ""))
    if recorded.created:
        flash(f"Pool funded with {funded}.", "success")
    else:
        flash("That funding was already recorded; nothing changed.", "info")
    return redirect(url_for("admin.overview", slug=slug))


@bp.get("/audit")
@guard.login_required
def audit(slug: str) -> str:
    """Every administrative action: who, what, when."""
    access = guard.org_access(slug, admin=True)
    events = org_actions.audit_events(db.session(), org=access.org, limit=200)
    return render_template("admin/audit.html", access=access, events=events)
