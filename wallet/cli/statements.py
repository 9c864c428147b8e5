"""`wallet statement`: signed balance statements (docs/finance.md, "Signed statements")."""

from __future__ import annotations

from typing import Any

import click
from sqlmodel import Session

from wallet.actions import statements
from wallet.actions._base import Actor, member_or_404, org_or_404
from wallet.cli.base import (
    cli,
    emit_json,
    info,
    json_option,
    org_option,
    publish_new_file,
    reserve_new_file,
    with_session,
)
from wallet.cli.notes import read_input
from wallet.core import statements as core_statements
from wallet.core.errors import Malformed
from wallet.core.money import format_display


@cli.group()
def statement() -> None:
    """Signed statements of an engineer's grants, vesting and balances."""


@statement.command("issue")
@org_option
@click.option("--email", required=True, help="The engineer the statement is for.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False),
              help="Write the statement (a JWS) here; an existing file is never replaced.")
@with_session
def statement_issue(session: Session, slug: str, email: str, out: str) -> None:
    """Sign a statement of a person's holdings as of now (as the portal's download)."""
    org = org_or_404(session, slug)
    _m, person = member_or_404(session, org, email)
    temporary = reserve_new_file(out)
    token = statements.issue(session, org=org, person=person, actor=Actor.cli())
    publish_new_file(temporary, out, (token + "\n").encode("ascii"))
    info(f"Wrote a signed statement for {person.email} at {slug} to {out}")


@statement.command("verify")
@click.argument("file")
@click.option("--jwks", "jwks_file", required=True, type=click.Path(dir_okay=False),
              help="The issuer's JWKS (from its /.well-known/jwt-vc-issuer metadata).")
@json_option
def statement_verify(file: str, jwks_file: str, as_json: bool) -> int:
    """Verify a statement offline; exit 0 when valid, 1 when not, 2 for bad input.

    FILE ('-' for stdin) holds one statement. An empty file is bad input (exit 2):
    nothing checked is never success.
    """
    text = read_input(file)
    if not text:
        where = "standard input" if file == "-" else file
        raise Malformed(f"{where} holds no statement (it is empty or blank)")
    report = statements.check(text, jwks_text=read_input(jwks_file))
    if as_json:
        emit_json(report)
    else:
        _print(report)
    return 0 if report["valid"] else 1


def _print(report: dict[str, Any]) -> None:
    found = report["statement"]
    if found is None:
        info("INVALID statement")
    else:
        info(f"VALID statement for {found['sub']} from {found['iss']}, as of {found['as_of']}")
    for check in report["checks"]:
        mark = "ok " if check["ok"] is True else ("-- " if check["ok"] is None else "FAIL")
        info(f"    {mark} {check['name']}" + (f" ({check['note']})" if check.get("note") else ""))
    for error in report["errors"]:
        info(f"    {error['code']}: {error['message']}")
    if found is None:
        return
    currency = found["currency"]
    for name, value in found["totals"].items():
        shown = format_display(core_statements.micros_of(value), currency)
        info(f"  {name:<10} {shown:>24}")
    info(f"  {len(found['grants'])} grant(s)")

