"""The engineer's notes: list, detail with QR code, download, export."""

from __future__ import annotations

import flask
import segno
from flask import flash, redirect, render_template, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import honour as honour_actions
from wallet.actions import notes as note_actions
from wallet.actions import wallets
from wallet.core.errors import IdempotencyConflict, NotFound, WalletError
from wallet.core.money import format_display
from wallet.models import Note
from wallet.web import guard
from wallet.web.fields import FieldError, add_error, json_of
from wallet.web.forms import ExportForm
from wallet.web.portal import bp


def _my_note(slug: str, jti: str) -> tuple[guard.Access, Note]:
    access = guard.org_access(slug)
    row = note_actions.note_of(db.session(), org=access.org, person=access.person, jti=jti)
    if row is None:
        raise NotFound("no such note")
    return access, row


@bp.get("/notes")
@guard.login_required
def notes(slug: str) -> str:
    """My notes at this organisation and notes I brought in from elsewhere."""
    access = guard.org_access(slug)
    session = db.session()
    return render_template("portal/notes.html", access=access,
                           notes=note_actions.of_person(session, org=access.org,
                                                        person=access.person),
                           honoured=honour_actions.receipts_for(session, org=access.org,
                                                                person=access.person))


@bp.get("/notes/<jti>/download")
@guard.login_required
def note_download(slug: str, jti: str) -> Response:
    """The note as a file (`<JWT>~`)."""
    _access, row = _my_note(slug, jti)
    name = "note-" + _short(row.jti) + ".txt"
    return flask.Response(row.token + "\n", mimetype="text/plain",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/notes/<jti>")
@guard.login_required
def note_detail(slug: str, jti: str) -> str:
    """One note: its facts, status, QR code and download."""
    access, row = _my_note(slug, jti)
    view = note_actions.NoteView(row, access.person)
    qr = Markup(segno.make(row.token, error="l").svg_inline(  # noqa: S704 - segno's own SVG
        scale=3, dark="#17203a", border=2, title=f"QR code of note {row.jti}"))
    return render_template("portal/note_detail.html", access=access, note=view, qr=qr)


@bp.route("/export", methods=["GET", "POST"])
@guard.login_required
def export(slug: str) -> Response | tuple[str, int]:
    """Turn part of my available balance into a note."""
    access = guard.org_access(slug)
    form = ExportForm()
    status = 200
    if form.validate_on_submit():
        if form.already_recorded():
            status = 409
        elif (made := _export(slug, access, form)) is not None:
            return made
    summary = wallets.summary(db.session(), org=access.org, person=access.person)
    if form.errors and status == 200:
        status = 400
    return render_template("portal/export.html", access=access, form=form,
                           summary=summary), status


def _export(slug: str, access: guard.Access, form: ExportForm) -> Response | None:
    """Make the note and answer with it (its wallet file, or its page); or None, the
    refusal put on the form."""
    if form.mode.data == "new":
        return _export_to_new_wallet(slug, access, form)
    return _export_to_key(slug, access, form)


def _export_to_new_wallet(slug: str, access: guard.Access, form: ExportForm) -> Response | None:
    if not form.passphrase.data:
        form.passphrase.errors = ["Choose a passphrase for the wallet file."]
        return None
    try:
        row, wallet_text = note_actions.export_to_new_wallet(
            db.session(), slug=slug, email=access.person.email,
            amount=form.amount.data or "", passphrase=form.passphrase.data,
            actor=guard.actor(), request_key=form.idempotency_key.data)
    except WalletError as err:
        _refused(form, err)
        return None
    form.recorded(_exported(row))
    name = f"{access.org.slug}-{_short(row.jti)}.ccwallet"
    return flask.Response(wallet_text, mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


def _export_to_key(slug: str, access: guard.Access, form: ExportForm) -> Response | None:
    jwk = json_of(form.holder_jwk, "Paste the JSON printed by 'wallet keys holder-new'.")
    if isinstance(jwk, FieldError):
        jwk.show()
        return None
    try:
        row = note_actions.export(db.session(), slug=slug, email=access.person.email,
                                  amount=form.amount.data or "", holder_jwk=jwk,
                                  actor=guard.actor(), request_key=form.idempotency_key.data)
    except WalletError as err:
        _refused(form, err)
        return None
    form.recorded(_exported(row))
    flash("Your note is ready: download it or scan its QR code.", "success")
    return redirect(url_for("portal.note_detail", slug=slug, jti=row.jti))


def _refused(form: ExportForm, err: WalletError) -> None:
    """Put an action's refusal on the form (nothing to answer with but the form)."""
    if isinstance(err, IdempotencyConflict):
        form.key_spent(
            "This export was already made when you first sent the form. Your notes list"
            " shows it; if you never received its wallet file, an administrator can"
            " revoke the note and the amount returns to your wallet.")
        return
    target = form.holder_jwk if err.code == "malformed" and form.mode.data == "jwk" \
        else form.amount
    add_error(target, err.message)


def _short(jti: str) -> str:
    """The first 8 characters of a jti's last part: how a note is named for people."""
    return jti.rsplit(":", 1)[-1][:8]


def _exported(row: Note) -> str:
    """What an export recorded, in words (shown if the same export is sent again)."""
    return (f"a note of {format_display(row.amount, row.currency)} exported"
            f" ({_short(row.jti)}…, listed under Notes)")
