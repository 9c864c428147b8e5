"""Administration pages: overview and funding, people, audit log."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import finance
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.core.errors import IdempotencyConflict, NotFound, WalletError
from wallet.core.money import format_display
from wallet.models import Person
from wallet.store import people
from wallet.web import guard
from wallet.web.forms import FundForm, PersonForm

bp = Blueprint("admin", __name__, url_prefix="/orgs/<slug>/admin")


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
            try:
                recorded = ledger_actions.fund(
                    db.session(), slug=slug, amount=form.amount.data or "",
                    idempotency_key=form.idempotency_key.data or "",
                    memo=form.memo.data or "", actor=guard.actor())
            except IdempotencyConflict:
                form.key_spent()
                status = 409
            except WalletError as err:
                form.amount.errors = [*form.amount.errors, err.message]
            else:
                t = recorded.transfer
                form.recorded(f"pool funded with {format_display(t.amount, t.currency)}"
                              + (f" ({t.memo})" if t.memo else ""))
                if recorded.created:
                    flash(f"Pool funded with {format_display(t.amount, t.currency)}.",
                          "success")
                else:
                    flash("That funding was already recorded; nothing changed.", "info")
                return redirect(url_for("admin.overview", slug=slug))
    pool = ledger_actions.pool(db.session(), org=access.org)
    liabilities = finance.liabilities(db.session(), org=access.org)
    return render_template("admin/overview.html", access=access, form=form, pool=pool,
                           liabilities=liabilities), status


@bp.route("/people", methods=["GET", "POST"])
@guard.login_required
def people_page(slug: str) -> Response | str:
    """Members of the organisation; add someone."""
    access = guard.org_access(slug, admin=True)
    form = PersonForm()
    invite_url = None
    if form.validate_on_submit():
        try:
            added = org_actions.add_person(
                db.session(), slug=slug, email=form.email.data or "", role=form.role.data,
                start=form.start.data, name=form.name.data or "", actor=guard.actor())
        except WalletError as err:
            form.email.errors = [*form.email.errors, err.message]
        else:
            flash(f"{added.person.email} added.", "success")
            if added.invite:
                invite_url = url_for("auth.accept_invite", token=added.invite, _external=True)
            else:
                return redirect(url_for("admin.people_page", slug=slug))
    assert access.org.id is not None
    rows = people.members(db.session(), org_id=access.org.id)
    return render_template("admin/people.html", access=access, form=form, rows=rows,
                           invite_url=invite_url)


@bp.post("/people/<int(max=2147483647):person_id>/invite")
@guard.login_required
def reinvite(slug: str, person_id: int) -> Response | str:
    """A fresh invitation link for a member who has not joined (confirmed) yet."""
    access = guard.org_access(slug, admin=True)
    assert access.org.id is not None
    person = db.session().get(Person, person_id)
    if person is None or people.membership(db.session(), org_id=access.org.id,
                                           person_id=person_id) is None:
        raise NotFound("no such member")
    try:
        token = org_actions.invite_again(db.session(), slug=slug, email=person.email,
                                         actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
        return redirect(url_for("admin.people_page", slug=slug))
    rows = people.members(db.session(), org_id=access.org.id)
    return render_template("admin/people.html", access=access, form=PersonForm(), rows=rows,
                           invite_url=url_for("auth.accept_invite", token=token,
                                              _external=True))


@bp.get("/audit")
@guard.login_required
def audit(slug: str) -> str:
    """Every administrative action: who, what, when."""
    access = guard.org_access(slug, admin=True)
    assert access.org.id is not None
    events = people.audit_events(db.session(), org_id=access.org.id, limit=200)
    return render_template("admin/audit.html", access=access, events=events)


# Each capability registers its routes on `bp` from its own module.
from wallet.web.admin import _routes  # noqa: E402,F401  isort: skip
