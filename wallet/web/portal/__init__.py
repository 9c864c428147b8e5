"""The engineer's portal: dashboard, transactions, API tokens."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import orgs as org_actions
from wallet.actions import wallets
from wallet.core.errors import WalletError
from wallet.store import people
from wallet.web import guard
from wallet.web.forms import TokenForm

bp = Blueprint("portal", __name__, url_prefix="/orgs/<slug>")


@bp.get("/")
@guard.login_required
def index(slug: str) -> Response:
    """An organisation's home: the wallet."""
    guard.org_access(slug)
    return redirect(url_for("portal.dashboard", slug=slug))


@bp.get("/wallet")
@guard.login_required
def dashboard(slug: str) -> str:
    """Balances at a glance."""
    access = guard.org_access(slug)
    summary = wallets.summary(db.session(), org=access.org, person=access.person)
    return render_template("portal/dashboard.html", access=access, summary=summary)


@bp.route("/tokens", methods=["GET", "POST"])
@guard.login_required
def tokens(slug: str) -> Response | str:
    """Personal API tokens: create (shown once), list, revoke."""
    access = guard.org_access(slug, write=True)
    form = TokenForm()
    if form.validate_on_submit():
        try:
            token, _row = org_actions.create_token(
                db.session(), slug=slug, email=access.person.email,
                label=form.label.data or "", actor=guard.actor())
        except WalletError as err:
            flash(err.message, "error")
        else:
            session["new_token"] = token  # shown on the next page load, then forgotten
            flash("Token created. Copy it now: it is shown only once.", "success")
            return redirect(url_for("portal.tokens", slug=slug))
    assert access.org.id is not None
    rows = people.tokens_of(db.session(), org_id=access.org.id, person_id=access.person.id)
    return render_template("portal/tokens.html", access=access, form=form, rows=rows,
                           new_token=session.pop("new_token", None))


@bp.post("/tokens/<int(max=2147483647):token_id>/revoke")
@guard.login_required
def revoke_token(slug: str, token_id: int) -> Response:
    """Revoke one of my tokens."""
    guard.org_access(slug)
    TokenForm().validate_on_submit()  # CSRF is checked globally; this keeps the form uniform
    try:
        org_actions.revoke_token(db.session(), slug=slug, token_id=token_id, actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
    else:
        flash("Token revoked.", "success")
    return redirect(request.referrer or url_for("portal.tokens", slug=slug))


# Each capability registers its routes on `bp` from its own module.
from wallet.web.portal import _routes  # noqa: E402,F401  isort: skip
