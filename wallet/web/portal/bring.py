"""Bring credits from a previous employer: a wallet file, or presentations signed offline."""

from __future__ import annotations

from flask import render_template

from wallet import db
from wallet.actions import bring as bring_actions
from wallet.actions import honour as honour_actions
from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions import pending as pending_actions
from wallet.actions import trust as trust_actions
from wallet.actions import wallets
from wallet.actions.honour import Honoured
from wallet.core.errors import RateLimited, RateLimitUnavailable, WalletError
from wallet.models import Person
from wallet.web import guard, ratelimit
from wallet.web.fields import FieldError, add_error, json_of
from wallet.web.forms import BringPresentationsForm, BringWalletForm
from wallet.web.portal import bp

MAX_WALLET_BYTES = 4 * 1024 * 1024


@bp.route("/bring", methods=["GET", "POST"])
@guard.login_required
def bring(slug: str) -> tuple[str, int]:
    """Upload a .ccwallet with its passphrase (or paste presentations) and see each note's fate."""
    access = guard.org_access(slug, write=True)
    wallet_form = BringWalletForm(prefix="w")
    pres_form = BringPresentationsForm(prefix="p")
    result, status = _brought(slug, access, wallet_form, pres_form)
    # Bound to the signed-in engineer: presentations made with it credit only them.
    session = db.session()
    nonce, expires = nonce_actions.new_nonce(session, slug=access.org.slug,
                                             person_id=access.person.id)
    summary = wallets.summary(session, org=access.org, person=access.person)
    return render_template(
        "portal/bring.html", access=access, wallet_form=wallet_form, pres_form=pres_form,
        result=result, summary=summary, nonce=nonce, nonce_expires=expires,
        audience=key_actions.issuer_id(access.org),
        waiting=pending_actions.listing(session, org=access.org, person=access.person),
        issuer_names=trust_actions.names(session, org=access.org)), status


Brought = tuple[Honoured | None, int]


def _brought(slug: str, access: guard.Access, wallet_form: BringWalletForm,
             pres_form: BringPresentationsForm) -> Brought:
    """Honour what was sent, if anything: the result and the status (422: nothing
    credited); a refusal goes next to its field."""
    try:
        if wallet_form.submit_ok():
            return _bring_wallet(slug, access, wallet_form)
        if pres_form.submit_ok():
            return _bring_presentations(slug, access, pres_form)
    except WalletError as err:
        return None, _refused(err, wallet_form, pres_form)
    return None, 200


def _bring_wallet(slug: str, access: guard.Access, form: BringWalletForm) -> Brought:
    _limit_bring_in(access.person)
    text = _wallet_text(form)
    if isinstance(text, FieldError):
        return None, text.show()
    result = bring_actions.bring_wallet(
        db.session(), slug=slug, email=access.person.email, wallet_text=text,
        passphrase=form.passphrase.data or "",
        consumer=f"portal:{access.person.id}:{form.idempotency_key.data}"[:250])
    return result, 200 if result.credited or result.pending else 422


def _wallet_text(form: BringWalletForm) -> str | FieldError:
    data: bytes = form.wallet.data.read(MAX_WALLET_BYTES + 1)
    if len(data) > MAX_WALLET_BYTES:
        return FieldError(form.wallet, "The file is larger than 4 MiB.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return FieldError(form.wallet, "This is not a wallet file.")


def _bring_presentations(slug: str, access: guard.Access,
                         form: BringPresentationsForm) -> Brought:
    body = json_of(form.presentations,
                   "Paste the JSON exactly as 'wallet note present' printed it.")
    if isinstance(body, FieldError):
        return None, body.show()
    items = body.get("presentations") if isinstance(body, dict) else body
    result = honour_actions.honour(
        db.session(), slug=slug, email=access.person.email, presentations=items,
        consumer=f"portal:{access.person.id}:{form.idempotency_key.data}"[:250])
    return result, 200 if result.credited or result.pending else 422


def _refused(err: WalletError, wallet_form: BringWalletForm,
             pres_form: BringPresentationsForm) -> int:
    """Put an action's refusal next to the field it is about; the answer's status."""
    target = wallet_form.passphrase if err.code == "bad_passphrase" else (
        wallet_form.wallet if wallet_form.wallet.data else pres_form.presentations)
    add_error(target, err.message)
    return err.status if isinstance(err, RateLimited | RateLimitUnavailable) else 400


def _limit_bring_in(person: Person) -> None:
    """Count one wallet upload of this person; refuse past WALLET_BRING_PER_MINUTE.

    Each upload derives a key from a passphrase (up to 1,000,000 PBKDF2 rounds, about
    0.1 s of CPU), so it is limited per person whatever their address, session or
    instance: a passphrase guesser or a CPU burner gets a few tries a minute. When the
    count cannot be kept the upload is refused (the bucket fails closed; docs/keys.md).
    """
    try:
        ratelimit.limit("bring", person)
    except RateLimited as err:
        raise RateLimited("Too many wallet files brought in this minute; try again in"
                          f" {err.extra.get('retry_after', 60)} seconds.") from None
