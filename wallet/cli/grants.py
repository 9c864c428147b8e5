"""Grants, vesting, termination and the price catalogue (docs/grants.md)."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Any

import click
from sqlmodel import Session

from wallet import clock
from wallet.actions import grants as grant_actions
from wallet.actions import usage as usage_actions
from wallet.actions._base import Actor, member_or_404, org_or_404, parse_date
from wallet.cli.admin import person
from wallet.cli.base import (
    cli,
    confirm,
    emit_json,
    info,
    is_tty,
    json_option,
    org_option,
    with_session,
    yes_option,
)
from wallet.core.errors import RowsInvalid
from wallet.core.money import format_amount, format_display

MAX_FILE_BYTES = 64 * 1024 * 1024


def _date(value: str | None, option: str) -> date | None:
    return parse_date(value, option) if value else None


# -- grants --------------------------------------------------------------------------------


@cli.group()
def grant() -> None:
    """Grant credits to engineers, immediately or vesting over time."""


@grant.command("create")
@org_option
@click.option("--email", required=True, help="The engineer (a member of the organisation).")
@click.option("--amount", required=True, help='Decimal amount, e.g. "48000.00".')
@click.option("--start", metavar="DATE", help="Vesting start (YYYY-MM-DD; default today).")
@click.option("--cliff-months", type=click.IntRange(0, 600), default=None,
              help="Nothing vests before this many months; then it catches up.")
@click.option("--every", type=click.Choice(["month", "quarter"]), default=None,
              help="Tranche period (omit for an immediate grant).")
@click.option("--months", type=click.IntRange(1, 600), default=None,
              help="Total vesting duration in months (with --every).")
@click.option("--memo", default="", help="A reference for finance.")
@json_option
@with_session
def grant_create(session: Session, slug: str, email: str, amount: str, start: str | None,
                 cliff_months: int | None, every: str | None, months: int | None, memo: str,
                 as_json: bool) -> None:
    """Grant credit to one person."""
    result = grant_actions.create_grant(
        session, slug=slug, email=email, amount=amount, start=_date(start, "--start"),
        cliff_months=cliff_months, every=every, months=months, memo=memo, actor=Actor.cli())
    g = result.grant
    if as_json:
        emit_json({
            "grant": g.id, "email": email.strip().lower(), "amount": format_amount(g.amount),
            "currency": g.currency, "start": g.start_on.isoformat(), "every": g.every,
            "months": g.months, "cliff_months": g.cliff_months,
            "vested_now": format_amount(result.vested_now),
            "tranches": [{"seq": t.seq, "due_on": t.due_on.isoformat(),
                          "amount": format_amount(t.amount)} for t in result.tranches],
        })
        return
    immediate = g.every is None and g.start_on <= clock.today()
    what = "immediately" if immediate else f"in {len(result.tranches)} tranche(s)"
    info(f"Granted {format_display(g.amount, g.currency)} to {email.strip().lower()} at {slug}"
         f" {what} (grant {g.id})")
    if result.vested_now:
        info(f"  vested now: {format_display(result.vested_now, g.currency)}")
    pending = [t for t in result.tranches if t.due_on > clock.today()]
    if pending:
        info(f"  next: {format_display(pending[0].amount, g.currency)} on "
             f"{pending[0].due_on.isoformat()}; last on {pending[-1].due_on.isoformat()}")


@grant.command("import")
@org_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@with_session
def grant_import(session: Session, slug: str, file: Path, as_json: bool) -> int:
    """Import grants from a UTF-8 CSV, all or nothing.

    Header: email,amount,start,cliff_months,every,months. Any problem refuses the whole
    file: every problem of every row (form, non-members, leavers) is found in one pass and
    the first 100 are printed with their line numbers, then how many there were in all;
    --json prints them as JSON on stdout ({"ok": false, "problems": [...], "total": N}).
    """
    data = _read_csv(file)
    try:
        if is_tty() and not as_json:
            rows = max(data.count(b"\n") - 1, 1)
            with click.progressbar(length=rows, label="Importing grants",
                                   file=sys.stdout) as bar:
                result = grant_actions.import_grants(session, slug=slug, data=data,
                                                     actor=Actor.cli(), filename=file.name,
                                                     progress=bar.update)
        else:
            result = grant_actions.import_grants(session, slug=slug, data=data,
                                                 actor=Actor.cli(), filename=file.name)
    except RowsInvalid as err:
        if as_json:
            emit_json({"ok": False, "code": err.code, "message": err.message,
                       "problems": [{"line": line, "reason": reason}
                                    for line, reason in err.problems],
                       "total": err.total})
        else:
            for line, reason in err.problems:
                info(f"line {line}: {reason}")
            if err.total > len(err.problems):
                info(f"(the first {len(err.problems)} of {err.total:,} problems; nothing was"
                     " imported)")
        raise
    if as_json:
        emit_json({"ok": True, "created": result.created, "grants": result.count,
                   "total": format_amount(result.total), "currency": result.currency,
                   "vested_now": format_amount(result.vested_now)})
    elif result.created:
        info(f"Imported {result.count:,} grant(s) totalling "
             f"{format_display(result.total, result.currency)} into {slug}")
    else:
        info(f"This file was already imported into {slug}; nothing changed")
    return 0


def _read_csv(file: Path) -> bytes:
    """The file's bytes, size-limited; a missing, unreadable or special file is bad input."""
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except IsADirectoryError:
        raise click.BadParameter(f"{file} is a directory", param_hint="FILE") from None
    except OSError as err:
        raise click.BadParameter(f"cannot read {file}: {err.strerror}",
                                 param_hint="FILE") from None
    if len(data) > MAX_FILE_BYTES:
        raise click.BadParameter(f"{file} is larger than {MAX_FILE_BYTES // 2**20} MiB",
                                 param_hint="FILE")
    return data


# -- vesting -------------------------------------------------------------------------------


@cli.command()
@click.option("--org", "slug", metavar="SLUG", help="Organisation slug.")
@click.option("--all-orgs", is_flag=True, help="Every organisation (for a scheduled job).")
@click.option("--as-of", metavar="DATE", help="Post tranches due on or before this date"
              " (YYYY-MM-DD; default today; never in the future).")
@json_option
@with_session
def vest(session: Session, slug: str | None, all_orgs: bool, as_of: str | None,
         as_json: bool) -> None:
    """Post due vesting tranches (idempotent: a second run posts nothing)."""
    if bool(slug) == all_orgs:
        raise click.UsageError("give exactly one of --org SLUG or --all-orgs")
    day = _date(as_of, "--as-of")
    if all_orgs:
        runs = grant_actions.vest_all(session, as_of=day, actor=Actor.cli())
    else:
        assert slug is not None
        runs = [grant_actions.vest(session, slug=slug, as_of=day, actor=Actor.cli())]
    if as_json:
        emit_json([{"org": r.slug, "as_of": r.as_of.isoformat(), "tranches": r.count,
                    "amount": format_amount(r.amount), "currency": r.currency}
                   for r in runs])
        return
    for r in runs:
        info(f"{r.slug}: vested {r.count:,} tranche(s), {format_display(r.amount, r.currency)}"
             f" (as of {r.as_of.isoformat()})")
    if not runs:
        info("no organisations")


# -- termination ---------------------------------------------------------------------------


@person.command("terminate")
@org_option
@click.option("--email", required=True)
@click.option("--on", "on", required=True, metavar="DATE",
              help="Last day of employment (YYYY-MM-DD).")
@yes_option
@json_option
@with_session
def person_terminate(session: Session, slug: str, email: str, on: str, yes: bool,
                     as_json: bool) -> None:
    """End employment: tranches due after the date return to the pool (asks first)."""
    ended = parse_date(on, "--on")
    member_or_404(session, org_or_404(session, slug), email)  # refused before asking
    confirm(f"End {email.strip().lower()}'s employment at {slug} on {ended.isoformat()}?"
            " Unvested tranches due after that day return to the pool; this cannot be"
            " undone", yes)
    t = grant_actions.terminate(session, slug=slug, email=email, on=ended, actor=Actor.cli())
    if as_json:
        emit_json({"email": t.email, "ended_on": t.ended_on.isoformat(), "created": t.created,
                   "forfeited_tranches": t.forfeited_count,
                   "forfeited": format_amount(t.forfeited)})
        return
    if not t.created:
        info(f"{t.email}'s employment already ends on {t.ended_on.isoformat()}; nothing changed")
        return
    info(f"{t.email}'s employment at {slug} ends on {t.ended_on.isoformat()}; "
         f"{t.forfeited_count} unvested tranche(s) returned to the pool "
         f"({format_amount(t.forfeited)})")


# -- prices --------------------------------------------------------------------------------


@cli.group()
def prices() -> None:
    """The price catalogue: models and their prices per million tokens."""


@prices.command("list")
@org_option
@json_option
@with_session
def prices_list(session: Session, slug: str, as_json: bool) -> None:
    """List the organisation's prices (shipped defaults and its own)."""
    entries = usage_actions.catalogue(session, org=org_or_404(session, slug))
    if as_json:
        emit_json([{**e.snapshot(), "custom": e.custom} for e in entries])
        return
    rows: list[tuple[Any, ...]] = [("model", "input/Mtok", "output/Mtok", "as of", "source")]
    rows += [(e.model, format_amount(e.input_per_mtok), format_amount(e.output_per_mtok),
              e.as_of.isoformat(), ("" if e.custom else "default: ") + e.source)
             for e in entries]
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    for r in rows:
        info("  ".join(str(v).ljust(w) for v, w in zip(r[:4], widths, strict=True)) + "  " + r[4])


@prices.command("set")
@org_option
@click.argument("model")
@click.option("--input", "input_price", required=True, help="Price per million input tokens.")
@click.option("--output", "output_price", required=True,
              help="Price per million output tokens.")
@click.option("--source", default="", help="Where the price comes from.")
@with_session
def prices_set(session: Session, slug: str, model: str, input_price: str, output_price: str,
               source: str) -> None:
    """Set one model's prices (decimal strings in the organisation's currency)."""
    e = usage_actions.set_price(session, slug=slug, model=model, input_price=input_price,
                                output_price=output_price, source=source, actor=Actor.cli())
    info(f"{e.model}: {format_display(e.input_per_mtok, e.currency)} input, "
         f"{format_display(e.output_per_mtok, e.currency)} output per million tokens")
