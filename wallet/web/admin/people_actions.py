"""Admin: end an engineer's employment on a date (unvested credit returns to the pool);
issue a password reset link."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import grants as grant_actions
from wallet.actions import orgs as org_actions
from wallet.actions import wallets
from wallet.core.errors import WalletError
from wallet.core.money import format_display
from wallet.web import guard
from wallet.web.admin import bp, member, members_page
from wallet.web.admin.people import link_shown
from wallet.web.fields import add_error
from wallet.web.forms import PersonForm, TerminateForm


@bp.route("/people/<int(max=2147483647):person_id>/terminate", methods=["GET", "POST"])
@guard.login_required
def terminate(slug: str, person_id: int) -> Response | tuple[str, int] | str:
    """Show what ending someone's employment does, and do it."""
    access = guard.org_access(slug, admin=True)
    found = member(access, person_id)
    if found is None:
        abort(404)
    membership, person = found
    form = TerminateForm()
    status = 200
    if form.validate_on_submit():
        done = _terminate(slug, person_id, form, access.org.currency)
        if isinstance(done, Response):
            return done
        status = done
    elif form.is_submitted():
        status = 422
    summary = wallets.summary(db.session(), org=access.org, person=person)
    return render_template("admin/terminate.html", access=access, form=form, person=person,
                           membership=membership, summary=summary), status


def _terminate(slug: str, person_id: int, form: TerminateForm, currency: str) -> Response | int:
    """End the employment and redirect, or put the refusal next to the date (a status)."""
    assert form.on.data is not None
    try:
        done = grant_actions.terminate(db.session(), slug=slug, person_id=person_id,
                                       on=form.on.data, actor=guard.actor())
    except WalletError as err:
        add_error(form.on, err.message)
        return 422
    if done.created:
        flash(f"{done.email}'s employment ends on {done.ended_on.isoformat()}. "
              f"{done.forfeited_count} unvested tranche(s), "
              f"{format_display(done.forfeited, currency)}, returned to the pool.", "success")
    else:
        flash(f"{done.email}'s employment already ends on {done.ended_on.isoformat()};"
              " nothing changed.", "info")
    return redirect(url_for("admin.people_page", slug=slug))


@bp.post("/people/<int(max=2147483647):person_id>/reset")
@guard.login_required
def reset_link(slug: str, person_id: int) -> Response | str:
    """A single-use password reset link (1 hour) for a member, shown once."""
    access = guard.org_access(slug, admin=True)
    found = member(access, person_id)
    if found is None:
        abort(404)
    _membership, person = found
    try:
        token = org_actions.reset_link(db.session(), slug=slug, email=person.email,
                                       actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
        return redirect(url_for("admin.people_page", slug=slug))
    return members_page(access, PersonForm(), reset_for=person.email,
                        **link_shown("reset", token, person.email))
