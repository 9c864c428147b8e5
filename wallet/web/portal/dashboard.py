"""The engineer's wallet: an organisation's home page."""

from __future__ import annotations

from flask import redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import wallets
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
