"""Sign in and out, invitations and reset links, my account (password, sessions)."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import accounts
from wallet.actions import sessions as session_actions
from wallet.core.errors import RateLimited, Unauthorized, WalletError
from wallet.models import Person
from wallet.web import guard
from wallet.web.forms import (
    ChangePasswordForm,
    JoinForm,
    JoinWithPasswordForm,
    LoginForm,
    SetPasswordForm,
    SignOutForm,
)

bp = Blueprint("auth", __name__)

Page = Response | str | tuple[str, int] | tuple[str, int, dict[str, str]]


def _safe_next(target: str | None) -> str | None:
    """Only follow a `next` that stays on this site (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


def _headers(err: WalletError) -> dict[str, str]:
    """A 429 tells when to come back."""
    wait = err.extra.get("retry_after") if isinstance(err, RateLimited) else None
    return {"Retry-After": str(wait)} if wait else {}


@bp.get("/")
def home() -> Response | str:
    """Send people to their organisation, or to the sign-in page."""
    person = guard.current_person()
    if person is None:
        return redirect(url_for("auth.login"))
    rows = accounts.memberships(db.session(), person=person)
    if len(rows) == 1:
        return redirect(url_for("portal.dashboard", slug=rows[0][1].slug))
    return render_template("choose_org.html", rows=rows)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    """Sign in with email and password."""
    form = LoginForm()
    if form.validate_on_submit():
        try:
            person = accounts.sign_in(db.session(), email=form.email.data or "",
                                      password=form.password.data or "",
                                      address=guard.client_address())
        except (RateLimited, Unauthorized) as err:
            form.form_errors.append(err.message)
            return render_template("login.html", form=form), err.status, _headers(err)
        guard.start_session(person)
        return redirect(_safe_next(request.args.get("next")) or url_for("auth.home"))
    return render_template("login.html", form=form)


@bp.post("/logout")
def logout() -> Response:
    """Sign out (a POST with a CSRF token, so no other site can sign you out)."""
    SignOutForm().validate_on_submit()
    guard.end_session()
    flash("You are signed out.", "success")
    return redirect(url_for("auth.login"))


@bp.route("/invite/<token>", methods=["GET", "POST"])
def accept_invite(token: str) -> Page:
    """Join an organisation from its invitation: choose a first password, or confirm with
    the account's own (or while signed in as it)."""
    found = _live_link(token, "join")
    if not isinstance(found, accounts.Link):
        return found
    me = guard.current_person()
    if me is not None and me.id != found.person.id:
        return render_template("invite.html", link=found, form=None, other=True), 403
    form = (SetPasswordForm() if not found.has_password
            else JoinForm() if me is not None else JoinWithPasswordForm())
    if not form.validate_on_submit():
        return render_template("invite.html", link=found, form=form,
                               other=False), 422 if form.is_submitted() else 200
    return _join(token, found, form, me)


def _join(token: str, found: accounts.Link,
          form: SetPasswordForm | JoinForm | JoinWithPasswordForm, me: Person | None) -> Page:
    """Accept the invitation and start a session; or the page again with the refusal."""
    password = form.password.data if isinstance(form, SetPasswordForm | JoinWithPasswordForm) \
        else ""
    try:
        person = accounts.accept_invitation(db.session(), token=token, password=password or "",
                                            address=guard.client_address(), signed_in=me)
    except WalletError as err:
        form.form_errors.append(err.message)
        return render_template("invite.html", link=found, form=form,
                               other=False), err.status, _headers(err)
    guard.start_session(person)  # new privileges, new session key
    flash(f"Welcome to {found.org.name}!", "success")
    return redirect(url_for("portal.dashboard", slug=found.org.slug))


def _live_link(token: str, purpose: str) -> accounts.Link | tuple[str, int]:
    """The invitation or reset link of `token`; or, used or expired, the page saying so."""
    try:
        return accounts.link(db.session(), token=token, purpose=purpose)
    except Unauthorized as err:
        return _dead_link(err)


def _dead_link(err: Unauthorized) -> tuple[str, int]:
    """A used or expired link: say so, and offer to sign in (the account may exist)."""
    return render_template("link_invalid.html", message=err.message, form=LoginForm(),
                           signed_in=guard.current_person() is not None), err.status


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str) -> Page:
    """Choose a new password from a reset link an administrator handed over."""
    found = _live_link(token, "reset")
    if not isinstance(found, accounts.Link):
        return found
    form = SetPasswordForm()
    if not form.validate_on_submit():
        return render_template("reset.html", link=found,
                               form=form), 422 if form.is_submitted() else 200
    try:
        person = accounts.use_reset_link(db.session(), token=token,
                                         password=form.password.data or "")
    except WalletError as err:
        form.form_errors.append(err.message)
        return render_template("reset.html", link=found, form=form), err.status
    guard.start_session(person)
    flash("Your new password is set; you were signed out everywhere else.", "success")
    return redirect(url_for("portal.dashboard", slug=found.org.slug))


@bp.get("/account")
@guard.login_required
def account() -> str:
    """My account: change the password, see my sessions, sign out everywhere."""
    return _account_page(ChangePasswordForm())


def _account_page(form: ChangePasswordForm) -> str:
    person = guard.current_person()
    assert person is not None and person.id is not None
    return render_template("account.html", form=form, person=person,
                           sessions=session_actions.store().of_person(person.id),
                           current=guard.session_key_hash())


@bp.post("/account/password")
@guard.login_required
def change_password() -> Page:
    """Change my password (the current one required); every other session ends."""
    form = ChangePasswordForm()
    if not form.validate_on_submit():
        return _account_page(form), 422
    person = guard.current_person()
    assert person is not None
    try:
        person = accounts.change_password(db.session(), person=person,
                                          current=form.current.data or "",
                                          new=form.password.data or "",
                                          address=guard.client_address())
    except WalletError as err:
        form.form_errors.append(err.message)
        return _account_page(form), err.status, _headers(err)
    guard.start_session(person)
    flash("Password changed. Every other session of yours has ended.", "success")
    return redirect(url_for("auth.account"))


@bp.post("/account/sessions/end")
@guard.login_required
def end_sessions() -> Response:
    """Sign out everywhere: every session of mine, this one included."""
    SignOutForm().validate_on_submit()
    person = guard.current_person()
    assert person is not None and person.id is not None
    session_actions.end_all(person.id)
    guard.end_session()
    flash("You are signed out everywhere.", "success")
    return redirect(url_for("auth.login"))


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    """Liveness and database reachability."""
    try:
        db.ping()
    except Exception:
        return {"status": "unavailable", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}, 200
