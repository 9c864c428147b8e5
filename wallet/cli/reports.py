"""`wallet report`: the liability roll-forward for finance (issue 15)."""

from __future__ import annotations

import click
from sqlmodel import Session

from wallet.actions import reports
from wallet.actions._base import org_or_404
from wallet.cli.base import cli, emit_json, fail_line, info, json_option, org_option, with_session
from wallet.core.money import format_display

# The columns of the text table: the liability first, then what stands beside it.
_COLUMNS = (("liability", "Liability"), ("unvested", "Unvested"), ("pool", "Pool"))


@cli.group()
def report() -> None:
    """Finance reports read from the ledger."""


@report.command("rollforward")
@org_option
@click.option("--from", "start", required=True, metavar="DATE",
              help="First day of the range (YYYY-MM-DD, UTC), included.")
@click.option("--to", "end", required=True, metavar="DATE",
              help="Day after the range (YYYY-MM-DD, UTC), not included.")
@json_option
@with_session
def rollforward(session: Session, slug: str, start: str, end: str, as_json: bool) -> int:
    """The liability roll-forward of [--from, --to): opening, movements, closing.

    The liability is available + held + outstanding notes + payable; the unvested
    (contingent) credit and the pool roll beside it. Exit 1 if it does not reconcile.
    """
    first, after = reports.parse_range(start, end)
    org = org_or_404(session, slug)
    done = reports.roll_forward(session, org=org, start=first, end=after)
    roll = done.rollforward
    if as_json:
        emit_json(reports.as_json(done))
    else:
        _print(done)
    if not roll.reconciles:
        fail_line("the roll-forward does not reconcile: opening + movements differ from"
                  " closing (a ledger bug; run 'wallet ledger check')")
        return 1
    return 0


def _print(done: reports.Report) -> None:
    roll, currency = done.rollforward, done.currency

    def row(label: str, values: dict[str, int], moved: int | None = None) -> str:
        cells = "".join(f"{_amount(values[key], currency):>16}" for key, _ in _COLUMNS)
        gross = "" if moved is None else _amount(moved, currency)
        return f"  {label:<37}{gross:>16}{cells}"

    info(f"Liability roll-forward of {done.slug}, {done.start.isoformat()} to"
         f" {done.end.isoformat()} (not included), {currency}")
    info(f"  {'':<37}{'Moved':>16}" + "".join(f"{title:>16}" for _, title in _COLUMNS))
    info(row(f"Opening (start of {done.start.isoformat()})", roll.opening.as_dict()))
    for line in roll.lines:
        info(row(line.label, line.change.as_dict(), line.gross))
    info(row(f"Closing (start of {done.end.isoformat()})", roll.closing.as_dict()))
    closing = roll.closing
    info("  Moved: the line's transfers in total; the other columns: what they changed.")
    info(f"  Closing liability = available {format_display(closing.available, currency)}"
         f" + held {format_display(closing.held, currency)}"
         f" + outstanding notes {format_display(closing.notes, currency)}"
         f" + payable {format_display(closing.payable, currency)}")
    if roll.reconciles:
        info("  The roll-forward reconciles: opening + movements = closing in every column.")


def _amount(micros: int, currency: str) -> str:
    return format_display(micros, currency).removesuffix(f" {currency}")
