"""Public pages: verify a note as an organisation would, in plain words."""

from __future__ import annotations

from flask import Blueprint, render_template

from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions._base import org_or_404
from wallet.actions.verify import verify_as
from wallet.web import guard, ratelimit
from wallet.web.forms import VerifyForm

bp = Blueprint("public", __name__)

CHECK_LABELS = {
    "format": "The note is well formed (an SD-JWT with the expected claims)",
    "algorithm": "It is signed with EdDSA (Ed25519)",
    "issuer_trusted": "Its issuer is trusted here",
    "key": "The signing key is published and was not revoked or retired when it signed",
    "signature": "The signature is genuine",
    "validity": "It is within its validity window (not expired, not early)",
    "amount": "The amount is a valid amount",
    "holder_binding": "The holder proved possession of the bound key",
    "audience": "The presentation was made for this organisation",
    "nonce": "The nonce was issued here and is unused",
    "status": "The issuer has not revoked or redeemed it",
}


@bp.route("/orgs/<slug>/verify", methods=["GET", "POST"])
def verify_page(slug: str) -> tuple[str, int]:
    """Paste or upload a note; see every check as this organisation would run it."""
    session = db.session()
    org = org_or_404(session, slug)
    form = VerifyForm()
    report, status = None, 200
    if form.validate_on_submit():
        ratelimit.limit("verify", guard.current_person())
        text = _note_text(form)
        if text:
            report = verify_as(session, slug=slug, body={"note": text}).as_json()
        status = 400 if form.errors else 200
    return render_template("public/verify.html", org=org, form=form, report=report,
                           labels=CHECK_LABELS, issuer=key_actions.issuer_id(org)), status


def _note_text(form: VerifyForm) -> str:
    """The pasted note, or the uploaded one; "" with the reason next to its field."""
    text = (form.note.data or "").strip()
    if not text and form.upload.data:
        raw = form.upload.data.read(20_001)
        text = raw.decode("utf-8", "replace").strip() if len(raw) <= 20_000 else ""
        if not text:
            form.upload.errors = ["Upload a note file of at most 20 KB."]
    if not text and not form.upload.errors:
        form.note.errors = ["Paste a note, or upload its file."]
    return text
