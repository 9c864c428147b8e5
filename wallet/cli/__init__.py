"""The `wallet` command line: thin commands over `wallet.actions`.

Exit codes: 0 success, 1 a verification (or ledger check) failed, 2 bad usage or input
(docs/protocol.md §8 "Error codes").
Every failure is one line on stderr; tracebacks only with WALLET_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

import click
from flask import Flask
from sqlalchemy.exc import OperationalError, ProgrammingError

from wallet.cli.base import State, cli, fail_line
from wallet.core.errors import VerificationError, WalletError

# Importing the command modules registers their commands on `cli`.
from wallet.cli import admin as _admin  # noqa: F401  isort: skip
from wallet.cli import federation as _federation  # noqa: F401  isort: skip
from wallet.cli import keys as _keys  # noqa: F401  isort: skip
from wallet.cli import notes as _notes  # noqa: F401  isort: skip
from wallet.cli import grants as _grants  # noqa: F401  isort: skip
from wallet.cli import holds as _holds  # noqa: F401  isort: skip
from wallet.cli import worker as _worker  # noqa: F401  isort: skip
from wallet.cli import exports as _exports  # noqa: F401  isort: skip
from wallet.cli import reports as _reports  # noqa: F401  isort: skip
from wallet.cli import statements as _statements  # noqa: F401  isort: skip
from wallet.cli import lists as _lists  # noqa: F401  isort: skip

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a missing table


def main(argv: Sequence[str] | None = None, *, app: Flask | None = None) -> NoReturn:
    """Run the CLI and exit with the contract's exit codes (`app`: reuse one, for tests)."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="wallet",
                          standalone_mode=False, obj=State(app))
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx else "wallet"
        fail_line(f"{err.format_message()} (see '{where} --help') [usage]")
        sys.exit(EXIT_USAGE)
    except click.ClickException as err:
        fail_line(f"{err.format_message()} [usage]")
        sys.exit(EXIT_USAGE)
    except (click.Abort, KeyboardInterrupt):
        fail_line("aborted")
        sys.exit(130)
    except WalletError as err:
        fail_line(f"{err.message} [{err.code}]")
        sys.exit(EXIT_FAILED if isinstance(err, VerificationError) else EXIT_USAGE)
    except OperationalError as err:
        fail_line(f"database unreachable or not migrated: {str(err.orig).splitlines()[0]}"
                  " (run 'wallet db upgrade'; check WALLET_DATABASE_URL)")
        sys.exit(EXIT_USAGE)
    except ProgrammingError as err:
        if getattr(err.orig, "sqlstate", None) != UNDEFINED_TABLE:
            _internal(err)
        fail_line("the database is not migrated: a table is missing (run 'wallet db upgrade';"
                  " check WALLET_DATABASE_URL)")
        sys.exit(EXIT_USAGE)
    except Exception as err:
        _internal(err)
    sys.exit(result if isinstance(result, int) else EXIT_OK)


def _internal(err: Exception) -> NoReturn:
    """A bug: one line (the traceback with WALLET_DEBUG set), exit 1."""
    if os.environ.get("WALLET_DEBUG"):
        traceback.print_exc()
    first = (str(err).splitlines() or [""])[0]
    fail_line(f"internal error: {type(err).__name__}: {first}"[:300])
    sys.exit(EXIT_FAILED)
