"""A lost database connection (a restart, a failover): a clear 503, then recovery.

The pool tests a connection before use only when it sat idle (on the app's clock:
`wallet.store._dialect._ping_when_idle`): a connection used moments ago is trusted, so a
restart in between costs the requests in flight a 503 `database_unavailable` (never a
500), and the next request gets a fresh connection. PostgreSQL only: SQLite has no
server to lose.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Flask

from tests import fed_support
from tests.support import World
from wallet import clock
from wallet.store._dialect import PING_AFTER_IDLE_SECONDS

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)


def _terminate_other_sessions(db_url: str) -> int:
    """What a server restart does to the app's pooled connections."""
    admin = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as c:
            killed = c.execute(sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
            return int(killed)
    finally:
        admin.dispose()


def test_lost_connection_is_a_503_and_the_next_request_recovers(
        app: Flask, world: World, db_url: str) -> None:
    client = app.test_client()
    token = fed_support.api_token(app, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/orgs/acme/me", headers=headers).status_code == 200
    assert _terminate_other_sessions(db_url) >= 1

    lost = client.get("/api/v1/orgs/acme/me", headers=headers)
    assert lost.status_code == 503
    assert lost.mimetype == "application/problem+json"
    assert lost.get_json()["code"] == "database_unavailable"
    assert lost.headers["Retry-After"] == "1"

    again = client.get("/api/v1/orgs/acme/me", headers=headers)
    assert again.status_code == 200, again.get_data(as_text=True)


def test_a_connection_idle_past_the_threshold_is_pinged_and_replaced(
        app: Flask, world: World, db_url: str) -> None:
    fake = clock.install(app, clock.FakeClock())  # idle time runs on the app's clock
    client = app.test_client()
    token = fed_support.api_token(app, "acme")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/orgs/acme/me", headers=headers).status_code == 200
    assert _terminate_other_sessions(db_url) >= 1

    fake.advance(PING_AFTER_IDLE_SECONDS + 1)
    answer = client.get("/api/v1/orgs/acme/me", headers=headers)
    assert answer.status_code == 200, answer.get_data(as_text=True)
