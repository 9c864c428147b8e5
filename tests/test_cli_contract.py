"""The CLI's error contract where the environment, not a command, is wrong: one line on
stderr ending in its code, exit 2, never a traceback or an "internal error"."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests import support
from tests.support import run_cli
from wallet import create_app
from wallet.core import jose, pkcs8

PG_ENV = "WALLET_TEST_POSTGRES_URL"


def _one_line(err: str) -> str:
    assert err.count("\n") == 1 and err.startswith("wallet: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    monkeypatch.setenv("WALLET_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.delenv("WALLET_DATABASE_URL", raising=False)
    return monkeypatch


@pytest.mark.parametrize(("url", "says"), [
    ("not a url", "not a database URL"),
    ("mysql://root@localhost/wallet", "unsupported database 'mysql'"),
])
def test_a_database_url_we_cannot_use_is_exit_2_with_what_to_write(
        env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str,
        says: str) -> None:
    env.setenv("WALLET_DATABASE_URL", url)
    r = run_cli(None, capsys, "balance", "--org", "acme", "--email", "ada@example.test")
    assert r.exit_code == 2
    assert says in _one_line(r.err) and r.err.rstrip().endswith("[config_invalid]")
    assert "root@localhost" not in r.err  # a URL may hold a password: never echoed


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    if not os.environ.get(PG_ENV):
        pytest.skip(f"{PG_ENV} is unset (.ci/run sets it)")
    admin_url = sa.engine.make_url(support.normalise(os.environ[PG_ENV]))
    name = f"wallet_empty_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_database_that_is_not_migrated_says_run_wallet_db_upgrade(
        env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        backend: str, request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 'empty.db'}" if backend == "sqlite"
           else request.getfixturevalue("empty_postgres"))
    env.setenv("WALLET_DATABASE_URL", url)
    app = create_app()  # as the CLI makes it from the environment; disposed of here
    try:
        r = run_cli(app, capsys, "balance", "--org", "acme", "--email", "ada@example.test")
    finally:
        app.extensions["wallet.engine"].dispose()
    assert r.exit_code == 2 and "wallet db upgrade" in _one_line(r.err)


def test_no_terminal_to_ask_a_passphrase_on_is_exit_2_not_an_abort(
        env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    env.setattr(sys, "stdin", io.StringIO(""))  # end of input: a pipe, or /dev/null
    out = tmp_path / "holder.key"
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out))
    assert r.exit_code == 2 and "--passphrase-file" in _one_line(r.err)
    assert not out.exists() and not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_the_real_process_without_a_terminal_prints_no_warning_noise(tmp_path: Path) -> None:
    # What a user sees: getpass's GetPassWarning and "Password input may be echoed" came
    # before the refusal when stdin was not a terminal.
    done = subprocess.run(
        [sys.executable, "-m", "wallet", "keys", "holder-new", "--out",
         str(tmp_path / "k.key")], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env={**os.environ, "WALLET_INSTANCE_PATH": str(tmp_path / "i")}, timeout=60,
        check=False)
    assert done.returncode == 2 and done.stdout == ""
    assert "Warning" not in done.stderr and "--passphrase-file" in _one_line(done.stderr)


@pytest.mark.parametrize("args", [
    ["note", "verify"],  # a missing argument
    ["fund", "--org"],  # an option without its value
    ["no-such-command"],
    ["note", "verify", "x", "--org", "acme", "--jwks", "y"],  # a UsageError of ours
])
def test_click_usage_errors_carry_the_usage_code(
        env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    r = run_cli(None, capsys, *args)
    assert r.exit_code == 2 and _one_line(r.err).rstrip().endswith("[usage]"), r.err


@pytest.mark.parametrize("source", ["stdin", "environment"])
def test_a_passphrase_from_standard_input_or_the_environment(
        env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        source: str) -> None:
    out = tmp_path / "holder.key"
    if source == "stdin":
        env.setattr(sys, "stdin", io.StringIO("correct horse battery staple\n"))
        args = ["--passphrase-file", "-"]
    else:
        env.setattr(sys, "stdin", io.StringIO(""))
        env.setenv("WALLET_HOLDER_PASSPHRASE", "correct horse battery staple")
        args = []
    r = run_cli(None, capsys, "keys", "holder-new", "--out", str(out), *args)
    assert r.exit_code == 0, r.err
    key = pkcs8.decrypt(out.read_bytes(), "correct horse battery staple")
    assert jose.public_jwk(key)["kty"] == "OKP"
    assert "correct horse" not in r.out + r.err
    env.setattr(sys, "stdin", io.StringIO(""))  # '-' with nothing on it
    env.delenv("WALLET_HOLDER_PASSPHRASE", raising=False)
    empty = run_cli(None, capsys, "keys", "holder-new", "--out", str(tmp_path / "b.key"),
                    "--passphrase-file", "-")
    assert empty.exit_code == 2 and "no passphrase line" in _one_line(empty.err)
