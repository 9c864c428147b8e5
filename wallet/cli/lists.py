"""Listing what an organisation holds, from the CLI: organisations, people, grants, notes,
tokens (and revoking one), and the audit log. Each prints a table for people and, with
`--json`, the same rows for scripts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from sqlmodel import Session

from wallet.actions import grants as grant_actions
from wallet.actions import notes as note_actions
from wallet.actions import orgs as org_actions
from wallet.actions._base import Actor, member_or_404, org_or_404
from wallet.cli.admin import org, person, token
from wallet.cli.base import cli, confirm, emit_json, info, json_option, org_option, with_session
from wallet.cli.grants import grant
from wallet.cli.notes import note
from wallet.core.money import format_amount, format_display

LIMIT = click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
                     help="At most this many rows, newest first.")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], empty: str) -> None:
    """Columns padded to their widest cell; `empty` when there is no row."""
    if not rows:
        info(empty)
        return
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    info("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        info("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _day(moment: Any) -> str:
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M")


@org.command("list")
@json_option
@with_session
def org_list(session: Session, as_json: bool) -> None:
    """Every organisation on this instance."""
    found = org_actions.organisations(session)
    if as_json:
        emit_json([{"slug": o.slug, "name": o.name, "currency": o.currency} for o in found])
        return
    _table(("SLUG", "NAME", "CURRENCY"), [(o.slug, o.name, o.currency) for o in found],
           "No organisations yet: 'wallet org create' makes one")


@person.command("list")
@org_option
@json_option
@with_session
def person_list(session: Session, slug: str, as_json: bool) -> None:
    """An organisation's members, by email."""
    rows = org_actions.members(session, org=org_or_404(session, slug))
    if as_json:
        emit_json([{"email": p.email, "name": m.name or p.name, "role": m.role,
                    "confirmed": m.confirmed_at is not None,
                    "start": None if m.started_on is None else m.started_on.isoformat(),
                    "ended": None if m.ended_on is None else m.ended_on.isoformat()}
                   for m, p in rows])
        return
    _table(("EMAIL", "NAME", "ROLE", "STATE"),
           [(p.email, m.name or p.name, m.role, "left " + m.ended_on.isoformat() if m.ended_on
             else ("member" if m.confirmed_at else "invited")) for m, p in rows],
           f"{slug} has no members")


@grant.command("list")
@org_option
@click.option("--email", default=None, help="Only this engineer's grants.")
@LIMIT
@json_option
@with_session
def grant_list(session: Session, slug: str, email: str | None, limit: int,
               as_json: bool) -> None:
    """An organisation's grants, newest first, with how far each has vested."""
    found = org_or_404(session, slug)
    views = grant_actions.grant_list(session, org=found, limit=limit if email is None else 10_000)
    if email is not None:
        wanted = email.strip().lower()
        views = [v for v in views if v.email == wanted][:limit]
    if as_json:
        emit_json([{"id": v.grant.id, "email": v.email, "amount": format_amount(v.grant.amount),
                    "currency": v.grant.currency, "start_on": v.grant.start_on.isoformat(),
                    "every": v.grant.every, "months": v.grant.months,
                    "cliff_months": v.grant.cliff_months, "vested": format_amount(v.vested),
                    "pending": format_amount(v.pending),
                    "forfeited": format_amount(v.forfeited),
                    "next_due": None if v.next_due is None else v.next_due.isoformat()}
                   for v in views])
        return
    _table(("ID", "EMAIL", "AMOUNT", "START", "SCHEDULE", "VESTED", "NEXT"),
           [(v.grant.id, v.email, format_display(v.grant.amount, v.grant.currency),
             v.grant.start_on.isoformat(),
             "immediate" if v.grant.every is None else f"{v.grant.months} months by"
             f" {v.grant.every}", format_display(v.vested, v.grant.currency),
             "" if v.next_due is None else v.next_due.isoformat()) for v in views],
           f"{slug} has no grants" + (f" for {email}" if email else ""))


@note.command("list")
@org_option
@click.option("--search", "query", default="", help="Part of an email or a jti.")
@click.option("--state", type=click.Choice(["active", "expired", "redeemed", "revoked",
                                            "reclaimed"]),
              default=None, help="Only notes in this state (expired: still outstanding past"
              " their expiry; 'wallet note breakage' books one).")
@LIMIT
@json_option
@with_session
def note_list(session: Session, slug: str, query: str, state: str | None, limit: int,
              as_json: bool) -> None:
    """Notes an organisation issued, newest first."""
    views = note_actions.search(session, org=org_or_404(session, slug), query=query,
                                state=state, limit=limit)
    if as_json:
        emit_json([{"jti": v.row.jti, "email": v.person.email,
                    "amount": format_amount(v.row.amount), "currency": v.row.currency,
                    "state": v.display_state, "issued_at": v.row.issued_at.isoformat(),
                    "expires_at": v.row.expires_at.isoformat()} for v in views])
        return
    _table(("JTI", "EMAIL", "AMOUNT", "STATE", "ISSUED", "EXPIRES"),
           [(v.row.jti, v.person.email, format_display(v.row.amount, v.row.currency),
             v.display_state, _day(v.row.issued_at), _day(v.row.expires_at)) for v in views],
           f"{slug} has issued no notes" + (" matching that" if query or state else ""))


@token.command("list")
@org_option
@click.option("--email", default=None, help="This person's tokens (default: service tokens).")
@json_option
@with_session
def token_list(session: Session, slug: str, email: str | None, as_json: bool) -> None:
    """API tokens of a person, or the organisation's service tokens (never the secrets)."""
    found = org_or_404(session, slug)
    owner = None if email is None else member_or_404(session, found, email)[1]
    rows = org_actions.tokens(session, org=found, person=owner)
    if as_json:
        emit_json([{"id": t.id, "prefix": t.prefix, "kind": t.kind, "label": t.label,
                    "created_at": t.created_at.isoformat(),
                    "last_used_at": None if t.last_used_at is None else
                    t.last_used_at.isoformat(),
                    "expires_at": None if t.expires_at is None else t.expires_at.isoformat(),
                    "revoked": t.revoked_at is not None} for t in rows])
        return
    _table(("ID", "PREFIX", "LABEL", "CREATED", "LAST USED", "STATE"),
           [(t.id, t.prefix, t.label, _day(t.created_at), _day(t.last_used_at),
             "revoked" if t.revoked_at else "live") for t in rows],
           f"no {'tokens for ' + email if email else 'service tokens'} at {slug}")


@token.command("revoke")
@org_option
@click.argument("token_id", type=int)
@click.option("--yes", is_flag=True, help="Do not ask (needed without a terminal).")
@json_option
@with_session
def token_revoke(session: Session, slug: str, token_id: int, yes: bool, as_json: bool) -> None:
    """Revoke an API token by its id (see 'wallet token list'); it stops working at once."""
    org_or_404(session, slug)
    confirm(f"Revoke token {token_id} at {slug}? Whatever uses it stops working", yes)
    org_actions.revoke_token(session, slug=slug, token_id=token_id, actor=Actor.cli())
    if as_json:
        emit_json({"id": token_id, "revoked": True})
    else:
        info(f"Revoked token {token_id} at {slug}")


@cli.command()
@org_option
@LIMIT
@json_option
@with_session
def audit(session: Session, slug: str, limit: int, as_json: bool) -> None:
    """The organisation's audit log, newest first: who did what, when."""
    events = org_actions.audit_events(session, org=org_or_404(session, slug), limit=limit)
    if as_json:
        emit_json([{"at": e.created_at.isoformat(), "actor": e.actor, "action": e.action,
                    "target": e.target, "details": e.details} for e in events])
        return
    _table(("AT", "ACTOR", "ACTION", "TARGET"),
           [(_day(e.created_at), e.actor, e.action, e.target) for e in events],
           f"{slug}'s audit log is empty")

