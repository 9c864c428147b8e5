"""`wallet export KIND`: CSV exports for finance (issue 15).

The document goes to stdout, or to `--output FILE`, which is never replaced unless
`--force` says so: it is written beside its name first and appears whole (a failed
export leaves no half-written file under the name). Everything is checked before a byte
is written: the kind, the dates and the organisation.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil

import click
from sqlmodel import Session

from wallet.actions import exports as export_actions
from wallet.cli.base import cli, discard_file, org_option, reserve_new_file, with_session


@cli.command("export")
@click.argument("kind", metavar="KIND", type=click.Choice(export_actions.KINDS))
@org_option
@click.option("--from", "start", metavar="DATE", help="First day (YYYY-MM-DD, UTC), included.")
@click.option("--to", "end", metavar="DATE", help="Last day (YYYY-MM-DD, UTC), included.")
@click.option("--output", "-o", "output", metavar="FILE",
              help="Write to FILE instead of stdout (never replaced unless --force).")
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@with_session
def export(session: Session, kind: str, slug: str, start: str | None, end: str | None,
           output: str | None, force: bool) -> None:
    """Export an organisation's KIND as CSV (UTF-8, a header row; cells a spreadsheet
    would run as formulas are quoted with a leading ').

    KIND: transactions, grants (one row per tranche), usage, notes (issued), settlement
    (the balances now; no dates), audit, people (the members now; no dates).
    """
    prepared = export_actions.export(session, slug=slug, kind=kind, start=start, end=end)
    if output is None:
        for piece in prepared.chunks():
            click.echo(piece, nl=False)  # bytes go to the binary stream as they are
        return
    temporary = _reserve(output, force)
    try:
        with open(temporary, "wb") as handle:
            for piece in prepared.chunks():
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
        _publish(temporary, output, force)
    finally:
        discard_file(temporary)
    click.echo(f"wrote {prepared.kind} of {slug} to {output}", err=True)


def _reserve(path: str, force: bool) -> str:
    """A private temporary file beside `path`; an existing `path` refused unless `force`."""
    if not force:
        return reserve_new_file(path, "--output")
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a directory; give a file name",
                                 param_hint="--output")
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise click.BadParameter(f"cannot write {path}: {err.strerror}",
                                 param_hint="--output") from None
    return temporary


def _publish(temporary: str, path: str, force: bool) -> None:
    """Give the written file its name: replacing with `force`, else never (a hard link
    fails if `path` appeared meanwhile)."""
    if force:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise click.BadParameter(f"{path} appeared while exporting; nothing replaced",
                                 param_hint="--output") from None
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        # No hard links on this file system: an exclusive create still never replaces.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(temporary, "rb") as source, os.fdopen(fd, "wb") as target:
            shutil.copyfileobj(source, target)
            target.flush()
            os.fsync(target.fileno())
