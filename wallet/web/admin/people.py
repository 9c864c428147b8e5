"""Admin: the organisation's members; add someone, invite them again."""

from __future__ import annotations

from flask import flash, redirect, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import mail as mail_actions
from wallet.actions import orgs as org_actions
from wallet.core.errors import NotFound, WalletError
from wallet.web import guard
from wallet.web.admin import bp, member, members_page
from wallet.web.fields import add_error
from wallet.web.forms import PersonForm


@bp.route("/people", methods=["GET", "POST"])
@guard.login_required
def people_page(slug: str) -> Response | str:
    """Members of the organisation; add someone."""
    access = guard.org_access(slug, admin=True)
    form = PersonForm()
    if form.validate_on_submit() and (added := _add(slug, form)) is not None:
        if not added.invite:
            return redirect(url_for("admin.people_page", slug=slug))
        return members_page(access, form, **link_shown("invite", added.invite,
                                                       added.person.email))
    return members_page(access, form)


def link_shown(kind: str, token: str, email: str) -> dict[str, str | None]:
    """What the page says of a link just issued (`invite` or `reset`): that it was
    emailed; or, when mail only goes to the log, the link itself to hand over."""
    if not mail_actions.log_only():
        return {f"{kind}_emailed": email}
    endpoint = "auth.accept_invite" if kind == "invite" else "auth.reset_password"
    return {f"{kind}_url": url_for(endpoint, token=token, _external=True)}


def _add(slug: str, form: PersonForm) -> org_actions.Added | None:
    """Add the person (flashed); None when refused, the reason next to the email."""
    try:
        added = org_actions.add_person(
            db.session(), slug=slug, email=form.email.data or "", role=form.role.data,
            start=form.start.data, name=form.name.data or "", actor=guard.actor())
    except WalletError as err:
        add_error(form.email, err.message)
        return None
    flash(f"{added.person.email} added.", "success")
    return added


@bp.post("/people/<int(max=2147483647):person_id>/invite")
@guard.login_required
def reinvite(slug: str, person_id: int) -> Response | str:
    """A fresh invitation link for a member who has not joined (confirmed) yet."""
    access = guard.org_access(slug, admin=True)
    found = member(access, person_id)
    if found is None:
        raise NotFound("no such member")
    try:
        token = org_actions.invite_again(db.session(), slug=slug, email=found[1].email,
                                         actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
        return redirect(url_for("admin.people_page", slug=slug))
    return members_page(access, PersonForm(), **link_shown("invite", token, found[1].email))
