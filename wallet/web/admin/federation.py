"""Trusted issuers and their policy; settlement per counterparty."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from wallet import db
from wallet.actions import keys as key_actions
from wallet.actions import settlement as settlement_actions
from wallet.actions import trust as trust_actions
from wallet.core import jose
from wallet.core.errors import Conflict, IdempotencyConflict, WalletError
from wallet.core.money import format_display, parse_amount
from wallet.web import guard
from wallet.web.admin import bp
from wallet.web.forms import PayForm, RotateForm, SettleForm, TrustForm


def _keys_of(entry: object) -> list[tuple[str, str]]:
    jwks = getattr(entry, "jwks", {})
    return [(kid, key_actions.fingerprint(key.jwk)) for kid, key in jose.jwks_keys(jwks).items()]


@bp.route("/trust", methods=["GET", "POST"])
@guard.login_required
def trust(slug: str) -> Response | tuple[str, int]:
    """Trust another issuer (fetch, show and pin its keys); see and change policy."""
    access = guard.org_access(slug, admin=True)
    form = TrustForm()
    status, pending = 200, None
    if form.validate_on_submit():
        done = _trust_add(slug, form)
        if isinstance(done, Response):
            return done
        status, pending = done
    entries = trust_actions.listing(db.session(), slug=slug)
    return render_template("admin/trust.html", access=access, form=form, entries=entries,
                           keys_of=_keys_of, small_form=RotateForm(), pending=pending,
                           issuer=key_actions.issuer_id(access.org)), status


def _trust_add(slug: str, form: TrustForm) -> Response | tuple[int, list[dict[str, str]] | None]:
    """Trust (or, once confirmed, re-trust) and redirect; or a status and the changes an
    explicit confirmation would make (an issuer trusted already is never replaced silently)."""
    try:
        done = trust_actions.add(db.session(), slug=slug, issuer=form.issuer.data or "",
                             cap=form.cap.data or None,
                             currencies=(form.currencies.data or "USD").split(","),
                             replace=request.form.get("replace") == "1", actor=guard.actor())
    except Conflict as err:
        return 409, list(err.extra.get("changes", []))
    except WalletError as err:
        form.issuer.errors = [err.message]
        return 400, None
    flash(_trusted(done), "success")
    return redirect(url_for("admin.trust", slug=slug))


def _trusted(done: trust_actions.Trusted) -> str:
    """What trusting did, in words."""
    name = done.entry.name or done.entry.issuer
    return {"added": f"Now trusting {name}. Compare the key fingerprints below with the"
                     " issuer's administrators.",
            "replaced": f"Replaced {name}'s policy and keys: "
                        + "; ".join(str(c) for c in done.changes) + ".",
            "unchanged": f"{name} is trusted already with this policy and these keys;"
                         " nothing changed."}[done.outcome]


@bp.post("/trust/remove")
@guard.login_required
def trust_remove(slug: str) -> Response:
    """Stop trusting an issuer."""
    guard.org_access(slug, admin=True)
    if RotateForm().validate_on_submit():
        try:
            trust_actions.remove(db.session(), slug=slug, issuer=request.form.get("issuer", ""),
                             actor=guard.actor())
        except WalletError as err:
            flash(err.message, "error")
        else:
            flash("Issuer removed from the trust list.", "success")
    return redirect(url_for("admin.trust", slug=slug))


@bp.post("/trust/refresh")
@guard.login_required
def trust_refresh(slug: str) -> Response:
    """Re-fetch an issuer's metadata and keys now."""
    guard.org_access(slug, admin=True)
    if RotateForm().validate_on_submit():
        try:
            results = trust_actions.refresh(db.session(), slug=slug, actor=guard.actor(),
                                        issuer=request.form.get("issuer") or None)
        except WalletError as err:
            flash(err.message, "error")
        else:
            for r in results:
                if r.error:
                    flash(f"{r.issuer}: {r.error}", "error")
                else:
                    flash(f"{r.issuer}: " + (f"keys added {len(r.added)}, removed"
                                             f" {len(r.removed)}" if r.added or r.removed
                                             else "unchanged"), "success")
    return redirect(url_for("admin.trust", slug=slug))


@bp.route("/settlement", methods=["GET", "POST"])
@guard.login_required
def settlement(slug: str) -> Response | tuple[str, int]:
    """What we owe and are owed per counterparty; record payments."""
    access = guard.org_access(slug, admin=True)
    form = SettleForm()
    status = 200
    if form.validate_on_submit():
        if form.already_recorded():
            status = 409
        else:
            done = _record_settlement(slug, form, access.org.currency)
            if isinstance(done, Response):
                return done
            status = done
    return _settlement_page(access, form=form, status=status)


def _settlement_page(access: guard.Access, *, form: SettleForm | None = None,
                     pay_form: PayForm | None = None,
                     status: int = 200) -> tuple[str, int]:
    session = db.session()
    lines = settlement_actions.lines(session, slug=access.org.slug)
    payments = settlement_actions.payments(session, slug=access.org.slug)
    accounts = {(ln.counterparty, ln.currency): settlement_actions.account(
        session, slug=access.org.slug, counterparty=ln.counterparty, currency=ln.currency)
        for ln in lines}
    return render_template("admin/settlement.html", access=access, lines=lines,
                           payments=payments, accounts=accounts,
                           shown=settlement_actions.ACCOUNT_SHOWN, form=form or SettleForm(),
                           pay_form=pay_form or PayForm()), status


@bp.post("/settlement/pay")
@guard.login_required
def settlement_pay(slug: str) -> Response | tuple[str, int]:
    """Pay a counterparty: send it a signed statement; posted once it acknowledges."""
    access = guard.org_access(slug, admin=True)
    form = PayForm()
    if not form.validate_on_submit():
        return _settlement_page(access, pay_form=form, status=400)
    try:
        paid = settlement_actions.pay(
            db.session(), slug=slug, counterparty=form.counterparty.data or "",
            amount=form.amount.data or "", reference=form.reference.data or "",
            actor=guard.actor())
    except WalletError as err:
        form.amount.errors = [f"{err.message} ({err.code})"]
        return _settlement_page(access, pay_form=form, status=err.status)
    flash(("Already paid and acknowledged; nothing changed: " if paid.replayed else "Paid ")
          + f"{format_display(paid.amount.micros, paid.amount.currency)} ({paid.reference})."
          f" They acknowledged; by their receipts we still owe"
          f" {format_display(paid.outstanding.micros, paid.outstanding.currency)}.", "success")
    return redirect(url_for("admin.settlement", slug=slug))


def _record_settlement(slug: str, form: SettleForm, currency: str) -> Response | int:
    """Record the payment and redirect, or put the refusal next to the form (a status)."""
    try:
        created = settlement_actions.record(
            db.session(), slug=slug, counterparty=form.counterparty.data or "",
            direction=form.direction.data, amount=form.amount.data or "",
            reference=form.reference.data or "",
            idempotency_key=form.idempotency_key.data or "", actor=guard.actor())
    except IdempotencyConflict:
        form.key_spent()
        return 409
    except WalletError as err:
        form.amount.errors = [err.message]
        return 400
    form.recorded(_settled(form, currency))
    flash("Settlement recorded." if created else "Already recorded; nothing changed.",
          "success")
    return redirect(url_for("admin.settlement", slug=slug))


def _settled(form: SettleForm, currency: str) -> str:
    """What a settlement recorded, in words (shown if the same one is sent again)."""
    way = "paid to" if form.direction.data == "paid" else "received from"
    amount = format_display(parse_amount(form.amount.data or ""), currency)
    reference = f" ({form.reference.data.strip()})" if (form.reference.data or "").strip() else ""
    return f"{amount} {way} {form.counterparty.data}{reference}"
