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
    _track_writes(engine)
    return engine


_WROTE = "wallet.wrote"


def _track_writes(engine: Engine) -> None:
    """Note on the connection whether its transaction ran anything but a SELECT.

    psycopg answers every ROLLBACK by deallocating the connection's prepared statements
    (a rolled-back transaction may have undone a PREPARE), so a request that only read
    and then rolled back made the next requests on that connection plan every statement
    again: the authenticated nonce request did that once per honour (PostgreSQL CPU per
    honour 2.7 ms → 4.4 ms). The request teardown ends a transaction that only read with
    a COMMIT instead, which keeps them (`close_request_session`).
    """

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.info[_WROTE] = False

    @event.listens_for(engine, "before_cursor_execute")
    def _on_execute(conn: sa.Connection, _cursor: Any, statement: str, _params: Any,
                    _context: Any, _many: bool) -> None:
        if conn.info.get(_WROTE) is False and statement.lstrip()[:6].upper() != "SELECT":
            conn.info[_WROTE] = True

    @event.listens_for(engine, "commit")
    @event.listens_for(engine, "rollback")
    def _on_end(conn: sa.Connection) -> None:
        if not conn.invalidated:  # a lost connection has no info left to clear
            conn.info.pop(_WROTE, None)


def close_request_session(session: Session, *, failed: bool = False) -> None:
    """End a request's or command's session.

    A transaction still open here was left by a read (actions commit their writes): a
    COMMIT ends it as a ROLLBACK would, and is cheaper on PostgreSQL (see
    `_track_writes`). Anything that wrote, any ORM change, a failed request and every
    SQLite transaction (whose BEGIN IMMEDIATE counts as a write) are rolled back.
    """
    try:
        if not failed and session.in_transaction() and not _wrote(session):
            session.commit()
    except sa.exc.SQLAlchemyError:
        pass  # the connection is gone or the transaction broken: close() rolls back
    finally:
        session.close()


def _wrote(session: Session) -> bool:
    """Whether the open transaction may have changed anything (unknown counts as yes)."""
    if session.new or session.dirty or session.deleted:
        return True
    return session.connection().info.get(_WROTE, True) is not False


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
    def _close_session(exc: BaseException | None) -> None:
        session = g.pop("wallet_session", None)
        if session is not None:
            close_request_session(session, failed=exc is not None)


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
