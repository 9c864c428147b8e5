"""No secret in a log line, and none outside the one answer that shows it (issue 11, "Secrets").

The demo journey runs in the app with every logger at DEBUG (SQLAlchemy's statements,
parameters and rows included): sign-ins, an invitation accepted, a reset link used, a
password changed, API tokens made on the page and with the CLI, funding, a grant, a note
exported to a new wallet file under a passphrase, that wallet brought to the other
organisation, API calls, key rotation on the page and with the CLI, a holder key made
with the CLI. Afterwards every secret is
collected (private keys as PEM and as the JWK `d`, encrypted PEMs, passphrases,
passwords and their hashes, API tokens and their hashes, invitation tokens, session
cookies, CSRF tokens, the instance secrets) and looked for in every log line, page and
API answer. A private value may appear only in the one answer that hands it over (the
token on the token page, the invitation link shown to the admin, the wallet file).

The HTTP part runs a real `wallet serve --access-log` (gunicorn) and the development
server (werkzeug), and looks for secret path segments (`/invite/…`, `/reset/…`), query
values and referers in their request logs.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Flask
from flask.testing import FlaskClient

from tests import support
from tests.support import run_cli

DEMO = "demo-password"
ADA = "ada@example.test"
NEWHIRE = "newhire@acme.test"
NEWHIRE_PASSWORD = "newhire chose this password"
RESET_PASSWORD = "the password set from a reset link"
CHANGED_PASSWORD = "the password after a change"
WALLET_PASSPHRASE = "ada's wallet passphrase"
HOLDER_PASSPHRASE = "holder key passphrase"


@pytest.fixture
def app_config(db_url: str, tmp_path: Path) -> dict[str, Any]:
    # Keys in the database: their encrypted PEMs then travel as SQL parameters.
    return support.test_config(db_url, tmp_path, WALLET_KEY_STORAGE="db")


# -- what was logged, what was answered ------------------------------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


_LOGGERS = ("sqlalchemy", "sqlalchemy.engine", "sqlalchemy.engine.Engine", "sqlalchemy.pool",
            "sqlalchemy.orm", "werkzeug", "urllib3", "flask_wtf", "wallet", "wallet.web",
            "wallet.federation", "wallet.notes", "alembic", "psycopg", "gunicorn",
            "gunicorn.error", "gunicorn.access", "argon2")


@pytest.fixture
def debug_logs() -> Iterator[_Keep]:
    """Every logger at DEBUG, all of it kept (a handler on the root and on any logger that
    does not pass its records up)."""
    keep = _Keep()
    root = logging.getLogger()
    names = {"", *_LOGGERS, *logging.root.manager.loggerDict}
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.disabled)
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if name and not logger.propagate:
            logger.addHandler(keep)
    root.addHandler(keep)
    yield keep
    root.removeHandler(keep)
    for name, (level, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.disabled = disabled
        logger.removeHandler(keep)


@dataclass
class Answers:
    """Every page and API answer of the journey, by label."""

    seen: list[tuple[str, str]] = field(default_factory=list)

    def keep(self, label: str, response: Any) -> str:
        body = response.get_data(as_text=True)
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items()
                            if k.lower() != "set-cookie")  # the session cookie, by design
        self.seen.append((label, headers + "\n\n" + body))
        return body


@dataclass
class Secrets:
    """Secret values by name, and the answers allowed to show each (none: never shown)."""

    values: dict[str, str] = field(default_factory=dict)
    shown_in: dict[str, set[str]] = field(default_factory=dict)
    log_only: set[str] = field(default_factory=set)  # in pages by design (CSRF), never logged

    def add(self, name: str, value: str | None, *, shown_in: tuple[str, ...] = (),
            log_only: bool = False) -> None:
        assert value, f"secret {name} is empty: the journey did not make it"
        assert name not in self.values, name
        self.values[name] = value
        self.shown_in[name] = set(shown_in)
        if log_only:
            self.log_only.add(name)

    def in_logs(self, lines: list[str]) -> list[str]:
        return [f"{name} in log line: {line[:300]}" for name, value in self.values.items()
                for line in lines if value in line]

    def in_answers(self, answers: Answers) -> list[str]:
        return [f"{name} in the answer '{label}'" for name, value in self.values.items()
                if name not in self.log_only
                for label, text in answers.seen
                if value in text and label not in self.shown_in[name]]


def _key_forms(prefix: str, key: Ed25519PrivateKey, secrets: Secrets,
               shown_in: tuple[str, ...] = ()) -> None:
    """A private key as the JWK `d` and as the body of an unencrypted PKCS#8 PEM."""
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    secrets.add(f"{prefix} d", base64.urlsafe_b64encode(raw).rstrip(b"=").decode(),
                shown_in=shown_in)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    secrets.add(f"{prefix} pem", _pem_body(pem), shown_in=shown_in)


def _pem_body(pem: str) -> str:
    """The first base64 line of a PEM (what a logged PEM would show)."""
    lines = [ln for ln in pem.strip().splitlines() if not ln.startswith("-----")]
    return lines[0]


def _hidden(page: str, name: str) -> str:
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', page)
    assert match, f"no field {name}"
    return html.unescape(match.group(1))


def _post(client: FlaskClient, answers: Answers, label: str, path: str,
          data: dict[str, Any], page: str | None = None, **kwargs: Any) -> Any:
    form_page = answers.keep(f"{label} (form)", client.get(page or path))
    csrf = _hidden(form_page, "csrf_token")
    key = ({"idempotency_key": _hidden(form_page, "idempotency_key")}
           if 'name="idempotency_key"' in form_page else {})
    response = client.post(path, data={**key, **data, "csrf_token": csrf}, **kwargs)
    answers.keep(label, response)
    return response


def _login(client: FlaskClient, answers: Answers, email: str, password: str) -> None:
    sent = _post(client, answers, f"sign in {email}", "/login",
                 {"email": email, "password": password})
    assert sent.status_code == 302, sent.status_code


def _cookie(client: FlaskClient) -> str:
    found = client.get_cookie("wallet_session")
    assert found is not None
    return found.value


# -- the journey, in the app -----------------------------------------------------------------


def test_the_demo_journey_logs_no_secret_and_shows_each_only_where_meant(
        app: Flask, debug_logs: _Keep, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from sqlmodel import select

    from wallet import db, security
    from wallet.actions import demo
    from wallet.core import walletfile
    from wallet.keystore import keystore
    from wallet.models import ApiToken, Person, SigningKey
    from wallet.store import people

    secrets = Secrets()
    answers = Answers()
    with app.app_context():
        demo.load(db.session(), password=DEMO)
        demo_wallet = demo.wallet_file_path().read_text()

    # The acme admin invites a new hire, who accepts.
    admin = app.test_client()
    _login(admin, answers, "admin@acme.test", DEMO)
    added = _post(admin, answers, "invitation shown", "/orgs/acme/admin/people",
                  {"email": NEWHIRE, "role": "engineer", "name": "", "start": ""})
    link = re.search(r'data-testid="invite-url">[^<]*/invite/([^<"]+)<', added.get_data(
        as_text=True))
    assert link, "no invitation link on the page"
    invite = html.unescape(link.group(1))
    secrets.add("invitation token", invite, shown_in=("invitation shown",))
    secrets.add("invitation hash", security.hash_token(invite))
    newhire = app.test_client()
    accepted = _post(newhire, answers, "invitation accepted", f"/invite/{invite}",
                     {"password": NEWHIRE_PASSWORD, "confirm": NEWHIRE_PASSWORD})
    assert accepted.status_code == 302, accepted.get_data(as_text=True)[:500]
    answers.keep("new hire's wallet", newhire.get("/orgs/acme/wallet"))
    newhire_cookies = [_cookie(newhire)]

    # The admin hands the new hire a reset link; they set a password, then change it.
    with app.app_context():
        invited = people.person_by_email(db.session(), email=NEWHIRE)
        assert invited is not None
    issued = _post(admin, answers, "reset link shown",
                   f"/orgs/acme/admin/people/{invited.id}/reset", {},
                   page="/orgs/acme/admin/people")
    link = re.search(r'data-testid="reset-url">[^<]*/reset/([^<"]+)<',
                     issued.get_data(as_text=True))
    assert link, "no reset link on the page"
    reset = html.unescape(link.group(1))
    secrets.add("reset token", reset, shown_in=("reset link shown",))
    secrets.add("reset hash", security.hash_token(reset))
    done = _post(newhire, answers, "reset used", f"/reset/{reset}",
                 {"password": RESET_PASSWORD, "confirm": RESET_PASSWORD})
    assert done.status_code == 302, done.get_data(as_text=True)[:500]
    newhire_cookies.append(_cookie(newhire))
    changed = _post(newhire, answers, "password changed", "/account/password",
                    {"current": RESET_PASSWORD, "password": CHANGED_PASSWORD,
                     "confirm": CHANGED_PASSWORD}, page="/account")
    assert changed.status_code == 302, changed.get_data(as_text=True)[:500]
    answers.keep("account", newhire.get("/account"))

    # Money: funding and a grant, on the pages.
    assert _post(admin, answers, "fund", "/orgs/acme/admin/",
                 {"amount": "1000.00", "memo": "Q3"}).status_code == 302
    assert _post(admin, answers, "grant", "/orgs/acme/admin/grants",
                 {"email": NEWHIRE, "amount": "100.00", "every": ""}).status_code == 302
    answers.keep("overview", admin.get("/orgs/acme/admin/"))
    answers.keep("audit log", admin.get("/orgs/acme/admin/audit"))

    # Ada: an API token on the page (shown once), the API with it.
    ada = app.test_client()
    _login(ada, answers, ADA, DEMO)
    shown = _post(ada, answers, "token shown", "/orgs/acme/tokens",
                  {"label": "laptop", "expires_days": ""}).get_data(as_text=True)
    token = re.search(r'data-testid="new-token">([^<]+)<', shown)
    assert token, "no new token on the page"
    api_token = html.unescape(token.group(1))
    secrets.add("API token (page)", api_token, shown_in=("token shown",))
    answers.keep("tokens again", ada.get("/orgs/acme/tokens"))
    bearer = {"Authorization": f"Bearer {api_token}"}
    answers.keep("API me", ada.get("/api/v1/orgs/acme/me", headers=bearer))
    answers.keep("API notes", ada.get("/api/v1/orgs/acme/me/notes", headers=bearer))

    # Ada exports a note to a new wallet file under a passphrase, brings it to globex.
    download = _post(ada, answers, "wallet file", "/orgs/acme/export", {
        "amount": "25.00", "mode": "new", "passphrase": WALLET_PASSPHRASE,
        "confirm": WALLET_PASSPHRASE, "holder_jwk": ""})
    assert download.status_code == 200 and download.mimetype == "application/json"
    exported = walletfile.parse(download.get_data(as_text=True))
    secrets.add("wallet passphrase", WALLET_PASSPHRASE)
    secrets.add("wallet file's encrypted key", _pem_body(exported.holder_key),
                shown_in=("wallet file",))
    _key_forms("wallet holder key", exported.unlock(WALLET_PASSPHRASE), secrets)
    brought = _post(ada, answers, "bring", "/orgs/globex/bring", {
        "w-wallet": (io.BytesIO(download.get_data()), "ada.ccwallet"),
        "w-passphrase": WALLET_PASSPHRASE, "w-idempotency_key": "bring-1"},
        content_type="multipart/form-data")
    assert brought.status_code == 200 and "1 note honoured" in brought.get_data(as_text=True)
    answers.keep("globex wallet", ada.get("/orgs/globex/wallet"))
    answers.keep("notes", ada.get("/orgs/acme/notes"))

    # Keys: a rotation on the page, one with the CLI; tokens and a holder key with the CLI.
    assert _post(admin, answers, "rotate", "/orgs/acme/admin/keys/rotate", {},
                 page="/orgs/acme/admin/keys").status_code == 302
    answers.keep("keys", admin.get("/orgs/acme/admin/keys"))
    assert run_cli(app, capsys, "keys", "rotate", "--org", "globex", "--yes").exit_code == 0
    made = run_cli(app, capsys, "token", "create", "--org", "acme", "--email", ADA)
    assert made.exit_code == 0
    secrets.add("API token (CLI)", made.out.strip())
    service = run_cli(app, capsys, "token", "create", "--org", "globex", "--service")
    assert service.exit_code == 0
    secrets.add("service token (CLI)", service.out.strip())
    answers.keep("API with the CLI token", app.test_client().get(
        "/api/v1/orgs/acme/me", headers={"Authorization": f"Bearer {made.out.strip()}"}))
    passphrase_file = tmp_path / "holder-passphrase"
    passphrase_file.write_text(HOLDER_PASSPHRASE + "\n")
    key_file = tmp_path / "ada.key"
    assert run_cli(app, capsys, "keys", "holder-new", "--out", str(key_file),
                   "--passphrase-file", str(passphrase_file)).exit_code == 0
    from wallet.core import pkcs8

    secrets.add("holder key passphrase", HOLDER_PASSPHRASE)
    secrets.add("holder key file", _pem_body(key_file.read_text()))
    _key_forms("CLI holder key", pkcs8.decrypt(key_file.read_bytes(), HOLDER_PASSPHRASE),
               secrets)
    demo_file = walletfile.parse(demo_wallet)
    _key_forms("demo holder key", demo_file.unlock(DEMO), secrets)

    # Sessions and CSRF tokens: in cookies and forms by design, never in a log.
    for n, cookie in enumerate(newhire_cookies):
        secrets.add(f"new hire's earlier session cookie {n}", cookie, log_only=True)
        secrets.add(f"hash of new hire's earlier session {n}", hashlib.sha256(
            cookie.encode()).hexdigest())
    for name, client in (("admin", admin), ("new hire", newhire), ("ada", ada)):
        secrets.add(f"{name}'s session cookie", _cookie(client), log_only=True)
        secrets.add(f"hash of {name}'s session", hashlib.sha256(
            _cookie(client).encode()).hexdigest())
        page = client.get("/orgs/acme/wallet").get_data(as_text=True)
        secrets.add(f"{name}'s CSRF token", _hidden(page, "csrf_token"), log_only=True)
    for name, client in (("admin", admin), ("ada", ada)):
        _post(client, answers, f"sign out {name}", "/logout", {}, page="/orgs/acme/wallet")

    # What the database and the keystore hold.
    secrets.add("demo password", DEMO)
    secrets.add("new hire's password", NEWHIRE_PASSWORD)
    secrets.add("password set from the reset link", RESET_PASSWORD)
    secrets.add("changed password", CHANGED_PASSWORD)
    secrets.add("instance secret key", app.config["WALLET_SECRET_KEY"])
    secrets.add("keystore passphrase", app.config["WALLET_KEY_PASSPHRASE"])
    with app.app_context():
        s = db.session()
        for person in s.exec(select(Person)).all():
            if person.password_hash:
                secrets.add(f"password hash of {person.email}",
                            person.password_hash.rsplit("$", 1)[-1])
        for row in s.exec(select(ApiToken)).all():
            secrets.add(f"hash of token {row.prefix}", row.token_hash)
        slugs = {o.id: o.slug for o in people.orgs(s)}
        for key in s.exec(select(SigningKey)).all():
            assert key.storage == "db" and key.encrypted_pem
            secrets.add(f"{key.kid} encrypted", _pem_body(key.encrypted_pem))
            _key_forms(f"signing key {key.kid}", keystore().load(key, org_slug=slugs[key.org_id]),
                       secrets)
        s.rollback()
    assert len([n for n in secrets.values if n.startswith("signing key")]) >= 2 * 4

    # The logs were on, and saw the journey (a check that cannot pass with logging off).
    assert any(line.startswith("sqlalchemy.engine") for line in debug_logs.lines)
    assert len(debug_logs.lines) > 1000
    assert secrets.in_logs(debug_logs.lines) == []
    assert secrets.in_answers(answers) == []
    assert len(answers.seen) > 30


# -- request logs: gunicorn (`wallet serve`) and werkzeug ------------------------------------


def _wallet_bin() -> str:
    found = shutil.which("wallet", path=os.path.dirname(sys.executable))
    assert found, "the wallet console script is not installed next to this interpreter"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Browser:
    """urllib with cookies, a Referer and the CSRF token of the last page: enough of a browser."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar()), _NoRedirect())
        self.referer: str | None = None

    def send(self, method: str, path: str, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.base + path, data=body, method=method,  # noqa: S310
                                         headers={**({"Referer": self.referer}
                                                     if self.referer else {}),
                                                  **(headers or {})})
        try:
            with self.opener.open(request, timeout=30) as answer:
                status, text = answer.status, answer.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode(errors="replace")
        self.referer = self.base + path  # the next request comes from this page
        return status, text


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _requests_with_secrets(base: str, invite: str, token: str) -> list[str]:
    """What a browser and an API client send that carries a secret in the URL or headers;
    returns the secrets sent."""
    query_secret = "q" + os.urandom(12).hex()
    reset_secret = "r" + os.urandom(12).hex()
    browser = _Browser(base)
    status, page = browser.send("GET", f"/invite/{invite}")
    assert status == 200, page[:300]
    status, _ = browser.send("POST", f"/invite/{invite}", {
        "csrf_token": _hidden(page, "csrf_token"), "password": NEWHIRE_PASSWORD,
        "confirm": NEWHIRE_PASSWORD})
    assert status == 302
    browser.referer = f"{base}/invite/{invite}?from={query_secret}"
    assert browser.send("GET", "/static/app.css")[0] == 200  # Referer: the invitation page
    browser.send("GET", f"/reset/{reset_secret}")  # a reset link (its route or a 404)
    browser.send("GET", f"/%69nvite/{invite}x")  # percent-encoded: the same route
    browser.send("GET", f"/login?next=/orgs/acme/wallet&token={query_secret}")
    api = urllib.request.Request(f"{base}/api/v1/orgs/acme/me",  # noqa: S310 (loopback)
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(api, timeout=30) as answer:  # noqa: S310 (loopback)
        assert answer.status == 200
    return [invite, query_secret, reset_secret, token]


def _invite_and_token(app: Flask) -> tuple[str, str]:
    from wallet import db
    from wallet.actions import demo
    from wallet.actions import orgs as org_actions
    from wallet.actions._base import Actor

    with app.app_context():
        demo.load(db.session(), password=DEMO)
        added = org_actions.add_person(db.session(), slug="acme", email=NEWHIRE,
                                       actor=Actor.cli())
        assert added.invite
        token, _row = org_actions.create_token(db.session(), slug="acme", email=ADA,
                                               actor=Actor.cli())
        return added.invite, token


def test_wallet_serve_access_log_carries_no_secret(app: Flask, app_config: dict[str, Any],
                                                   tmp_path: Path) -> None:
    invite, token = _invite_and_token(app)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALLET_")}
    env.update({name: str(value) for name, value in app_config.items()})
    env["WALLET_BASE_URL"] = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:  # the child keeps its copy
        server = subprocess.Popen(
            [_wallet_bin(), "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--threads", "2", "--access-log"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, log_path.read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5) as up:  # noqa: S310
                    if up.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.2)
        sent = _requests_with_secrets(base, invite, token)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)  # the group this test started, by its id
            server.wait(5)
    text = log_path.read_text(errors="replace")
    assert '"GET /invite/' in text and '"POST /invite/' in text, text[-2000:]  # logged, redacted
    assert "/healthz" in text and "/reset/" in text and "/login?next=" in text
    assert [s for s in sent if s in text] == []
    assert [ln for ln in text.splitlines() if "invite" in ln.lower()
            and "[redacted]" not in ln] == []


def test_the_development_server_log_carries_no_secret(app: Flask,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    from werkzeug.serving import make_server

    invite, token = _invite_and_token(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)  # werkzeug's own request log
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.DEBUG):
            sent = _requests_with_secrets(f"http://127.0.0.1:{server.port}", invite, token)
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    lines = [r.getMessage() for r in caplog.records if r.name == "werkzeug"]
    assert any("/invite/" in ln for ln in lines) and any("/login?next=" in ln for ln in lines)
    assert [(s, ln) for s in sent for ln in lines if s in ln] == []
    assert [json.dumps(ln) for ln in lines if "/invite/" in ln and "[redacted]" not in ln] == []


@pytest.mark.parametrize(("line", "expected"), [
    ('"GET /invite/AbC-12_x HTTP/1.1" 200 -', '"GET /invite/[redacted] HTTP/1.1" 200 -'),
    ('\x1b[1m"POST /reset/tok3n HTTP/1.1"\x1b[0m',
     '\x1b[1m"POST /reset/[redacted] HTTP/1.1"\x1b[0m'),
    ("GET /%69nvite/tok and /INVITE/tok2/", "GET /%69nvite/[redacted] and /INVITE/[redacted]/"),
    ('"http://h/invite/t?from=s#x" "UA"', '"http://h/invite/[redacted]?from=[redacted]#x" "UA"'),
    ("/login?next=/orgs/acme&token=abc&empty=",
     "/login?next=[redacted]&token=[redacted]&empty=[redacted]"),
    ("/orgs/acme/admin/notes", "/orgs/acme/admin/notes"),  # nothing secret: unchanged
    ("/orgs/acme/invitees/x", "/orgs/acme/invitees/x"),
])
def test_redact_takes_out_secret_segments_and_query_values(line: str, expected: str) -> None:
    from wallet.redaction import redact

    assert redact(line) == expected


def test_sqlalchemy_rows_and_parameters_stay_out_of_logs_at_debug(
        app: Flask, debug_logs: _Keep) -> None:
    """An error carries no SQL parameter; a DEBUG row record is dropped (both in every mode)."""
    import sqlalchemy as sa

    from wallet import db

    with app.app_context():
        session = db.session()
        marker = "never-logged-" + os.urandom(8).hex()
        value = session.execute(sa.text("SELECT :v"), {"v": marker}).scalar()
        assert value == marker
        with pytest.raises(sa.exc.SQLAlchemyError) as failed:
            session.execute(sa.text("SELECT * FROM no_such_table WHERE x = :v"), {"v": marker})
        session.rollback()
    assert marker not in str(failed.value)
    assert any("SELECT :v" in line or "SELECT ?" in line or "SELECT %(v)s" in line
               for line in debug_logs.lines)
    assert [line for line in debug_logs.lines if marker in line] == []
