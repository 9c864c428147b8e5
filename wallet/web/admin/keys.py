"""Signing keys: fingerprints and states, rotate, revoke with a typed confirmation."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions._base import parse_moment
from wallet.core.errors import WalletError
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.forms import RevokeKeyForm, RotateKeyForm


@bp.get("/keys")
@guard.login_required
def keys(slug: str) -> str:
    """Every key with its fingerprint and state."""
    access = guard.org_access(slug, admin=True)
    rows = key_actions.listing(db.session(), slug=slug)
    return render_template("admin/keys.html", access=access, rows=rows,
                           fingerprint=key_actions.fingerprint, rotate_form=RotateKeyForm(),
                           revoke_form=RevokeKeyForm(),
                           issuer=key_actions.issuer_id(access.org))


@bp.post("/keys/rotate")
@guard.login_required
def rotate_key(slug: str) -> Response | tuple[str, int]:
    """Make a new active key (the first one, or a rotation); not twice through Back."""
    access = guard.org_access(slug, admin=True)
    form = RotateKeyForm()
    if form.validate_on_submit():
        if form.already_recorded():
            rows = key_actions.listing(db.session(), slug=slug)
            return render_template("admin/keys.html", access=access, rows=rows,
                                   fingerprint=key_actions.fingerprint, rotate_form=form,
                                   revoke_form=RevokeKeyForm(),
                                   issuer=key_actions.issuer_id(access.org)), 409
        try:
            change = key_actions.rotate(db.session(), slug=slug, actor=guard.actor())
        except WalletError as err:
            flash(err.message, "error")
        else:
            form.recorded(f"new signing key {change.key.kid[:12]}… made"
                          + (f", {change.retired.kid[:12]}… retired" if change.retired else ""))
            flash(f"New active key {change.key.kid[:12]}…"
                  + (f"; {change.retired.kid[:12]}… retired" if change.retired else ""),
                  "success")
    return redirect(url_for("admin.keys", slug=slug))


@bp.post("/keys/revoke")
@guard.login_required
def revoke_key(slug: str) -> Response | tuple[str, int]:
    """Revoke a compromised key; the typed kid prefix guards against slips."""
    access = guard.org_access(slug, admin=True)
    form = RevokeKeyForm()
    if form.validate_on_submit():
        kid = form.kid.data or ""
        if (form.confirm.data or "").strip() != kid[:8]:
            form.confirm.errors = [f"Type {kid[:8]} to confirm."]
        else:
            try:
                change = key_actions.revoke(
                    db.session(), slug=slug, kid=kid, actor=guard.actor(),
                    compromised_at=parse_moment(form.compromised_at.data, "The time"))
            except WalletError as err:
                form.compromised_at.errors = [err.message]
            else:
                flash(f"Key {kid[:12]}… revoked; {change.notes_revoked} note(s) it signed"
                      " since were revoked and their value returned to wallets.", "success")
                return redirect(url_for("admin.keys", slug=slug))
    rows = key_actions.listing(db.session(), slug=slug)
    return render_template("admin/keys.html", access=access, rows=rows,
                           fingerprint=key_actions.fingerprint, rotate_form=RotateKeyForm(),
                           revoke_form=form, issuer=key_actions.issuer_id(access.org)), 400
