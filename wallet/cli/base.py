"""Shared CLI plumbing: the root group, the app/session per command, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, TypeVar

import click
from flask import Flask
from sqlmodel import Session

F = TypeVar("F", bound=Callable[..., Any])


class State:
    """Per-invocation state: the app is built on first use only (keys/notes work offline)."""

    def __init__(self, app: Flask | None = None) -> None:
        self._app = app

    @property
    def app(self) -> Flask:
        if self._app is None:
            from wallet import create_app

            self._app = create_app()
        return self._app


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="compute-credit-wallet", prog_name="wallet")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Portable compute credits: organisations, ledgers, keys and credit notes.

    Configuration comes from WALLET_* environment variables (see docs/operations.md);
    with none set, an SQLite database and generated secrets live in instance/.
    """
    ctx.ensure_object(State)


def with_session(f: F) -> F:
    """Run the command inside the app context with the command's database session."""

    @click.pass_context
    @wraps(f)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        from wallet import db

        app = ctx.find_object(State).app  # type: ignore[union-attr]
        with app.app_context():
            return f(db.session(), *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def with_app(f: F) -> F:
    """Run the command inside the app context, passing the app."""

    @click.pass_context
    @wraps(f)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        app = ctx.find_object(State).app  # type: ignore[union-attr]
        with app.app_context():
            return f(app, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def app_session(ctx: click.Context) -> Iterator[Session]:
    """The app context and database session, for a command that needs them only sometimes."""
    from wallet import db

    app = ctx.find_object(State).app  # type: ignore[union-attr]
    with app.app_context():
        yield db.session()


def fail_line(message: str) -> None:
    """Print one error line on stderr."""
    click.echo(f"wallet: error: {message}", err=True)


def emit_json(data: Any) -> None:
    """Print JSON for scripts."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def info(message: str) -> None:
    """Print a line for people."""
    click.echo(message)


def warn(message: str) -> None:
    """Print a warning on stderr."""
    click.echo(f"wallet: warning: {message}", err=True)


def read_secret_file(path: str) -> str:
    """Read a password or passphrase from a file (first line, without the newline)."""
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.readline().rstrip("\r\n")
    except OSError as err:
        raise click.BadParameter(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise click.BadParameter(f"{path} is not UTF-8 text") from None
    if not value:
        raise click.BadParameter(f"{path} is empty")
    return value


def confirm(prompt: str, yes: bool) -> None:
    """Ask before a destructive step; refuse (exit 2) when nobody can answer and no --yes.

    A script (stdin not a terminal) must say --yes explicitly: a destructive command that
    proceeds because nobody was there to say no is how money is lost.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(f"{prompt.rstrip('?').rstrip()}: confirmation needed;"
                               " pass --yes (stdin is not a terminal)")
    if not click.confirm(prompt, default=False, err=True):
        raise click.ClickException("not confirmed; nothing changed")


yes_option = click.option("--yes", "-y", "yes", is_flag=True,
                          help="Do it without asking (needed when stdin is not a terminal).")


def is_tty() -> bool:
    """Tell whether stdout is a terminal (progress bars only then)."""
    return sys.stdout.isatty()


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
org_option = click.option("--org", "slug", required=True, metavar="SLUG", help="Organisation slug.")
