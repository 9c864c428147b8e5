"""The engineer's wallet: an organisation's home page."""

from __future__ import annotations

from flask import redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import clock, db
from wallet.actions import statements, wallets
from wallet.actions._base import Actor
from wallet.web import guard
from wallet.web.portal import bp


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


@bp.get("/wallet/statement.jwt")
@guard.login_required
def statement(slug: str) -> Response:
    """A signed statement of the engineer's holdings here, as a file to keep or show."""
    access = guard.org_access(slug)
    token = statements.issue(db.session(), org=access.org, person=access.person,
                             actor=Actor.of(access.person))
    day = clock.today().isoformat()
    answer = Response(token + "\n", mimetype="application/jwt")
    answer.headers["Content-Disposition"] = (
        f'attachment; filename="{slug}-statement-{day}.jwt"')
    answer.headers["Cache-Control"] = "no-store"
    return answer
