"""Email through a real SMTP server on loopback (aiosmtpd), on both databases: the
outbox (wallet/actions/mail.py), invitations and resets queued with their cause, the
sweeps' messages queued once by their unique key (also when two sweeps race), retries
while the server is down, the log-only mode, a bad WALLET_SMTP_URL, no header
injection."""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from flask import Flask
from flask.testing import FlaskClient

from tests import fed_support as fs
from tests import support
from tests.grant_helpers import at_moment, person_id
from wallet import clock, db
from wallet.actions import grants as grant_actions
from wallet.actions import ledger as ledger_actions
from wallet.actions import mail as mail_actions
from wallet.actions import orgs
from wallet.actions._base import Actor
from wallet.config import ConfigError
from wallet.models import MailMessage

CLI = Actor.cli()
ADA = "ada@example.test"


# -- a real SMTP server on loopback --------------------------------------------------------


@dataclass
class Inbox:
    """An aiosmtpd handler keeping every message it is given."""

    messages: list[tuple[str, list[str], email.message.EmailMessage]] = field(
        default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def to(self, addr: str) -> list[email.message.EmailMessage]:
        return [m for _, rcpt, m in self.messages if rcpt == [addr]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    inbox: Inbox = field(default_factory=Inbox)
    controller: Controller | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port,
                                     **self.options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp() -> Iterator[Server]:
    server = Server(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mail_url(smtp: Server) -> str:
    return f"smtp://127.0.0.1:{smtp.port}"


@pytest.fixture
def app_config(db_url: str, tmp_path: Any, mail_url: str) -> dict[str, Any]:
    return support.test_config(db_url, tmp_path, WALLET_SMTP_URL=mail_url,
                               WALLET_MAIL_FROM="Acme Credits <credits@wallet.test>",
                               WALLET_SMTP_TIMEOUT=2.0)


def send_due(app: Flask) -> int:
    with app.app_context():
        return mail_actions.send_due(db.session())


def rows(app: Flask) -> list[MailMessage]:
    with app.app_context():
        return list(db.session().scalars(sa.select(MailMessage).order_by(MailMessage.id)))


def link_in(msg: email.message.EmailMessage, within: str = "") -> str:
    found = re.search(rf"http://wallet\.test/\S*{within}\S*", msg.get_content())
    assert found, msg.get_content()
    return found.group(0)


def world(app: Flask) -> None:
    """acme and globex with their admins (passwords: no invitation)."""
    with app.app_context():
        s = db.session()
        for slug, name in (("acme", "Acme AI"), ("globex", "Globex")):
            orgs.create_org(s, slug=slug, name=name, admin_email=f"admin@{slug}.test",
                            actor=CLI, admin_password=support.PASSWORD)
        ledger_actions.fund(s, slug="acme", amount="10000.00", idempotency_key="mail-tests",
                            actor=CLI)


# -- invitations and resets ----------------------------------------------------------------


def test_an_invitation_arrives_with_its_link(app: Flask, client: FlaskClient,
                                             smtp: Server) -> None:
    world(app)
    with app.app_context():
        added = orgs.add_person(db.session(), slug="acme", email=ADA, name="Ada Lovelace",
                                actor=CLI)
    assert [r.key for r in rows(app)] == [f"invite:{_hash(added.invite)}"]  # with its cause
    assert send_due(app) == 1
    [msg] = smtp.inbox.to(ADA)
    assert msg["Subject"] == "Acme AI invites you to Compute Credits"
    assert msg["From"] == "Acme Credits <credits@wallet.test>"
    assert msg["To"] == "Ada Lovelace <ada@example.test>"
    link = link_in(msg)
    assert link == f"{support.BASE_URL}/invite/{added.invite}"
    assert client.get(link.removeprefix(support.BASE_URL)).status_code == 200
    [row] = rows(app)
    assert (row.state, row.sent_via, row.attempts, row.body) == ("sent", "smtp", 1, "")
    assert send_due(app) == 0 and len(smtp.inbox.messages) == 1  # sent once


def test_the_people_page_says_the_invitation_was_emailed(app: Flask, client: FlaskClient,
                                                         smtp: Server) -> None:
    world(app)
    support.login(client, "admin@acme.test")
    page = support.post_form(client, "/orgs/acme/admin/people",
                             {"email": ADA, "role": "engineer", "name": "Ada"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert "emailed to ada@example.test" in html
    assert 'data-testid="invite-url"' not in html  # the link goes by email only
    send_due(app)
    [msg] = smtp.inbox.to(ADA)
    ada = app.test_client()  # not the admin's browser
    assert ada.get(link_in(msg).removeprefix(support.BASE_URL)).status_code == 200
    # a reset link: emailed too, not shown
    page = support.post_form(client, f"/orgs/acme/admin/people/{person_id(app, ADA)}/reset", {})
    html = page.get_data(as_text=True)
    assert "A password reset link was emailed to ada@example.test" in html, html
    assert 'data-testid="reset-url"' not in html
    send_due(app)
    assert [m["Subject"] for m in smtp.inbox.to(ADA)][-1] == (
        "Acme AI: reset your Compute Credits password")


def test_a_reset_link_arrives(app: Flask, client: FlaskClient, smtp: Server) -> None:
    world(app)
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, password=support.PASSWORD,
                        actor=CLI)
        token = orgs.reset_link(db.session(), slug="acme", email=ADA, actor=CLI)
    assert send_due(app) == 1
    [msg] = smtp.inbox.to(ADA)
    assert msg["Subject"] == "Acme AI: reset your Compute Credits password"
    assert link_in(msg) == f"{support.BASE_URL}/reset/{token}"
    assert "60 minutes" in msg.get_content()
    assert client.get(f"/reset/{token}").status_code == 200


def test_a_link_that_expired_before_it_could_be_sent_is_not_sent(app: Flask,
                                                                 smtp: Server) -> None:
    world(app)
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, password=support.PASSWORD,
                        actor=CLI)
        orgs.reset_link(db.session(), slug="acme", email=ADA, actor=CLI)
    with at_moment(app, clock.SystemClock().now() + timedelta(hours=2)):
        send_due(app)
    assert smtp.inbox.messages == []
    [row] = rows(app)
    assert (row.state, row.body) == ("expired", "")


def test_no_header_injection_through_a_name(app: Flask, smtp: Server) -> None:
    world(app)
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA,
                        name="Ada\r\nBcc: victim@evil.example\r\n\r\nforged body", actor=CLI)
    send_due(app)
    [(_, rcpt, msg)] = smtp.inbox.messages
    assert rcpt == [ADA]
    assert msg.get_all("Bcc") is None
    assert "forged body" not in msg.get_content()
    assert "\n" not in str(msg["To"])


# -- the sweeps: once per event, however often or concurrently they run -----------------------


def test_a_vested_tranche_is_told_once(app: Flask, smtp: Server) -> None:
    world(app)
    _engineer(app)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=ADA, amount="1250.00",
                                   actor=CLI)
    send_due(app)
    send_due(app)
    with app.app_context():
        assert mail_actions.sweep(db.session()) == 0
    [msg] = smtp.inbox.to(ADA)
    assert msg["Subject"] == "Acme AI: 1,250.00 USD of your credits vested"
    assert link_in(msg) == f"{support.BASE_URL}/orgs/acme/wallet"
    assert [r.kind for r in rows(app)] == ["vested"]


def test_tranches_vested_together_are_told_in_one_message(app: Flask, smtp: Server) -> None:
    """A grant started 18 months ago with a one-year cliff vests 7 tranches at once."""
    from wallet.core.vesting import add_months

    world(app)
    _engineer(app)
    with app.app_context():
        grant_actions.create_grant(db.session(), slug="acme", email=ADA, amount="4800.00",
                                   start=add_months(clock.today(), -18), cliff_months=12,
                                   every="month", months=48, actor=CLI)
    send_due(app)
    send_due(app)
    [msg] = smtp.inbox.to(ADA)
    assert msg["Subject"] == "Acme AI: 1,800.00 USD of your credits vested"
    assert "(7 instalments, the last due on" in msg.get_content()


def test_a_sweep_reads_every_page(app: Flask, smtp: Server,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than a page (here 2) since the last look: all are told, once."""
    monkeypatch.setattr(mail_actions, "SWEEP_PAGE", 2)
    world(app)
    emails = [f"eng{i}@acme.test" for i in range(5)]
    with app.app_context():
        s = db.session()
        for addr in emails:
            orgs.add_person(s, slug="acme", email=addr, password=support.PASSWORD, actor=CLI)
            grant_actions.create_grant(s, slug="acme", email=addr, amount="1.00", actor=CLI)
        assert mail_actions.sweep(s) == 5
        assert mail_actions.sweep(s) == 0
    send_due(app)
    assert sorted(m["To"].addresses[0].addr_spec for _, _, m in smtp.inbox.messages) == emails


def test_two_sweeps_at_once_queue_each_message_once(app: Flask, smtp: Server) -> None:
    world(app)
    emails = [f"eng{i}@acme.test" for i in range(6)]
    with app.app_context():
        s = db.session()
        for addr in emails:
            orgs.add_person(s, slug="acme", email=addr, password=support.PASSWORD, actor=CLI)
        for addr in emails:
            grant_actions.create_grant(s, slug="acme", email=addr, amount="10.00", actor=CLI)
    results = _race(app, lambda: mail_actions.send_due(db.session()), workers=3)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(m["To"].addresses[0].addr_spec for _, _, m in smtp.inbox.messages) == (
        sorted(emails))  # each tranche's message queued once and sent once
    assert [r.state for r in rows(app)] == ["sent"] * len(emails)


def test_the_unique_key_holds_under_concurrent_inserts(app: Flask) -> None:
    world(app)
    draft = mail_actions.mail.Draft("s", "b\n")

    def queue_one() -> bool:
        s = db.session()
        queued = mail_actions.queue(s, key="vested:race", kind="vested", org=None,
                                    to_addr=ADA, to_name="", draft=draft)
        time.sleep(0.2)  # hold the transaction open while the others try
        s.commit()
        return queued

    results = _race(app, queue_one, workers=4)
    assert sorted(results) == [False, False, False, True], results
    assert len(rows(app)) == 1


def test_the_alumni_reminder_is_sent_once(app: Flask, smtp: Server) -> None:
    world(app)
    _engineer(app)
    today = clock.today()
    with app.app_context():
        s = db.session()
        # acme's window is 90 days: ended 80 days ago, it closes in 10.
        grant_actions.terminate(s, slug="acme", email=ADA, on=today - timedelta(days=80),
                                actor=CLI)
    send_due(app)
    later = clock.SystemClock().now() + timedelta(hours=2)
    with at_moment(app, later):  # the next hourly look finds the same window
        send_due(app)
        with app.app_context():
            s = db.session()
            s.execute(sa.delete(mail_actions.store.SWEEP))  # and a sweep that never ran
            s.commit()
            assert mail_actions.sweep(s) == 0
    alumni = [m for m in smtp.inbox.to(ADA) if "alumni" in str(m["Subject"])]
    assert len(alumni) == 1, [m["Subject"] for m in smtp.inbox.messages]
    closes = (today + timedelta(days=10)).isoformat()
    assert alumni[0]["Subject"] == ("Acme AI: your alumni window closes in 10 days"
                                    " — export your credits")
    assert closes in alumni[0].get_content()
    assert link_in(alumni[0]) == f"{support.BASE_URL}/orgs/acme/export"


def test_a_window_closing_later_is_not_told_yet(app: Flask, smtp: Server) -> None:
    world(app)
    _engineer(app)
    with app.app_context():
        grant_actions.terminate(db.session(), slug="acme", email=ADA,
                                on=clock.today() - timedelta(days=30), actor=CLI)
    send_due(app)
    assert [m for m in smtp.inbox.messages if "alumni" in str(m[2]["Subject"])] == []


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    fs.clear_caches()
    yield
    fs.clear_caches()


def test_a_redeemed_note_is_told_once(app: Flask, client: FlaskClient, smtp: Server) -> None:
    fed = fs.setup_federation(app)
    note = fs.export(app, fed.holder, "50.00")
    value = fs.nonce(client, "globex", fed.token("globex"))
    answer = fs.honour(client, "globex", fed.token("globex"),
                       [fs.present(note.token, fed.holder, "globex", value)])
    assert answer.status_code == 200, answer.get_data(as_text=True)
    send_due(app)
    send_due(app)
    redeemed = [m for m in smtp.inbox.to(ADA) if "redeemed" in str(m["Subject"])]
    assert len(redeemed) == 1
    assert redeemed[0]["Subject"] == "Acme AI: your note of 50.00 USD was redeemed"
    assert fs.issuer("globex") in redeemed[0].get_content()
    assert link_in(redeemed[0], "/notes/") == (
        f"{support.BASE_URL}/orgs/acme/notes/{note.jti}")


# -- the server down, slow, or refusing ----------------------------------------------------


@pytest.mark.parametrize("mail_url", [f"smtp://127.0.0.1:{free_port()}"])
def test_smtp_down_then_retried_and_nothing_lost(app: Flask, mail_url: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    world(app)
    with app.app_context():
        added = orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
    with caplog.at_level(logging.WARNING, logger="wallet.actions.mail"):
        assert send_due(app) == 1
    [row] = rows(app)
    assert (row.state, row.attempts) == ("queued", 1)
    assert "Connection" in row.last_error or "refused" in row.last_error.lower()
    assert row.next_attempt_at > clock.SystemClock().now() + timedelta(seconds=50)
    assert "again in 60 s" in caplog.text
    assert send_due(app) == 0  # not due yet
    server = Server(int(mail_url.rsplit(":", 1)[1]))
    server.start()
    try:
        with at_moment(app, clock.SystemClock().now() + timedelta(minutes=2)):
            assert send_due(app) == 1
    finally:
        server.stop()
    [msg] = server.inbox.to(ADA)
    assert link_in(msg).endswith(f"/invite/{added.invite}")
    [row] = rows(app)
    assert (row.state, row.attempts) == ("sent", 2)


@pytest.mark.parametrize("mail_url", [f"smtp://127.0.0.1:{free_port()}"])
def test_given_up_after_the_last_try(app: Flask) -> None:
    world(app)
    app.config["WALLET_MAIL_MAX_ATTEMPTS"] = 2
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
    send_due(app)
    with at_moment(app, clock.SystemClock().now() + timedelta(minutes=5)):
        send_due(app)
    [row] = rows(app)
    assert (row.state, row.attempts, row.body) == ("failed", 2, "")


def test_a_server_that_never_answers_is_cut_off_at_the_deadline(app: Flask) -> None:
    """A server that accepts and then says nothing: the try ends at WALLET_SMTP_TIMEOUT."""
    world(app)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    app.config["WALLET_SMTP_URL"] = f"smtp://127.0.0.1:{listener.getsockname()[1]}"
    app.config["WALLET_SMTP_TIMEOUT"] = 0.5
    try:
        with app.app_context():
            orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
        started = time.monotonic()
        send_due(app)
        assert time.monotonic() - started < 3
    finally:
        listener.close()
    [row] = rows(app)
    assert row.state == "queued" and "deadline" in row.last_error


def test_starttls_asked_for_and_not_offered_sends_nothing_in_clear(app: Flask,
                                                                    smtp: Server) -> None:
    world(app)
    app.config["WALLET_SMTP_URL"] = f"smtp://127.0.0.1:{smtp.port}?starttls=1"
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
    send_due(app)
    assert smtp.inbox.messages == []
    [row] = rows(app)
    assert row.state == "queued" and "STARTTLS" in row.last_error


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                   auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (
        auth_data.login, auth_data.password) == (b"mailer", b"pa ss:w")
    return AuthResult(success=ok, handled=False)  # refused: 535


@pytest.fixture
def auth_smtp() -> Iterator[Server]:
    server = Server(free_port(), options={"authenticator": _authenticator,
                                          "auth_required": True, "auth_require_tls": False})
    server.start()
    yield server
    server.stop()


# Loopback: no TLS needed to test signing in (aiosmtpd warns about that, rightly elsewhere).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize(("password", "sent"), [("pa%20ss%3Aw", True), ("wrong-one", False)])
def test_signing_in_to_the_server(app: Flask, auth_smtp: Server, password: str, sent: bool,
                                  caplog: pytest.LogCaptureFixture) -> None:
    world(app)
    app.config["WALLET_SMTP_URL"] = f"smtp://mailer:{password}@127.0.0.1:{auth_smtp.port}"
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
    with caplog.at_level(logging.INFO):
        send_due(app)
    [row] = rows(app)
    assert (len(auth_smtp.inbox.messages), row.state) == ((1, "sent") if sent else (0, "queued"))
    if not sent:
        assert "535" in row.last_error
    assert password not in caplog.text and password not in row.last_error


class Refusing(Inbox):
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if envelope.rcpt_tos == ["spam@acme.test"]:
            return "554 5.7.1 rejected as spam"
        return await super().handle_DATA(server, session, envelope)


@pytest.mark.parametrize(("to", "says"), [("gone@acme.test", "550 5.1.1 no such user"),
                                          ("spam@acme.test", "554 5.7.1 rejected as spam")])
def test_a_refusal_for_good_is_not_tried_again(app: Flask, to: str, says: str) -> None:
    world(app)
    server = Server(free_port(), inbox=Refusing())
    server.start()
    try:
        app.config["WALLET_SMTP_URL"] = f"smtp://127.0.0.1:{server.port}"
        with app.app_context():
            orgs.add_person(db.session(), slug="acme", email=to, actor=CLI)
        send_due(app)
    finally:
        server.stop()
    [row] = rows(app)
    assert (row.state, row.attempts, row.body) == ("failed", 1, "")
    assert says in row.last_error


# -- log-only mode and configuration -------------------------------------------------------


@pytest.mark.parametrize("mail_url", [""])
def test_log_only_mode_logs_and_sends_nothing(app: Flask, client: FlaskClient, smtp: Server,
                                              caplog: pytest.LogCaptureFixture) -> None:
    world(app)
    with app.app_context():
        added = orgs.add_person(db.session(), slug="acme", email=ADA, name="Ada", actor=CLI)
    with caplog.at_level(logging.INFO, logger="wallet_mail"):
        assert send_due(app) == 1
    assert smtp.inbox.messages == []
    [record] = [r for r in caplog.records if r.name == "wallet_mail"]
    first = record.getMessage().split("\n")[0]
    assert "Ada <ada@example.test>" in first
    assert "'Acme AI invites you to Compute Credits'" in first
    assert f"{support.BASE_URL}/invite/{added.invite}" in record.getMessage()  # dev only
    [row] = rows(app)
    assert (row.state, row.sent_via, row.body) == ("sent", "log", "")
    # and the admin's page keeps showing the link to copy
    support.login(client, "admin@acme.test")
    page = support.post_form(client, "/orgs/acme/admin/people",
                             {"email": "bob@acme.test", "role": "engineer"})
    html = page.get_data(as_text=True)
    assert 'data-testid="invite-url"' in html and "/invite/" in html


@pytest.mark.parametrize("mail_url", [""])
def test_log_only_mode_in_production_leaves_the_body_out(
        app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    world(app)
    with app.app_context():
        added = orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
    app.config["WALLET_ENV"] = "production"
    with caplog.at_level(logging.INFO, logger="wallet_mail"):
        send_due(app)
    assert "ada@example.test" in caplog.text
    assert added.invite is not None and added.invite not in caplog.text


@pytest.mark.parametrize(("url", "says"), [
    ("http://mail.example", "smtp:// or smtps://"),
    ("smtp://user:secret-pass@mail.example:25", "password in clear"),
    ("smtp://mail.example?tls=yes", "unknown option"),
    ("smtps://", "no host"),
])
def test_a_bad_smtp_url_stops_the_start(db_url: str, tmp_path: Any, url: str,
                                        says: str) -> None:
    from wallet import create_app

    with pytest.raises(ConfigError, match=says) as refused:
        create_app(support.test_config(db_url, tmp_path, WALLET_SMTP_URL=url))
    assert "secret-pass" not in str(refused.value)


def test_a_bad_sender_stops_the_start(db_url: str, tmp_path: Any) -> None:
    from wallet import create_app

    with pytest.raises(ConfigError, match="WALLET_MAIL_FROM"):
        create_app(support.test_config(db_url, tmp_path, WALLET_MAIL_FROM="nobody"))


# -- helpers -------------------------------------------------------------------------------


def _hash(token: str | None) -> str:
    from wallet import security

    assert token is not None
    return security.hash_token(token)


def _engineer(app: Flask) -> None:
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, name="Ada",
                        start=clock.today() - timedelta(days=400), password=support.PASSWORD,
                        actor=CLI)


def _race(app: Flask, work: Any, *, workers: int) -> list[Any]:
    """Run `work` in `workers` threads at once, each in its own app context (session)."""
    barrier = threading.Barrier(workers)
    results: list[Any] = [None] * workers

    def run(i: int) -> None:
        with app.app_context():
            barrier.wait()
            try:
                results[i] = work()
            except BaseException as err:  # reported by the test
                results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


@pytest.mark.parametrize("mail_url", [""])
def test_the_demo_sends_its_invitation_by_email_to_the_log(
        app: Flask, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="wallet_mail"):
        first = support.run_cli(app, capsys, "demo", "--password", "demo-password-x")
    assert first.exit_code == 0, first.err
    assert ("Invited grace@example.test to globex; the invitation email was written to the"
            " log (WALLET_SMTP_URL is unset)") in first.out
    [record] = [r for r in caplog.records if r.name == "wallet_mail"]
    text = record.getMessage()
    assert "Grace Hopper <grace@example.test>" in text and "'Globex invites you" in text
    link = re.search(r"http://wallet\.test/invite/\S+", text)
    assert link and app.test_client().get(
        link.group(0).removeprefix(support.BASE_URL)).status_code == 200
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wallet_mail"):
        again = support.run_cli(app, capsys, "demo", "--password", "demo-password-x")
    assert "nothing changed" in again.out
    assert [r for r in caplog.records if r.name == "wallet_mail"] == []


# -- TLS: STARTTLS and smtps://, certificates checked -------------------------------------


@dataclass
class Tls:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A self-signed certificate for 127.0.0.1, and a client context trusting only it."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    return Tls(server, ssl.create_default_context(cafile=str(folder / "cert.pem")))


@pytest.mark.parametrize("scheme", ["starttls", "smtps"])
def test_tls_as_the_url_says(app: Flask, tls: Tls, scheme: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    world(app)
    monkeypatch.setattr(mail_actions, "tls_context", lambda: tls.client)
    options: dict[str, Any] = ({"tls_context": tls.server, "require_starttls": True}
                               if scheme == "starttls" else {"ssl_context": tls.server})
    server = Server(free_port(), options=options)
    server.start()
    try:
        app.config["WALLET_SMTP_URL"] = (f"smtp://127.0.0.1:{server.port}?starttls=1"
                                         if scheme == "starttls"
                                         else f"smtps://127.0.0.1:{server.port}")
        with app.app_context():
            orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
        send_due(app)
    finally:
        server.stop()
    assert [r.state for r in rows(app)] == ["sent"]
    [msg] = server.inbox.to(ADA)
    assert msg["Subject"] == "Acme AI invites you to Compute Credits"


def test_a_certificate_we_do_not_trust_sends_nothing(app: Flask, tls: Tls) -> None:
    world(app)
    server = Server(free_port(), options={"ssl_context": tls.server})
    server.start()
    try:
        app.config["WALLET_SMTP_URL"] = f"smtps://127.0.0.1:{server.port}"
        with app.app_context():
            orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
        send_due(app)
    finally:
        server.stop()
    assert server.inbox.messages == []
    [row] = rows(app)
    assert row.state == "queued" and "CERTIFICATE_VERIFY_FAILED" in row.last_error


def test_an_unexpected_error_is_logged_and_the_message_kept(
        app: Flask, smtp: Server, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    world(app)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(mail_actions, "smtp_send", broken)
    with app.app_context():
        orgs.add_person(db.session(), slug="acme", email=ADA, actor=CLI)
        orgs.add_person(db.session(), slug="acme", email="bob@acme.test", actor=CLI)
    with caplog.at_level(logging.WARNING, logger="wallet.actions.mail"):
        assert send_due(app) == 2  # the first one's error did not stop the second
    assert [(r.state, r.last_error) for r in rows(app)] == [("queued", "RuntimeError: a bug")] * 2
    assert "unexpected error while sending" in caplog.text
