"""`wallet holds`: credit held for model calls in progress (docs/gateway.md)."""

from __future__ import annotations

import click
from sqlmodel import Session

from wallet.actions import holds as hold_actions
from wallet.actions._base import atomic, member_or_404, org_or_404
from wallet.cli.base import cli, emit_json, info, json_option, org_option, with_session
from wallet.core.money import format_amount, format_display


@cli.group()
def holds() -> None:
    """Credit held for model calls in progress (placed by the gateway)."""


@holds.command("list")
@org_option
@click.option("--email", required=True, help="The engineer whose open holds to show.")
@json_option
@with_session
def list_holds(session: Session, slug: str, email: str, as_json: bool) -> None:
    """Show a person's open holds (calls in progress), newest first."""
    org = org_or_404(session, slug)
    _m, person = member_or_404(session, org, email)
    found = hold_actions.in_flight(session, org=org, person=person)
    if as_json:
        emit_json({"org": slug, "email": person.email, "currency": org.currency,
                   "count": found.count, "held": format_amount(found.held),
                   "holds": [{"id": h.public_id, "model": h.model,
                              "amount": format_amount(h.amount),
                              "expires_at": h.expires_at.isoformat(),
                              "reference": h.reference} for h in found.holds]})
        return
    if not found.count:
        info(f"{person.email} has no calls in progress at {slug}")
        return
    info(f"{person.email} at {slug}: {found.count} call(s) in progress,"
         f" {format_display(found.held, org.currency)} held")
    for h in found.holds:
        info(f"  {h.public_id}  {format_display(h.amount, h.currency):>14}  "
             f"{h.model or '(amount)'}  expires {h.expires_at:%Y-%m-%d %H:%M:%S}Z")


@holds.command("expire")
@org_option
@json_option
@with_session
def expire(session: Session, slug: str, as_json: bool) -> None:
    """Release the holds past their expiry (each once; safe to run any time, e.g. from cron)."""
    org = org_or_404(session, slug)
    with atomic(session):
        released = hold_actions.release_due(session, org=org)
    if as_json:
        emit_json({"org": slug, "released": released})
    else:
        info(f"Released {released} expired hold(s) at {slug}")
