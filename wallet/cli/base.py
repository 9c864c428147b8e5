"""Shared CLI plumbing: the root group, the app/session per command, output helpers."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
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
    """Read a password or passphrase from a file, or standard input for '-' (first line,
    without the newline)."""
    if path == "-":
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise click.BadParameter("standard input held no passphrase line")
        return value
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
        question = prompt.split("?")[0].strip()
        raise click.UsageError(f"{question}: confirmation needed; pass --yes (stdin is not"
                               " a terminal)")
    if not click.confirm(prompt, default=False, err=True):
        raise click.ClickException("not confirmed; nothing changed")


yes_option = click.option("--yes", "-y", "yes", is_flag=True,
                          help="Do it without asking (needed when stdin is not a terminal).")


def reserve_new_file(path: str, option: str = "--out") -> str:
    """Refuse an existing `path`; create a private temporary file beside it and return it.

    Called before anything irreversible happens (a note is exported, a key generated), so
    an `--out` that exists, is a directory or cannot be written is refused while nothing
    has been done. `path` itself is only ever created by `publish_new_file`.
    """
    if os.path.isdir(path):
        raise click.BadParameter(f"{path} is a directory; give a file name",
                                 param_hint=option)
    if os.path.lexists(path):  # a dangling symlink too: it would be written through
        raise click.BadParameter(f"{path} exists; files written here are never overwritten"
                                 " (choose another name, or move it away first)",
                                 param_hint=option)
    folder, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as err:
        raise click.BadParameter(f"cannot write {path}: {err.strerror}",
                                 param_hint=option) from None
    return temporary


def publish_new_file(temporary: str, path: str, data: bytes) -> None:
    """Write `data` to the reserved file and give it its name, never replacing a file.

    The name appears only once the content is on disk (a crash leaves no half-written
    file under it), and a hard link, unlike a rename, fails if `path` appeared meanwhile.
    """
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except OSError as err:
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # No hard links on this file system: an exclusive create still never replaces.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    finally:
        discard_file(temporary)


def discard_file(temporary: str) -> None:
    """Remove a reserved temporary file (it may already be gone)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)


def is_tty() -> bool:
    """Tell whether stdout is a terminal (progress bars only then)."""
    return sys.stdout.isatty()


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
org_option = click.option("--org", "slug", required=True, metavar="SLUG", help="Organisation slug.")
