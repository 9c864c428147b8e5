"""Sign in, sign out, accept an invitation; the landing page."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import orgs as org_actions
from wallet.core.errors import RateLimited, Unauthorized, WalletError
from wallet.store import people
from wallet.web import guard
from wallet.web.forms import LoginForm, SetPasswordForm, SignOutForm

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str | None:
    """Only follow a `next` that stays on this site (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@bp.get("/")
def home() -> Response | str:
    """Send people to their organisation, or to the sign-in page."""
    person = guard.current_person()
    if person is None:
        return redirect(url_for("auth.login"))
    assert person.id is not None
    rows = people.memberships_of(db.session(), person_id=person.id)
    if len(rows) == 1:
        return redirect(url_for("portal.dashboard", slug=rows[0][1].slug))
    return render_template("choose_org.html", rows=rows)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """Sign in with email and password."""
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            person = org_actions.sign_in(db.session(), email=form.email.data or "",
                                         password=form.password.data or "",
                                         address=guard.client_address())
        except RateLimited as err:
            form.form_errors.append(err.message)
            status = 429
        except Unauthorized as err:
            form.form_errors.append(err.message)
            status = 401
        else:
            guard.start_session(person)
            return redirect(_safe_next(request.args.get("next")) or url_for("auth.home"))
    return render_template("login.html", form=form), status


@bp.post("/logout")
def logout() -> Response:
    """Sign out (a POST with a CSRF token, so no other site can sign you out)."""
    SignOutForm().validate_on_submit()
    guard.end_session()
    flash("You are signed out.", "success")
    return redirect(url_for("auth.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invite(token: str) -> Response | str | tuple[str, int]:
    """Choose a password from an invitation link."""
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            person = org_actions.accept_invite(db.session(), token=token,
                                               password=form.password.data or "")
        except WalletError as err:
            form.form_errors.append(err.message)
            return render_template("invite.html", form=form), err.status
        guard.start_session(person)
        flash("Your password is set. Welcome!", "success")
        return redirect(url_for("auth.home"))
    return render_template("invite.html", form=form)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    """Liveness and database reachability."""
    try:
        db.ping()
    except Exception:
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}, 200
