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


def test_an_instance_folder_made_by_another_worker_meanwhile_is_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two gunicorn workers on a fresh instance folder each see it missing, and one makes
    it first: the other's app starts too (it failed with FileExistsError, and gunicorn
    stopped with "Worker failed to boot"; found by bench/balancer.py)."""
    folder = tmp_path / "instance"
    folder.mkdir(mode=0o700)  # the other worker, between this one's check and its mkdir
    seen = Path.exists
    monkeypatch.setattr(Path, "exists",
                        lambda self, *a, **k: self != folder and seen(self, *a, **k))
    app = create_app(support.test_config(f"sqlite:///{tmp_path}/d.db", tmp_path))
    assert app.instance_path == str(folder)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    app.extensions["wallet.engine"].dispose()


# Real secrets as the operations guide says to make them (secrets.token_urlsafe(48)).
STRONG_SECRET = "mV3q_Zr8TfK0xWb-pL9sYc2HdJ7uNa4EoQiG6wRkXy1BtM5vFhSjD0lUzCeA8nPg"
STRONG_PASSPHRASE = "T7bQ-k2ZpW9xLr_4sNc8YvHm3JdFa6GuE0oRiK1tXwSy5BnMqVhCjDlUzPe"


def _production(tmp_path: Path, **overrides: str) -> Flask:
    return create_app({"WALLET_ENV": "production", "WALLET_SECRET_KEY": STRONG_SECRET,
                       "WALLET_KEY_PASSPHRASE": STRONG_PASSPHRASE,
                       "WALLET_BASE_URL": "https://credits.acme.example",
                       "WALLET_INSTANCE_PATH": str(tmp_path / "i"),
                       "WALLET_DATABASE_URL": f"sqlite:///{tmp_path}/d.db", **overrides})


@pytest.mark.parametrize(("secret", "passphrase", "message"), [
    ("", "", "WALLET_SECRET_KEY must be set in production"),
    ("dev", STRONG_PASSPHRASE, "looks like a development value"),
    ("change-me-" + STRONG_SECRET, STRONG_PASSPHRASE, "looks like a development value"),
    (STRONG_SECRET, "", "WALLET_KEY_PASSPHRASE must be set in production"),
    # Long enough and free of development words, but guessable: refused by the estimate.
    ("k" * 40, STRONG_PASSPHRASE, "WALLET_SECRET_KEY is too weak"),
    ("Qm9" * 15, STRONG_PASSPHRASE, "WALLET_SECRET_KEY is too weak"),
    (STRONG_SECRET, "Zk7" * 15, "WALLET_KEY_PASSPHRASE is too weak"),
    ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ", STRONG_PASSPHRASE, "is too weak"),
    ("0123456789" * 4, STRONG_PASSPHRASE, "is too weak"),
    # 128 random bits as hex (secrets.token_hex(16)): 32 characters of 16 kinds estimate
    # under 128 bits; hex needs 64 characters (token_hex(32)).
    ("2b4a24c3e5c747688d19dc7537b8dc7c", STRONG_PASSPHRASE, "is too weak"),
    (STRONG_SECRET[:31], STRONG_PASSPHRASE, "use 32\\+ random characters"),
])
def test_production_refuses_weak_or_development_secrets(
        tmp_path: Path, secret: str, passphrase: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _production(tmp_path, WALLET_SECRET_KEY=secret, WALLET_KEY_PASSPHRASE=passphrase)


@pytest.mark.parametrize("base_url", ["http://credits.acme.example", "HTTP://credits.acme.example",
                                      "credits.acme.example", "ftp://credits.acme.example"])
def test_production_refuses_a_base_url_that_is_not_https(tmp_path: Path, base_url: str) -> None:
    with pytest.raises(ConfigError, match="WALLET_BASE_URL must be an https:// URL"):
        _production(tmp_path, WALLET_BASE_URL=base_url)


def test_secret_strength_estimate_explains_itself() -> None:
    from wallet.config import estimated_bits

    assert estimated_bits("k" * 40) == 0
    assert estimated_bits("Qm9" * 15) < 80
    assert estimated_bits(STRONG_SECRET) > 200
    # A hex secret needs 64 characters (openssl rand -hex 32), a token_urlsafe 32 or more.
    assert estimated_bits("3f" * 16) < 128
    assert estimated_bits("f979c4e36ffce0cd0c557bb92f402a65"
                          "073d31d11dc2baddd1f08c6a99d7e019") >= 128


def test_production_starts_with_real_secrets(tmp_path: Path) -> None:
    app = _production(tmp_path)
    assert app.config["WALLET_FEDERATION_ALLOW_HTTP"] is False
    assert not (tmp_path / "i" / "secret_key").exists()
    app.extensions["wallet.engine"].dispose()


def test_new_sqlite_database_files_are_private(tmp_path: Path) -> None:
    """The database, its WAL and its shared-memory file: owner only, whatever the umask."""
    import sqlalchemy as sa

    from wallet.db import make_engine

    old = os.umask(0o022)
    try:
        engine = make_engine(f"sqlite:///{tmp_path}/new.sqlite3")
        with engine.begin() as connection:
            connection.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            connection.execute(sa.text("INSERT INTO t VALUES (1)"))
            files = sorted(tmp_path.glob("new.sqlite3*"))
            assert [f.name for f in files] == ["new.sqlite3", "new.sqlite3-shm",
                                               "new.sqlite3-wal"]
            for path in files:
                assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path.name
        engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_sqlite_database_keeps_its_mode(tmp_path: Path) -> None:
    from wallet.db import make_engine

    path = tmp_path / "shared.sqlite3"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    engine = make_engine(f"sqlite:///{path}")
    with engine.connect():
        pass
    engine.dispose()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
