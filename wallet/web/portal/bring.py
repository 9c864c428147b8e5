"""Bring credits from a previous employer: a wallet file, or presentations signed offline."""

from __future__ import annotations

from typing import Any

from flask import current_app, render_template

from wallet import db
from wallet.actions import bring as bring_actions
from wallet.actions import honour as honour_actions
from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import wallets
from wallet.core import jose
from wallet.core.errors import RateLimited, WalletError
from wallet.web import guard
from wallet.web.forms import BringPresentationsForm, BringWalletForm
from wallet.web.portal import bp
from wallet.web.ratelimit import FixedWindow

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
            _limit_bring_in(access.person.id)
            data = wallet_form.wallet.data.read(MAX_WALLET_BYTES + 1)
            if len(data) > MAX_WALLET_BYTES:
                raise _Refused(wallet_form.wallet, "The file is larger than 4 MiB.")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(wallet_form.wallet, "This is not a wallet file.") from None
            result = bring_actions.bring_wallet(
                session, slug=slug, email=access.person.email, wallet_text=text,
                passphrase=wallet_form.passphrase.data or "",
                consumer=f"portal:{access.person.id}:{wallet_form.idempotency_key.data}"[:250])
        elif pres_form.submit_ok():
            try:  # strict and bounded: no RecursionError, no NUL on its way to the database
                body = jose.json_value((pres_form.presentations.data or "").encode())
            except WalletError:
                raise _Refused(pres_form.presentations, "Paste the JSON exactly as"
                               " 'wallet note present' printed it.") from None
            items = body.get("presentations") if isinstance(body, dict) else body
            result = honour_actions.honour(
                session, slug=slug, email=access.person.email, presentations=items,
                consumer=f"portal:{access.person.id}:{pres_form.idempotency_key.data}"[:250])
    except _Refused as refused:
        refused.field.errors = [*refused.field.errors, refused.message]
        status = 400
    except WalletError as err:
        target = wallet_form.passphrase if err.code == "bad_passphrase" else (
            wallet_form.wallet if wallet_form.wallet.data else pres_form.presentations)
        target.errors = [*target.errors, err.message]
        status = 429 if isinstance(err, RateLimited) else 400
    if result is not None and not result.credited:
        status = 422
    # Bound to the signed-in engineer: presentations made with it credit only them.
    nonce, expires = nonce_actions.new_nonce(session, slug=access.org.slug,
                                             person_id=access.person.id)
    summary = wallets.summary(session, org=access.org, person=access.person)
    return render_template(
        "portal/bring.html", access=access, wallet_form=wallet_form, pres_form=pres_form,
        result=result, summary=summary, nonce=nonce, nonce_expires=expires,
        audience=key_actions.issuer_id(access.org)), status


def _limit_bring_in(person_id: int | None) -> None:
    """Count one wallet upload of this person; refuse past WALLET_BRING_PER_MINUTE.

    Each upload derives a key from a passphrase (up to 1,000,000 PBKDF2 rounds, about
    0.1 s of CPU), so it is limited per person whatever their address or session: a
    passphrase guesser or a CPU burner gets a few tries a minute. Counted per process,
    like the public endpoints' limit (docs/keys.md).
    """
    limiter = current_app.extensions.setdefault("wallet.ratelimit.bring", FixedWindow())
    try:
        limiter.hit(f"bring:{person_id}", int(current_app.config["WALLET_BRING_PER_MINUTE"]))
    except RateLimited:
        raise RateLimited("Too many wallet files brought in this minute; try again in a"
                          " minute.") from None


class _Refused(Exception):
    def __init__(self, field: Any, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message
