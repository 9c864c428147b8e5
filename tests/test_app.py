"""The factory, configuration, schema and response headers."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from wallet import create_app
from wallet.config import ConfigError
from wallet.models import metadata


def test_migrations_match_the_models(app: Flask) -> None:
    engine = app.extensions["wallet.engine"]
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_immediate_transactions(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from wallet.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path}/w.db")
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute",
                    lambda *args: statements.append(args[2]))
    try:
        with engine.begin() as connection:
            assert connection.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(sa.text("PRAGMA busy_timeout")).scalar() == 30000
            assert connection.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    finally:
        engine.dispose()
    assert statements[0] == "BEGIN IMMEDIATE"


def test_healthz(client: FlaskClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.get_json() == {"status": "ok", "database": "ok"}


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    app = create_app(support.test_config(f"sqlite:///{tmp_path}/missing/dir/x.db", tmp_path))
    r = app.test_client().get("/healthz")
    assert r.status_code == 503 and r.get_json()["database"] == "unreachable"
    app.extensions["wallet.engine"].dispose()


def test_security_headers_on_pages_and_api(client: FlaskClient) -> None:
    for path in ("/login", "/api/v1/orgs/x/me"):
        r = client.get(path)
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["X-Frame-Options"] == "DENY"


def test_unknown_api_route_is_problem_json(client: FlaskClient) -> None:
    r = client.get("/api/v1/nothing-here")
    assert r.status_code == 404 and r.mimetype == "application/problem+json"
    assert r.get_json()["code"] == "not_found"


def test_secrets_are_generated_once_into_the_instance(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WALLET_SECRET_KEY", "WALLET_KEY_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    config: dict[str, Any] = {"WALLET_ENV": "development",
                              "WALLET_INSTANCE_PATH": str(tmp_path / "i"),
                              "WALLET_DATABASE_URL": f"sqlite:///{tmp_path}/d.db"}
    a = create_app(config)
    b = create_app(config)
    assert a.config["SECRET_KEY"] == b.config["SECRET_KEY"] and len(a.config["SECRET_KEY"]) > 40
    secret = tmp_path / "i" / "secret_key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "i").st_mode) == 0o700
    for app in (a, b):
        app.extensions["wallet.engine"].dispose()


@pytest.mark.parametrize(("secret", "passphrase", "message"), [
    ("", "", "WALLET_SECRET_KEY must be set in production"),
    ("dev", "x" * 40, "looks like a development value"),
    ("change-me-" + "a" * 40, "y" * 40, "looks like a development value"),
    ("k" * 40, "", "WALLET_KEY_PASSPHRASE must be set in production"),
])
def test_production_refuses_development_secrets(tmp_path: Path, secret: str, passphrase: str,
                                                message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_app({"WALLET_ENV": "production", "WALLET_SECRET_KEY": secret,
                    "WALLET_KEY_PASSPHRASE": passphrase,
                    "WALLET_INSTANCE_PATH": str(tmp_path / "i"),
                    "WALLET_DATABASE_URL": f"sqlite:///{tmp_path}/d.db"})


def test_production_starts_with_real_secrets(tmp_path: Path) -> None:
    app = create_app({"WALLET_ENV": "production", "WALLET_SECRET_KEY": "Qm9" * 15,
                      "WALLET_KEY_PASSPHRASE": "Zk7" * 15,
                      "WALLET_INSTANCE_PATH": str(tmp_path / "i"),
                      "WALLET_DATABASE_URL": f"sqlite:///{tmp_path}/d.db"})
    assert app.config["WALLET_FEDERATION_ALLOW_HTTP"] is False
    assert not (tmp_path / "i" / "secret_key").exists()
    app.extensions["wallet.engine"].dispose()
