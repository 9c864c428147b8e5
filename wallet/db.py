"""Engines and sessions: one engine per app (in `app.extensions`), one session per request.

SQLite gets WAL, a busy timeout, foreign keys and `BEGIN IMMEDIATE` for every
transaction, so two writers queue on the database lock instead of failing half-way
(and `SELECT … FOR UPDATE`, which SQLite ignores, is never relied upon). PostgreSQL
runs through psycopg 3 at READ COMMITTED; exactly-once changes are conditional updates
and unique constraints, which are correct at that level on both databases.
"""

from __future__ import annotations

import os
import time
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 10.0


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with this project's per-database settings."""
    # Parameters are password hashes, token hashes and encrypted keys: never in a log line
    # or an error message, in any mode (rows logged at DEBUG: see `wallet.redaction`).
    kwargs["hide_parameters"] = True
    if url.startswith("sqlite"):
        _create_private(sa.engine.make_url(url).database)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    engine = sa.create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _create_private(database: str | None) -> None:
    """Create a new SQLite database file 0600 before SQLite does (it would honour the umask).

    SQLite gives the `-wal` and `-shm` files the mode of the database file, so they are
    private too. An existing file keeps its mode; a missing folder is left for the
    first connection to report.
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError, NotADirectoryError):
        return
    os.fchmod(fd, 0o600)  # the umask may have taken bits away, never added any
    os.close(fd)


def _ping_when_idle(engine: Engine, idle: float = PING_AFTER_IDLE_SECONDS) -> None:
    """Test a pooled connection before use only if it sat idle for `idle` seconds.

    `pool_pre_ping` pings on every checkout, and a request checks a connection out
    again after each commit: on the honour path that was seven extra round trips. A
    connection handed back moments ago is alive unless the server went away in
    between; then the statement fails, SQLAlchemy invalidates the pool, and the error
    handler answers 503. A connection that idled (where servers and proxies drop
    them) is pinged, and replaced when the ping fails (the pool retries the checkout).
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["wallet.idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("wallet.idle_since")
        if since is None or time.monotonic() - since < idle:
            return  # a new connection, or one in use moments ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:
            raise sa.exc.DisconnectionError("the pooled connection is gone")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # Take the write lock at BEGIN: a transaction that reads then writes can then
        # never fail half-way with SQLITE_BUSY; concurrent writers wait their turn.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def init_app(app: Flask) -> None:
    """Attach the engine to the app and close the request session on teardown."""
    engine = make_engine(app.config["WALLET_DATABASE_URL"])
    app.extensions["wallet.engine"] = engine

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("wallet_session", None)
        if session is not None:
            session.close()


def engine() -> Engine:
    """Return the current app's engine."""
    return current_app.extensions["wallet.engine"]  # type: ignore[no-any-return]


def session() -> Session:
    """Return the session of the current request or command, opening it on first use."""
    current = g.get("wallet_session")
    if current is None:
        current = Session(engine(), expire_on_commit=False)
        g.wallet_session = current
    return current




def ping() -> None:
    """Run a trivial query (for /healthz); raises when the database is unreachable."""
    with engine().connect() as connection:
        connection.execute(sa.text("SELECT 1"))
