"""How a request's transaction ends: actions commit their writes; the teardown rolls back
whatever else wrote, and ends a transaction that only read with a COMMIT.

Regression: on PostgreSQL psycopg deallocates every prepared statement of a connection at
each ROLLBACK. The engineer's nonce request (a token read, then nothing to commit) was
rolled back by the teardown before every honour, so the honour's statements were planned
afresh each time: PostgreSQL's CPU per honour went from 2.7 to 4.4 ms in bench/honour.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from wallet import db
from wallet.models import AuditEvent
from wallet.store import people


@pytest.fixture
def events(app: Flask) -> Iterator[list[str]]:
    """The COMMITs and ROLLBACKs of the app's engine, in order."""
    seen: list[str] = []
    with app.app_context():
        engine = db.engine()

    def on_commit(_conn: sa.Connection) -> None:
        seen.append("commit")

    def on_rollback(conn: sa.Connection) -> None:
        # An autocommit connection has no transaction: its "rollback" sends nothing.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            seen.append("rollback")

    sa.event.listen(engine, "commit", on_commit)
    sa.event.listen(engine, "rollback", on_rollback)
    yield seen
    sa.event.remove(engine, "commit", on_commit)
    sa.event.remove(engine, "rollback", on_rollback)


def test_a_honour_and_the_nonce_before_it_roll_nothing_back_on_postgresql(
        app: Flask, client: FlaskClient, backend: str, events: list[str]) -> None:
    fed = fs.setup_federation(app)
    token = fs.api_token(app, "globex")
    notes = [fs.export(app, fed.holder, "1.00") for _ in range(3)]
    events.clear()
    for note in notes:
        nonce = fs.nonce(client, "globex", token)
        answer = fs.honour(client, "globex", token,
                           [fs.present(note.token, fed.holder, "globex", nonce)])
        assert answer.status_code == 200, answer.get_data(as_text=True)
    assert events.count("commit") >= 3
    # SQLite keeps no prepared statements, and its BEGIN IMMEDIATE counts as a write.
    assert ("rollback" in events) is (backend == "sqlite")


def _app_with_routes(app: Flask) -> Flask:
    """Two extra routes: one that only reads, one that writes and never commits."""

    @app.get("/_test/read")
    def read() -> str:
        return str(len(people.orgs(db.session())))

    @app.get("/_test/write-without-commit")
    def write() -> str:
        people.audit(db.session(), org_id=None, actor="test", action="left.uncommitted")
        return "written"

    return app


def test_the_teardown_rolls_back_a_write_no_action_committed(
        app: Flask, events: list[str]) -> None:
    client = _app_with_routes(app).test_client()
    assert client.get("/_test/write-without-commit").status_code == 200
    assert events[-1:] == ["rollback"]
    with app.app_context():
        count = db.session().execute(sa.select(sa.func.count()).select_from(AuditEvent)
                                     .where(AuditEvent.action == "left.uncommitted"))
        assert count.scalar_one() == 0


def test_the_teardown_ends_a_read_with_a_commit_on_postgresql(
        app: Flask, backend: str, events: list[str]) -> None:
    client = _app_with_routes(app).test_client()
    assert client.get("/_test/read").status_code == 200
    # SQLite begins every transaction with BEGIN IMMEDIATE, a write: it is rolled back.
    assert events[-1:] == (["commit"] if backend == "postgresql" else ["rollback"])
