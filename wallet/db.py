"""Engines and sessions: one engine per app (in `app.extensions`), one session per request.

How each database is set up (SQLite's WAL, busy timeout and `BEGIN IMMEDIATE`, so two
writers queue instead of failing half-way; PostgreSQL's pool at READ COMMITTED) lives
in the seam, `wallet.store._dialect`. Exactly-once changes are conditional updates and
unique constraints, which are correct on both.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, g
from sqlalchemy.engine import Engine
from sqlmodel import Session

from wallet.store._dialect import dialect_of, for_url

EXTENSION = "wallet.engine"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with this project's per-database settings (`store._dialect`)."""
    # Parameters are password hashes, token hashes and encrypted keys: never in a log line
    # or an error message, in any mode (rows logged at DEBUG: see `wallet.redaction`).
    kwargs["hide_parameters"] = True
    return for_url(url).create_engine(url, **kwargs)


def close_request_session(session: Session, *, failed: bool = False) -> None:
    """End a request's or command's session.

    A transaction still open here was left by a read (actions commit their writes): a
    COMMIT ends it as a ROLLBACK would, and is cheaper on PostgreSQL (psycopg keeps
    its prepared statements: `store._dialect._track_writes`). Anything that wrote, any
    ORM change, a failed request and every SQLite transaction (whose BEGIN IMMEDIATE
    counts as a write) are rolled back.
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
    return dialect_of(session).may_have_written(session.connection())


def init_app(app: Flask) -> None:
    """Attach the engine to the app and close the request session on teardown."""
    engine = make_engine(app.config["WALLET_DATABASE_URL"])
    app.extensions[EXTENSION] = engine

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        session = g.pop("wallet_session", None)
        if session is not None:
            close_request_session(session, failed=exc is not None)


def engine() -> Engine:
    """Return the current app's engine."""
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


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
