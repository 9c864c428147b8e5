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
    return _keys_page(slug, access)


def _keys_page(slug: str, access: guard.Access, *, rotate_form: RotateKeyForm | None = None,
               revoke_form: RevokeKeyForm | None = None) -> str:
    """The keys page, with these forms (fresh ones otherwise)."""
    rows = key_actions.listing(db.session(), slug=slug)
    return render_template("admin/keys.html", access=access, rows=rows,
                           fingerprint=key_actions.fingerprint,
                           rotate_form=RotateKeyForm() if rotate_form is None else rotate_form,
                           revoke_form=RevokeKeyForm() if revoke_form is None else revoke_form,
                           issuer=key_actions.issuer_id(access.org))


@bp.post("/keys/rotate")
@guard.login_required
def rotate_key(slug: str) -> Response | tuple[str, int]:
    """Make a new active key (the first one, or a rotation); not twice through Back."""
    access = guard.org_access(slug, admin=True)
    form = RotateKeyForm()
    if form.validate_on_submit():
        if form.already_recorded():
            return _keys_page(slug, access, rotate_form=form), 409
        _rotate(slug, form)
    return redirect(url_for("admin.keys", slug=slug))


def _rotate(slug: str, form: RotateKeyForm) -> None:
    """Rotate; the outcome is flashed."""
    try:
        change = key_actions.rotate(db.session(), slug=slug, actor=guard.actor())
    except WalletError as err:
        flash(err.message, "error")
        return
    retired = _short(change.retired.kid) if change.retired else None
    form.recorded(f"new signing key {_short(change.key.kid)} made"
                  + (f", {retired} retired" if retired else ""))
    flash(f"New active key {_short(change.key.kid)}" + (f"; {retired} retired" if retired else ""),
          "success")


@bp.post("/keys/revoke")
@guard.login_required
def revoke_key(slug: str) -> Response | tuple[str, int]:
    """Revoke a compromised key; the typed kid prefix guards against slips."""
    access = guard.org_access(slug, admin=True)
    form = RevokeKeyForm()
    if form.validate_on_submit() and (revoked := _revoke(slug, form)) is not None:
        return revoked
    return _keys_page(slug, access, revoke_form=form), 400


def _revoke(slug: str, form: RevokeKeyForm) -> Response | None:
    """Revoke and redirect (flashed); or None, the refusal next to its field."""
    kid = form.kid.data or ""
    if (form.confirm.data or "").strip() != kid[:8]:
        form.confirm.errors = [f"Type {kid[:8]} to confirm."]
        return None
    try:
        change = key_actions.revoke(
            db.session(), slug=slug, kid=kid, actor=guard.actor(),
            compromised_at=parse_moment(form.compromised_at.data, "The time"))
    except WalletError as err:
        form.compromised_at.errors = [err.message]
        return None
    flash(f"Key {_short(kid)} revoked; {change.notes_revoked} note(s) it signed"
          " since were revoked and their value returned to wallets.", "success")
    return redirect(url_for("admin.keys", slug=slug))


def _short(kid: str) -> str:
    """A key id as messages name it: its first 12 characters and an ellipsis."""
    return f"{kid[:12]}…"
