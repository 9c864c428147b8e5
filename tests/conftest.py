"""Fixtures: every database test runs on SQLite and on PostgreSQL, each with its own
freshly migrated database; every test that builds an app ends with the ledger
invariants (docs/ledger.md, "Invariants") checked.

PostgreSQL runs when WALLET_TEST_POSTGRES_URL is set (`.ci/run` sets it). In CI
(CI=true) a missing or unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import make_url

from tests import support

PG_ENV = "WALLET_TEST_POSTGRES_URL"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")


def pytest_report_header(config: pytest.Config) -> list[str]:
    pg = os.environ.get(PG_ENV)
    return [f"database backends: sqlite{', postgresql (' + _redact(pg) + ')' if pg else ''}"
            + ("" if pg else f" — set {PG_ENV} to also run every database test on PostgreSQL")]


def _redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    if IN_CI and not os.environ.get(PG_ENV):
        raise pytest.UsageError(f"CI=true but {PG_ENV} is not set: PostgreSQL tests must run in CI")


# -- database templates (migrated once per run), cloned per test --------------------------


class _Templates:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sqlite_file: Path | None = None
        self.pg_admin: sa.Engine | None = None
        self.pg_template: str | None = None

    def sqlite(self) -> Path:
        if self.sqlite_file is None:
            path = self.root / "template.sqlite3"
            support.migrate(f"sqlite:///{path}")
            self.sqlite_file = path
        return self.sqlite_file

    def postgres(self) -> tuple[sa.Engine, str]:
        if self.pg_admin is None:
            url = os.environ[PG_ENV]
            admin = sa.create_engine(support.normalise(url), isolation_level="AUTOCOMMIT",
                                     poolclass=sa.pool.NullPool)
            try:
                with admin.connect() as c:
                    c.execute(sa.text("SELECT 1"))
            except sa.exc.OperationalError as err:
                # Configured but unreachable is a failure, never a skip.
                pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {err.orig}")
            name = f"wallet_tpl_{uuid.uuid4().hex[:10]}"
            with admin.connect() as c:
                c.execute(sa.text(f'CREATE DATABASE "{name}"'))
            support.migrate(str(make_url(support.normalise(url)).set(database=name)
                                .render_as_string(hide_password=False)))
            self.pg_admin, self.pg_template = admin, name
        assert self.pg_template is not None
        return self.pg_admin, self.pg_template

    @contextmanager
    def database(self, backend: str, directory: Path, name: str = "wallet") -> Iterator[str]:
        """A fresh, migrated database: a copy of the SQLite template, or a PostgreSQL clone."""
        if backend == "sqlite":
            path = directory / f"{name}.sqlite3"
            shutil.copyfile(self.sqlite(), path)
            yield f"sqlite:///{path}"
            return
        admin, template = self.postgres()
        db_name = f"wallet_t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{db_name}" TEMPLATE "{template}"'))
        url = make_url(support.normalise(os.environ[PG_ENV])).set(database=db_name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))

    def close(self) -> None:
        if self.pg_admin is not None:
            with self.pg_admin.connect() as c:
                c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.pg_template}" WITH (FORCE)'))
            self.pg_admin.dispose()


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Templates]:
    templates = _Templates(tmp_path_factory.mktemp("db-templates"))
    yield templates
    templates.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test run ("sqlite" or "postgresql")."""
    return str(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without WALLET_TEST_POSTGRES_URL, leave out the PostgreSQL runs and say so once."""
    if os.environ.get(PG_ENV):
        return
    keep, dropped = [], []
    for item in items:
        spec = getattr(item, "callspec", None)
        (dropped if spec and spec.params.get("backend") == "postgresql" else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
        config.stash[_PG_DROPPED] = len(dropped)


_PG_DROPPED = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    dropped = config.stash.get(_PG_DROPPED, 0)
    if dropped:
        terminalreporter.write_line(
            f"PostgreSQL: {dropped} database tests not run ({PG_ENV} is unset; .ci/run sets it)",
            yellow=True)


@pytest.fixture
def db_url(backend: str, _templates: _Templates, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    with _templates.database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    """Settings for a test app (override in a test module to change them)."""
    return support.test_config(db_url, tmp_path)


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    """A Flask app on this test's own database; the ledger is checked when the test ends."""
    from wallet import create_app

    application = create_app(app_config)
    yield application
    try:
        support.assert_ledger_sound(application)
    finally:
        application.extensions["wallet.engine"].dispose()
        http = application.extensions.get("wallet.http_transport")
        if http is not None:
            http.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of `app`."""
    return app.test_client()


@pytest.fixture
def world(app: Flask) -> support.World:
    """Two organisations (acme, globex), their admins and an engineer, acme funded."""
    return support.build_world(app)
