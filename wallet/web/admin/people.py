"""Admin: the organisation's members; add someone, invite them again."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import orgs as org_actions
from wallet.core.errors import NotFound, WalletError
from wallet.models import Person
from wallet.store import people
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.forms import PersonForm


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
