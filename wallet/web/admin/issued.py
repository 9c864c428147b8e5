"""Notes this organisation issued: search by person or jti, revoke with a reason, and
book expired ones nobody reissued as breakage (explicitly, one at a time, confirmed)."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import notes as note_actions
from wallet.core.errors import WalletError
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.forms import BreakageForm, RevokeNoteForm
from wallet.web.paging import page_number

PAGE = 50
STATES = ("active", "expired", "redeemed", "revoked", "reclaimed")


@bp.get("/notes")
@guard.login_required
def notes(slug: str) -> str:
    """Search issued notes."""
    access = guard.org_access(slug, admin=True)
    query = (request.args.get("q") or "").strip()[:100]
    state = request.args.get("state") if request.args.get("state") in STATES else None
    page = page_number()
    rows = note_actions.search(db.session(), org=access.org, query=query, state=state,
                               limit=PAGE + 1, offset=(page - 1) * PAGE)
    return render_template("admin/notes.html", access=access, rows=rows[:PAGE], query=query,
                           state=state, states=STATES, page=page, has_next=len(rows) > PAGE,
                           form=RevokeNoteForm(), breakage_form=BreakageForm())


@bp.post("/notes/<jti>/revoke")
@guard.login_required
def revoke_note(slug: str, jti: str) -> Response:
    """Revoke an active note; the value returns to the engineer's wallet."""
    guard.org_access(slug, admin=True)
    form = RevokeNoteForm()
    if not form.validate_on_submit():
        flash("Give a reason (up to 300 characters) to revoke a note.", "error")
    else:
        try:
            row = note_actions.revoke(db.session(), slug=slug, jti=jti,
                                      reason=form.reason.data or "", actor=guard.actor())
        except WalletError as err:
            flash(err.message, "error")
        else:
            flash(f"Note {row.jti} revoked; its value is back in the engineer's wallet.",
                  "success")
    return redirect(url_for("admin.notes", slug=slug, q=jti))


@bp.post("/notes/<jti>/breakage")
@guard.login_required
def book_breakage(slug: str, jti: str) -> Response:
    """Book one expired, unredeemed note as breakage: its value becomes the issuer's."""
    guard.org_access(slug, admin=True)
    form = BreakageForm()
    if not form.validate_on_submit():
        flash("Tick the box to confirm: booking a note as breakage cannot be undone.",
              "error")
    else:
        try:
            row = note_actions.breakage(db.session(), slug=slug, jti=jti, actor=guard.actor())
        except WalletError as err:
            flash(err.message, "error")
        else:
            flash(f"Note {row.jti} booked as breakage: its value is no longer owed.",
                  "success")
    return redirect(url_for("admin.notes", slug=slug, state="expired"))
