"""The engineer's personal API tokens: create, list, revoke."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import orgs as org_actions
from wallet.actions._base import utcnow
from wallet.core.errors import WalletError
from wallet.web import guard
from wallet.web.fields import add_error
from wallet.web.forms import TokenForm
from wallet.web.portal import bp


@bp.route("/tokens", methods=["GET", "POST"])
@guard.login_required
def tokens(slug: str) -> tuple[str, int]:
    """Personal API tokens: create (shown once, in this answer only), list, revoke."""
    access = guard.org_access(slug, write=True)
    form = TokenForm()
    new_token, status = None, 200
    if form.validate_on_submit():
        new_token, status = _create(slug, access, form)
        if new_token is not None:
            form = TokenForm(formdata=None)  # a blank form under the new token
    elif form.is_submitted():
        status = 422
    return _page(access, form, new_token), status


def _page(access: guard.Access, form: TokenForm, new_token: str | None) -> str:
    """The tokens page; `new_token`: one just made, shown once."""
    rows = org_actions.tokens_of(db.session(), org=access.org, person=access.person)
    # The token goes out in this answer and nowhere else (not the session, not a log):
    # the page is not cached, and a reload would ask before sending the form again.
    return render_template("portal/tokens.html", access=access, form=form, rows=rows,
                           new_token=new_token, now=utcnow())


def _create(slug: str, access: guard.Access, form: TokenForm) -> tuple[str | None, int]:
    """The new token and 200; or None and the status, the refusal put next to the label."""
    try:
        new_token, _row = org_actions.create_token(
            db.session(), slug=slug, email=access.person.email,
            label=form.label.data or "", expires_days=form.expires_days.data,
            actor=guard.actor())
    except WalletError as err:
        add_error(form.label, err.message)
        return None, err.status
    return new_token, 200


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
