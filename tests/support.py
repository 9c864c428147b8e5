"""Helpers shared by the tests: apps, databases, sign-in, the CLI, the ledger check."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

PASSWORD = "correct horse battery"
BASE_URL = "http://wallet.test"


def normalise(url: str) -> str:
    from wallet.config import normalise_database_url

    return normalise_database_url(url)


def migrate(url: str) -> None:
    """Apply the migrations to an empty database."""
    from wallet import migrations
    from wallet.db import make_engine

    engine = make_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


def test_config(db_url: str, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Settings for a test app: its own database, instance folder and keystore."""
    config: dict[str, Any] = {
        "WALLET_DATABASE_URL": db_url,
        "WALLET_INSTANCE_PATH": str(tmp_path / "instance"),
        "WALLET_KEYSTORE": str(tmp_path / "keys"),
        "WALLET_BASE_URL": BASE_URL,
        "WALLET_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "WALLET_KEY_PASSPHRASE": "test-key-passphrase",
        # Cheap hashing keeps the suite fast; production uses argon2id at RFC 9106 cost.
        "WALLET_ARGON2_TIME_COST": 1,
        "WALLET_ARGON2_MEMORY_KIB": 1024,
    }
    config.update(overrides)
    return config


def assert_ledger_sound(app: Flask) -> None:
    """Fail the test if any organisation breaks a ledger invariant (docs/ledger.md,
    "Invariants")."""
    from wallet import db
    from wallet.actions import ledger as ledger_actions

    with app.app_context():
        report = ledger_actions.check(db.session())
    broken = {slug: problems for slug, problems in report.items() if problems}
    if broken:
        pytest.fail(f"ledger invariants broken: {broken}")


@dataclass
class World:
    """Two organisations and their people (see `build_world`)."""

    app: Flask
    acme_admin: str = "admin@acme.test"
    globex_admin: str = "admin@globex.test"
    ada: str = "ada@example.test"
    bob: str = "bob@acme.test"
    password: str = PASSWORD


def build_world(app: Flask, *, fund: str = "250000.00") -> World:
    """acme (funded) and globex; ada at both, bob an engineer at acme."""
    from wallet import db
    from wallet.actions import ledger as ledger_actions
    from wallet.actions import orgs
    from wallet.actions._base import Actor

    cli = Actor.cli()
    with app.app_context():
        s = db.session()
        orgs.create_org(s, slug="acme", name="Acme AI", admin_email="admin@acme.test",
                        actor=cli, admin_password=PASSWORD)
        orgs.create_org(s, slug="globex", name="Globex", admin_email="admin@globex.test",
                        actor=cli, admin_password=PASSWORD)
        for slug in ("acme", "globex"):
            orgs.add_person(s, slug=slug, email="ada@example.test", password=PASSWORD, actor=cli)
        orgs.add_person(s, slug="acme", email="bob@acme.test", password=PASSWORD, actor=cli)
        ledger_actions.fund(s, slug="acme", amount=fund, idempotency_key="world", actor=cli)
    return World(app)


_CSRF = re.compile(
    r'name="csrf_token" type="hidden" value="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """Fetch a page and return its CSRF token."""
    html = client.get(path).get_data(as_text=True)
    match = _CSRF.search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1) or match.group(2)


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> None:
    """Sign in through the real form."""
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"email": email, "password": password,
                                           "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]


def post_form(client: FlaskClient, path: str, data: dict[str, Any],
              page: str | None = None, **kwargs: Any) -> Any:
    """POST a form with the CSRF token from `page` (default: the same path)."""
    data = {**data, "csrf_token": csrf_token(client, page or path)}
    return client.post(path, data=data, **kwargs)


@dataclass
class CliResult:
    exit_code: int
    out: str
    err: str


def run_cli(app: Flask | None, capsys: pytest.CaptureFixture[str], *args: str) -> CliResult:
    """Run `wallet ARGS` in-process against `app`, returning exit code and output."""
    from wallet.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(list(args), app=app)
    captured = capsys.readouterr()
    code = exited.value.code
    return CliResult(code if isinstance(code, int) else 1, captured.out, captured.err)
