"""Bring credits from a previous employer: a wallet file, or presentations signed offline."""

from __future__ import annotations

import json

from flask import render_template

from wallet import db
from wallet.actions import federation as fed
from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import wallets
from wallet.core.errors import WalletError
from wallet.web import guard
from wallet.web.forms import BringPresentationsForm, BringWalletForm
from wallet.web.portal import bp

MAX_WALLET_BYTES = 4 * 1024 * 1024


@bp.route("/bring", methods=["GET", "POST"])
@guard.login_required
def bring(slug: str) -> tuple[str, int]:
    """Upload a .ccwallet with its passphrase (or paste presentations) and see each note's fate."""
    access = guard.org_access(slug, write=True)
    session = db.session()
    wallet_form = BringWalletForm(prefix="w")
    pres_form = BringPresentationsForm(prefix="p")
    result, status = None, 200
    try:
        if wallet_form.submit_ok():
            data = wallet_form.wallet.data.read(MAX_WALLET_BYTES + 1)
            if len(data) > MAX_WALLET_BYTES:
                raise _Refused(wallet_form.wallet, "The file is larger than 4 MiB.")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(wallet_form.wallet, "This is not a wallet file.") from None
            result = fed.bring_wallet(
                session, slug=slug, email=access.person.email, wallet_text=text,
                passphrase=wallet_form.passphrase.data or "",
                consumer=f"portal:{access.person.id}:{wallet_form.idempotency_key.data}"[:250])
        elif pres_form.submit_ok():
            try:
                body = json.loads(pres_form.presentations.data or "")
            except ValueError:
                raise _Refused(pres_form.presentations, "Paste the JSON exactly as"
                               " 'wallet note present' printed it.") from None
            items = body.get("presentations") if isinstance(body, dict) else body
            result = fed.honour(
                session, slug=slug, email=access.person.email, presentations=items,
                consumer=f"portal:{access.person.id}:{pres_form.idempotency_key.data}"[:250])
    except _Refused as refused:
        refused.field.errors = [*refused.field.errors, refused.message]
        status = 400
    except WalletError as err:
        target = wallet_form.passphrase if err.code == "bad_passphrase" else (
            wallet_form.wallet if wallet_form.wallet.data else pres_form.presentations)
        target.errors = [*target.errors, err.message]
        status = 400
    if result is not None and not result.credited:
        status = 422
    nonce, expires = nonce_actions.new_nonce(session, slug=access.org.slug)
    summary = wallets.summary(session, org=access.org, person=access.person)
    return render_template(
        "portal/bring.html", access=access, wallet_form=wallet_form, pres_form=pres_form,
        result=result, summary=summary, nonce=nonce, nonce_expires=expires,
        audience=key_actions.issuer_id(access.org)), status


class _Refused(Exception):
    def __init__(self, field: object, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message
