"""`wallet trust …` and `wallet settlement …`: other employers."""

from __future__ import annotations

import click
from sqlmodel import Session

from wallet.actions import keys as key_actions
from wallet.actions import settlement as settlement_actions
from wallet.actions import trust as trust_actions
from wallet.actions._base import Actor
from wallet.cli.base import (
    cli,
    confirm,
    emit_json,
    info,
    json_option,
    org_option,
    with_session,
    yes_option,
)
from wallet.core import jose
from wallet.core.errors import Conflict
from wallet.core.money import format_amount, format_display
from wallet.models import TrustedIssuer
from wallet.peers import clean


@cli.group()
def trust() -> None:
    """The issuers an organisation honours notes from (and redeems with)."""


def _entry_json(entry: TrustedIssuer) -> dict[str, object]:
    return {
        "issuer": entry.issuer, "name": clean(entry.name, 200),
        "cap": None if entry.cap is None else format_amount(entry.cap),
        "currencies": entry.currencies.split(","),
        "keys": [{"kid": kid, "fingerprint": key_actions.fingerprint(key.jwk)}
                 for kid, key in jose.jwks_keys(entry.jwks).items()],
        "redeem_endpoint": clean(entry.issuer_metadata.get("redeem_endpoint"), 2000) or None,
        "pinned_at": entry.pinned_at.isoformat(), "refreshed_at": entry.refreshed_at.isoformat(),
    }


def _policy_line(entry: TrustedIssuer) -> str:
    return (f"currencies {', '.join(entry.currencies.split(','))}; cap "
            + ("none" if entry.cap is None else format_display(entry.cap)))


@trust.command("add")
@org_option
@click.argument("issuer_id")
@click.option("--cap", metavar="AMOUNT", help="Largest note accepted from this issuer.")
@click.option("--currency", "currencies", multiple=True, metavar="CODE",
              help="Accepted currency (repeat; default USD).")
@click.option("--replace", is_flag=True,
              help="If the issuer is trusted already, replace its policy and pinned keys.")
@json_option
@with_session
def trust_add(session: Session, slug: str, issuer_id: str, cap: str | None,
              currencies: tuple[str, ...], replace: bool, as_json: bool) -> None:
    """Trust another issuer: fetch, show and pin its metadata and keys.

    An issuer trusted already is left as it is: what adding it again would change is
    printed and nothing happens, unless --replace. To change only the policy, use
    'wallet trust update'.
    """
    try:
        done = trust_actions.add(session, slug=slug, issuer=issuer_id, cap=cap,
                             currencies=list(currencies) or None, replace=replace,
                             actor=Actor.cli())
    except Conflict as refused:
        if as_json:  # a script sees what would change; the exit code says nothing did
            emit_json({"issuer": issuer_id, "outcome": "refused",
                       "would_change": refused.extra.get("changes", [])})
        raise
    entry = done.entry
    data = _entry_json(entry)
    if as_json:
        emit_json({**data, "outcome": done.outcome,
                   "changes": [c.as_json() for c in done.changes]})
        return
    name = data["name"] or entry.issuer
    if done.outcome == "unchanged":
        info(f"{slug} already trusts {name} ({entry.issuer}) with this policy and these"
             " keys; nothing changed")
        return
    info(f"{slug} now trusts {name} ({entry.issuer})")
    for change in done.changes:
        info(f"  replaced: {change}")
    info(f"  policy: {_policy_line(entry)}")
    for key in data["keys"]:  # type: ignore[attr-defined]
        info(f"  pinned key {key['kid']}  {key['fingerprint']}")
    info("  compare these fingerprints with the issuer out of band")


@trust.command("update")
@org_option
@click.argument("issuer_id")
@click.option("--cap", metavar="AMOUNT", help="New largest note accepted from this issuer.")
@click.option("--no-cap", is_flag=True, help="Accept notes of any amount from this issuer.")
@click.option("--currency", "currencies", multiple=True, metavar="CODE",
              help="Accepted currency (repeat; replaces the list).")
@json_option
@with_session
def trust_update(session: Session, slug: str, issuer_id: str, cap: str | None, no_cap: bool,
                 currencies: tuple[str, ...], as_json: bool) -> None:
    """Change a trusted issuer's policy (no refetch; pinned keys stay as they are)."""
    if cap and no_cap:
        raise click.UsageError("give --cap or --no-cap, not both")
    if not cap and not no_cap and not currencies:
        raise click.UsageError("nothing to change: give --cap, --no-cap or --currency")
    done = trust_actions.update(session, slug=slug, issuer=issuer_id, cap=cap, no_cap=no_cap,
                            currencies=list(currencies) or None, actor=Actor.cli())
    if as_json:
        emit_json({**_entry_json(done.entry),
                   "changes": [c.as_json() for c in done.changes]})
        return
    if not done.changes:
        info(f"{done.entry.issuer}: the policy is already {_policy_line(done.entry)};"
             " nothing changed")
        return
    for change in done.changes:
        info(f"{done.entry.issuer}: {change}")
    info(f"  policy now: {_policy_line(done.entry)}")


@trust.command("list")
@org_option
@json_option
@with_session
def trust_list(session: Session, slug: str, as_json: bool) -> None:
    """List trusted issuers with their policy and pinned keys."""
    entries = trust_actions.listing(session, slug=slug)
    if as_json:
        emit_json([_entry_json(e) for e in entries])
        return
    if not entries:
        info(f"{slug} trusts no other issuer yet")
    for e in entries:
        info(f"{e.issuer}  {clean(e.name, 200)}  currencies={e.currencies} cap="
             + ("none" if e.cap is None else format_amount(e.cap))
             + f"  keys={len(e.jwks.get('keys', []))}  refreshed {e.refreshed_at:%Y-%m-%d %H:%M}")


@trust.command("remove")
@org_option
@click.argument("issuer_id")
@yes_option
@json_option
@with_session
def trust_remove(session: Session, slug: str, issuer_id: str, yes: bool,
                 as_json: bool) -> None:
    """Stop trusting an issuer (asks first; --yes in scripts)."""
    entry = trust_actions.entry_of(session, slug=slug, issuer=issuer_id)
    issuer, name = entry.issuer, clean(entry.name, 200) or entry.issuer
    session.rollback()  # no transaction held while a person decides
    confirm(f"Stop trusting {name} ({issuer})? {slug} will refuse its notes and its"
            " redeem requests", yes)
    trust_actions.remove(session, slug=slug, issuer=issuer, actor=Actor.cli())
    if as_json:
        emit_json({"issuer": issuer, "removed": True})
        return
    info(f"{slug} no longer trusts {issuer}")


@trust.command("refresh")
@org_option
@click.argument("issuer_id", required=False)
@json_option
@with_session
def trust_refresh(session: Session, slug: str, issuer_id: str | None, as_json: bool) -> int:
    """Re-fetch pinned metadata and keys (run it from a scheduler); exit 1 if one failed."""
    results = trust_actions.refresh(session, slug=slug, issuer=issuer_id, actor=Actor.cli())
    if as_json:
        emit_json([r.as_json() for r in results])
    for r in results:
        if r.error:
            click.echo(f"{r.issuer}: refresh failed: {clean(r.error, 300)}", err=True)
        elif not as_json:
            change = (f"keys added {r.added}, removed {r.removed}" if r.added or r.removed
                      else "unchanged")
            info(f"{r.issuer}: {change}")
    return 1 if any(r.error for r in results) else 0


@cli.group()
def settlement() -> None:
    """What organisations owe each other for redeemed notes."""


@settlement.command("list")
@org_option
@json_option
@with_session
def settlement_list(session: Session, slug: str, as_json: bool) -> None:
    """Owed and owing per counterparty, from the receipts."""
    lines = settlement_actions.lines(session, slug=slug)
    if as_json:
        emit_json([{
            "counterparty": ln.counterparty, "name": clean(ln.name, 200),
            "currency": ln.currency,
            "redeemed_by_them": format_amount(ln.redeemed_by_them),
            "redeemed_count": ln.redeemed_count,
            "honoured_from_them": format_amount(ln.honoured_from_them),
            "honoured_count": ln.honoured_count,
            "we_owe": format_amount(ln.we_owe), "they_owe": format_amount(ln.they_owe),
        } for ln in lines])
        return
    if not lines:
        info(f"{slug} has no settlement with anyone yet")
    for ln in lines:
        info(f"{ln.counterparty} ({clean(ln.name, 200) or 'unnamed'}), {ln.currency}")
        info(f"  our notes they redeemed   {format_display(ln.redeemed_by_them, ln.currency)}"
             f" in {ln.redeemed_count}; we owe {format_display(ln.we_owe, ln.currency)}")
        info(f"  their notes we honoured   {format_display(ln.honoured_from_them, ln.currency)}"
             f" in {ln.honoured_count}; they owe {format_display(ln.they_owe, ln.currency)}")


@settlement.command("record")
@org_option
@click.option("--counterparty", required=True, metavar="ISSUER_ID")
@click.option("--paid", "paid", metavar="AMOUNT", help="We paid them this much.")
@click.option("--received", "received", metavar="AMOUNT", help="They paid us this much.")
@click.option("--reference", default="", help="Bank reference or invoice number.")
@click.option("--idempotency-key", required=True)
@with_session
def settlement_record(session: Session, slug: str, counterparty: str, paid: str | None,
                      received: str | None, reference: str, idempotency_key: str) -> None:
    """Record one side of a payment made outside the protocol (a ledger transfer), once per
    idempotency key; the counterparty records its own half. Prefer 'settlement pay'."""
    if bool(paid) == bool(received):
        raise click.UsageError("give exactly one of --paid or --received")
    created = settlement_actions.record(
        session, slug=slug, counterparty=counterparty,
        direction="paid" if paid else "received", amount=paid or received or "",
        reference=reference, idempotency_key=idempotency_key, actor=Actor.cli())
    info("Recorded" if created else "Already recorded; nothing changed")


@settlement.command("pay")
@org_option
@click.option("--counterparty", required=True, metavar="ISSUER_ID",
              help="The organisation paid (in the trust list: its keys sign the answer).")
@click.option("--amount", required=True, metavar="AMOUNT", help="What we pay, e.g. 1000.00.")
@click.option("--currency", default=None, metavar="CODE",
              help="Currency of the amount (default: the organisation's).")
@click.option("--reference", required=True,
              help="Bank reference or invoice number; once per counterparty (run again"
                   " with it to send the same statement again).")
@click.option("--net", is_flag=True,
              help="They owe us too: cancel all they owe us against our debt and pay"
                   " --amount on top (a 'net' statement).")
@json_option
@with_session
def settlement_pay(session: Session, slug: str, counterparty: str, amount: str,
                   currency: str | None, reference: str, net: bool, as_json: bool) -> None:
    """Pay a counterparty: send it a signed statement; post once it acknowledges."""
    paid = settlement_actions.pay(session, slug=slug, counterparty=counterparty, amount=amount,
                                  currency=currency, reference=reference, actor=Actor.cli(),
                                  net=net)
    if as_json:
        emit_json(paid.as_json())
        return
    cur = paid.amount.currency
    info(("Already paid and acknowledged; nothing changed: " if paid.replayed else "Paid ")
         + f"{format_display(paid.amount.micros, cur)} to {paid.counterparty}"
         f" ({paid.reference}), statement {paid.jti}")
    info(f"  they say we still owe {format_display(paid.outstanding.micros, cur)};"
         f" by our receipts {format_display(paid.we_owe, cur)}")


@settlement.command("reconcile")
@org_option
@click.option("--counterparty", required=True, metavar="ISSUER_ID")
@json_option
@with_session
def settlement_reconcile(session: Session, slug: str, counterparty: str, as_json: bool) -> int:
    """Compare our receipts and payments with the counterparty's signed view; exit 1 on
    any difference."""
    done = settlement_actions.reconcile(session, slug=slug, counterparty=counterparty,
                                        actor=Actor.cli())
    if as_json:
        emit_json(done.as_json())
    else:
        ours = done.ours
        info(f"{done.counterparty}: {len(ours['they_redeemed'])} of our notes they redeemed,"
             f" {len(ours['we_honoured'])} of theirs we honoured,"
             f" {len(ours['payments'])} payments")
        if not done.differences:
            info("  both sides agree")
    for line in done.differences:
        click.echo(f"difference: {clean(line, 400)}", err=True)
    return 1 if done.differences else 0
