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
from wallet.models import Person
from wallet.store import people
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.forms import PersonForm, TerminateForm


@bp.route("/people/<int(max=2147483647):person_id>/terminate", methods=["GET", "POST"])
@guard.login_required
def terminate(slug: str, person_id: int) -> Response | tuple[str, int] | str:
    """Show what ending someone's employment does, and do it."""
    access = guard.org_access(slug, admin=True)
    session = db.session()
    assert access.org.id is not None
    membership = people.membership(session, org_id=access.org.id, person_id=person_id)
    person = session.get(Person, person_id)
    if membership is None or person is None:
        abort(404)
    form = TerminateForm()
    status = 200
    if form.validate_on_submit():
        assert form.on.data is not None
        try:
            done = grant_actions.terminate(session, slug=slug, person_id=person_id,
                                           on=form.on.data, actor=guard.actor())
        except WalletError as err:
            form.on.errors = [*form.on.errors, err.message]
            status = 422
        else:
            if done.created:
                flash(f"{done.email}'s employment ends on {done.ended_on.isoformat()}. "
                      f"{done.forfeited_count} unvested tranche(s), "
                      f"{format_display(done.forfeited, access.org.currency)}, returned to"
                      " the pool.", "success")
            else:
                flash(f"{done.email}'s employment already ends on {done.ended_on.isoformat()};"
                      " nothing changed.", "info")
            return redirect(url_for("admin.people_page", slug=slug))
    elif form.is_submitted():
        status = 422
    summary = wallets.summary(session, org=access.org, person=person)
    return render_template("admin/terminate.html", access=access, form=form, person=person,
                           membership=membership, summary=summary), status


@bp.post("/people/<int(max=2147483647):person_id>/reset")
@guard.login_required
def reset_link(slug: str, person_id: int) -> Response | str:
    """A single-use password reset link (1 hour) for a member, shown once."""
    access = guard.org_access(slug, admin=True)
    session = db.session()
    assert access.org.id is not None
    person = session.get(Person, person_id)
    if person is None or people.membership(session, org_id=access.org.id,
                                           person_id=person_id) is None:
        abort(404)
    try:
        token = org_actions.reset_link(session, slug=slug, email=person.email,
                                       actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
        return redirect(url_for("admin.people_page", slug=slug))
    rows = people.members(session, org_id=access.org.id)
    return render_template("admin/people.html", access=access, form=PersonForm(), rows=rows,
                           reset_url=url_for("auth.reset_password", token=token,
                                             _external=True), reset_for=person.email)
