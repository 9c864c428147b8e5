"""Operating an instance: serve, database, demo, organisations, people, money, tokens."""

from __future__ import annotations

from typing import Any

import click
from flask import Flask
from sqlmodel import Session

from wallet.actions import demo as demo_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import orgs as org_actions
from wallet.actions import reports, wallets
from wallet.actions._base import Actor, member_or_404, org_or_404, parse_date
from wallet.cli.base import (
    cli,
    emit_json,
    info,
    json_option,
    org_option,
    read_secret_file,
    warn,
    with_app,
    with_session,
)
from wallet.core.money import format_amount, format_display

# -- serve and database ------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Threads per worker.")
@click.option("--access-log", is_flag=True, help="Log every request to stdout.")
@with_app
def serve(app: Flask, host: str, port: int, workers: int, threads: int,
          access_log: bool) -> None:
    """Run the web app under gunicorn."""
    from wallet import db, migrations, server

    engine = db.engine()
    if migrations.current_revision(engine) != migrations.head_revision(engine):
        warn("the database is not at the latest migration; run 'wallet db upgrade'")
    engine.dispose()  # workers open their own connections after the fork
    base = app.config["WALLET_BASE_URL"]
    info(f"Serving Compute Credits on http://{host}:{port}  (issuer base URL: {base})")
    if not base.endswith(f":{port}") and base.startswith("http://127.0.0.1"):
        warn(f"WALLET_BASE_URL is {base}; issuer ids will use it, not port {port}")
    server.run(host=host, port=port, workers=workers, threads=threads, access_log=access_log)


@cli.group()
def db() -> None:
    """Database schema (Alembic migrations shipped in the package)."""


@db.command("upgrade")
@with_app
def db_upgrade(_app: Flask) -> None:
    """Apply migrations up to the newest."""
    from wallet import db as database
    from wallet import migrations

    engine = database.engine()
    before = migrations.current_revision(engine)
    migrations.upgrade(engine)
    after = migrations.current_revision(engine)
    info(f"Database at revision {after}" + (" (unchanged)" if before == after else
                                            f" (was {before or 'empty'})"))


@db.command("current")
@with_app
def db_current(_app: Flask) -> None:
    """Print the database's revision and the newest one."""
    from wallet import db as database
    from wallet import migrations

    engine = database.engine()
    info(f"current: {migrations.current_revision(engine) or 'none'}; "
         f"head: {migrations.head_revision(engine)}")


# -- demo --------------------------------------------------------------------------------


@cli.command()
@click.option("--password", default=demo_actions.DEFAULT_PASSWORD, show_default=True,
              help="Password for every demo login.")
@click.option("--if-empty", is_flag=True,
              help="Load only when the database has no organisation yet.")
@with_session
def demo(session: Session, password: str, if_empty: bool) -> None:
    """Create the demo organisations acme and globex, their people, money and notes."""
    report = demo_actions.load(session, password=password, if_empty=if_empty)
    for line in report.lines:
        info(line)
    from flask import current_app

    info("")
    info(f"Open {current_app.config['WALLET_BASE_URL']}/login and sign in as (password: "
         + ("as set before" if not report.changed and if_empty else password) + "):")
    for email, what in demo_actions.LOGINS:
        info(f"  {email:<22} {what}")
    if demo_actions.wallet_file_path().exists():
        info(f"Ada's wallet file to bring in at globex: {demo_actions.wallet_file_path()}")


# -- organisations and people ------------------------------------------------------------


@cli.group()
def org() -> None:
    """Organisations (tenants)."""


@org.command("create")
@click.argument("slug")
@click.option("--name", required=True, help="Display name.")
@click.option("--admin-email", required=True, help="The first administrator.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="File whose first line is the admin's password (else an invitation).")
@with_session
def org_create(session: Session, slug: str, name: str, admin_email: str,
               password_file: str | None) -> None:
    """Add an organisation with its first administrator."""
    password = read_secret_file(password_file) if password_file else None
    created, added = org_actions.create_org(session, slug=slug, name=name,
                                            admin_email=admin_email, actor=Actor.cli(),
                                            admin_password=password)
    info(f"Created organisation {created.slug} ({created.name}); admin {added.person.email}")
    _print_invite(added)


def _print_invite(added: org_actions.Added) -> None:
    if added.invite:
        from flask import current_app

        base = current_app.config["WALLET_BASE_URL"]
        info(f"Invitation link (valid {org_actions.INVITE_DAYS} days, shown once):"
             f" {base}/invite/{added.invite}")


@cli.group()
def person() -> None:
    """People and their employment."""


@person.command("add")
@org_option
@click.option("--email", required=True)
@click.option("--role", type=click.Choice(org_actions.ROLES), default="engineer",
              show_default=True)
@click.option("--start", metavar="DATE", help="Employment start (YYYY-MM-DD; default today).")
@click.option("--name", default="", help="Display name.")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="File whose first line is the password (else an invitation).")
@with_session
def person_add(session: Session, slug: str, email: str, role: str, start: str | None,
               name: str, password_file: str | None) -> None:
    """Add a person to an organisation."""
    start_on = parse_date(start, "--start") if start else None
    password = read_secret_file(password_file) if password_file else None
    added = org_actions.add_person(session, slug=slug, email=email, role=role, start=start_on,
                                   name=name, password=password, actor=Actor.cli())
    info(f"Added {added.person.email} to {slug} as {role} from "
         f"{added.membership.started_on.isoformat()}")
    _print_invite(added)


@person.command("reset-link")
@org_option
@click.option("--email", required=True)
@with_session
def person_reset_link(session: Session, slug: str, email: str) -> None:
    """Print a single-use password reset link (valid 1 hour) for a member.

    Using it sets the password and keeps this organisation only: the person's other
    memberships return to unconfirmed, and every session of theirs ends.
    """
    from flask import current_app

    token = org_actions.reset_link(session, slug=slug, email=email, actor=Actor.cli())
    base = current_app.config["WALLET_BASE_URL"]
    info(f"Password reset link for {email.strip().lower()} at {slug} (valid 1 hour, single use,"
         f" shown once): {base}/reset/{token}")


# -- money -------------------------------------------------------------------------------


@cli.command()
@org_option
@click.option("--amount", required=True, help='Decimal amount, e.g. "250000.00".')
@click.option("--currency", default=None, help="ISO 4217 code (default: the organisation's).")
@click.option("--idempotency-key", required=True,
              help="Unique per funding; replaying it changes nothing.")
@click.option("--memo", default="", help="A reference for finance.")
@json_option
@with_session
def fund(session: Session, slug: str, amount: str, currency: str | None,
         idempotency_key: str, memo: str, as_json: bool) -> None:
    """Move money from outside into the organisation's pool."""
    recorded = ledger_actions.fund(session, slug=slug, amount=amount, currency=currency,
                                   idempotency_key=idempotency_key, memo=memo,
                                   actor=Actor.cli())
    t = recorded.transfer
    if as_json:
        emit_json({"transfer": t.id, "amount": format_amount(t.amount), "currency": t.currency,
                   "created": recorded.created})
    elif recorded.created:
        info(f"Funded {slug}'s pool with {format_display(t.amount, t.currency)} (transfer {t.id})")
    else:
        info(f"Already recorded as transfer {t.id}; nothing changed")


def _org_balance(slug: str, position: Any, currency: str, on: Any, as_json: bool) -> None:
    figures = position.as_dict()
    if as_json:
        emit_json({"org": slug, "currency": currency, "as_of": on.isoformat(),
                   **{"outstanding_notes" if name == "notes" else name: format_amount(micros)
                      for name, micros in figures.items()}})
        return
    info(f"{slug}, as of {on.isoformat()} (end of day, UTC)")
    for name, label in (("pool", "Pool"), ("unvested", "Unvested"),
                        ("available", "Available"), ("held", "Held"),
                        ("notes", "Outstanding notes"), ("payable", "Payable"),
                        ("liability", "Liability")):
        info(f"  {label:<18} {format_display(figures[name], currency)}")


@cli.command()
@org_option
@click.option("--email", default=None,
              help="The engineer (without it, with --as-of: the organisation's positions).")
@click.option("--as-of", "as_of", metavar="DATE",
              help="Balances at the end of this day (YYYY-MM-DD, UTC), from the ledger's"
                   " transfers; default: now.")
@json_option
@with_session
def balance(session: Session, slug: str, email: str | None, as_of: str | None,
            as_json: bool) -> None:
    """Show a person's available, held, unvested, spent and outstanding credit, or the
    organisation's positions as of a day.

    Available is what the wallet can spend now: credit held for calls in progress
    is not in it. With --as-of, what the ledger held at the end of that day (nothing is
    vested on the way: tranches count once their vesting was posted); without --email,
    the organisation's pool, unvested, available, held, outstanding notes, payable and
    liability then (docs/finance.md, "Balances as of a date")."""
    on = None if as_of is None else parse_date(as_of, "--as-of")
    organisation = org_or_404(session, slug)
    if email is None:
        if on is None:
            raise click.UsageError("give --email E for a person, or --as-of DATE for the"
                                   " organisation's positions")
        _org_balance(slug, reports.org_position(session, org=organisation, on=on),
                     organisation.currency, on, as_json)
        return
    _m, who = member_or_404(session, organisation, email)
    if on is not None:
        b = reports.person_balance(session, org=organisation, person=who, on=on)
        shown = [("available", b.available), ("held", b.held), ("unvested", b.unvested),
                 ("spent", b.spent), ("outstanding_notes", b.outstanding_notes)]
        if as_json:
            emit_json({"org": slug, "email": who.email, "currency": b.currency,
                       "as_of": on.isoformat(),
                       **{name: format_amount(micros) for name, micros in shown},
                       "outstanding_count": b.outstanding_count})
            return
        info(f"{who.email} at {slug}, as of {on.isoformat()} (end of day, UTC)")
        for name, micros in shown:
            label = name.replace("_", " ").capitalize()
            info(f"  {label:<18} {format_display(micros, b.currency)}"
                 + (f" in {b.outstanding_count} note(s)" if name == "outstanding_notes" else ""))
        return
    s = wallets.summary(session, org=organisation, person=who)
    nxt = wallets.next_vesting(session, org=organisation, person=who)
    if as_json:
        emit_json({
            "org": slug, "email": who.email, "currency": s.currency,
            "available": format_amount(s.available), "unvested": format_amount(s.unvested),
            "next_vesting": None if nxt is None else {
                "date": nxt[0].isoformat(), "amount": format_amount(nxt[1])},
            "spent": format_amount(s.spent),
            "outstanding_notes": format_amount(s.outstanding_notes),
            "outstanding_count": s.outstanding_count,
            "held": format_amount(s.held), "holds_open": s.holds_open,
        })
        return
    rows: list[tuple[str, Any]] = [
        ("Available", format_display(s.available, s.currency)),
        ("Held", f"{format_display(s.held, s.currency)} for {s.holds_open} call(s) in"
                 " progress" if s.holds_open else format_display(0, s.currency)),
        ("Unvested", format_display(s.unvested, s.currency)
         + ("" if nxt is None else f" (next {format_display(nxt[1], s.currency)} on "
                                   f"{nxt[0].isoformat()})")),
        ("Spent", format_display(s.spent, s.currency)),
        ("Outstanding notes", f"{format_display(s.outstanding_notes, s.currency)}"
                              f" in {s.outstanding_count} note(s)"),
    ]
    info(f"{who.email} at {slug}")
    for label, value in rows:
        info(f"  {label:<18} {value}")


# -- tokens and the ledger ---------------------------------------------------------------


@cli.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@org_option
@click.option("--email", help="Owner of a personal token.")
@click.option("--service", is_flag=True, help="A service token (e.g. a compute gateway).")
@click.option("--label", default="", help="What the token is for.")
@click.option("--expires-days", type=int, metavar="DAYS",
              help=f"The token stops working after DAYS days (1-{org_actions.MAX_TOKEN_DAYS});"
                   " default: never.")
@with_session
def token_create(session: Session, slug: str, email: str | None, service: bool,
                 label: str, expires_days: int | None) -> None:
    """Create an API token; it is printed once and stored only as a hash."""
    if bool(email) == service:
        raise click.UsageError("give exactly one of --email or --service")
    value, row = org_actions.create_token(session, slug=slug, email=email, label=label,
                                          expires_days=expires_days, actor=Actor.cli())
    click.echo(value)
    until = f"expires {row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else "no expiry"
    click.echo(f"(token {row.prefix}… for {email or 'service use'} at {slug}; {until};"
               " shown once)", err=True)
    if email is not None:
        membership, who = member_or_404(session, org_or_404(session, slug), email)
        if membership.confirmed_at is None:
            warn(f"{who.email} has not accepted {slug}'s invitation yet: the token works"
                 " once they do")


@cli.group()
def ledger() -> None:
    """The double-entry ledger."""


@ledger.command("check")
@click.option("--org", "slug", metavar="SLUG", help="One organisation (default: all).")
@json_option
@with_session
def ledger_check(session: Session, slug: str | None, as_json: bool) -> int:
    """Check the ledger invariants; exit 1 listing what is broken."""
    report = ledger_actions.check(session, slug=slug)
    broken = {k: v for k, v in report.items() if v}
    if as_json:
        emit_json({"ok": not broken, "organisations": report})
    else:
        for name, problems in report.items():
            if problems:
                for problem in problems:
                    click.echo(f"{name}: {problem}", err=True)
            else:
                info(f"{name}: ok")
        if not report:
            info("no organisations")
    return 1 if broken else 0


