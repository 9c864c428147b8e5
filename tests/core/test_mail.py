"""wallet/core/mail.py: the SMTP URL, the sender, message building (no header
injection), the messages' words and the retry backoff. Pure: no server, no clock."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime

import pytest

from wallet.core import mail

NOW = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
SENDER = mail.parse_sender("Compute Credits <credits@acme.example>")


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://user:pa%40ss@mail.example:587?starttls=1",
     mail.SmtpSettings("mail.example", 587, False, True, "user", "pa@ss")),
    ("smtps://u:p@mail.example", mail.SmtpSettings("mail.example", 465, True, False, "u", "p")),
    ("smtp://127.0.0.1:2525", mail.SmtpSettings("127.0.0.1", 2525, False, False)),
    ("smtp://u:p@localhost:25", mail.SmtpSettings("localhost", 25, False, False, "u", "p")),
    ("smtp://mail.example", mail.SmtpSettings("mail.example", 587, False, False)),
    ("SMTP://[::1]:2525", mail.SmtpSettings("::1", 2525, False, False)),
])
def test_parse_smtp_url(url: str, expected: mail.SmtpSettings) -> None:
    assert mail.parse_smtp_url(url) == expected


def test_empty_url_means_log_only() -> None:
    assert mail.parse_smtp_url("") is None
    assert mail.parse_smtp_url("  ") is None


@pytest.mark.parametrize(("url", "says"), [
    ("http://mail.example", "smtp:// or smtps://"),
    ("mail.example:25", "smtp:// or smtps://"),
    ("smtp://", "no host"),
    ("smtp://mail.example:99999", "bad port"),
    ("smtp://mail.example:abc", "bad port"),
    ("smtp://mail.example/inbox", "no path"),
    ("smtp://mail.example?tls=1", "unknown option 'tls'"),
    ("smtp://mail.example?starttls=maybe", "starttls must be 1 or 0"),
    ("smtps://mail.example?starttls=1", "TLS already"),
    ("smtp://u:p@mail.example:25", "password in clear"),
])
def test_bad_smtp_urls_are_refused_with_the_reason(url: str, says: str) -> None:
    with pytest.raises(mail.MailConfigError, match=says):
        mail.parse_smtp_url(url)


def test_settings_never_show_the_password() -> None:
    settings = mail.parse_smtp_url("smtps://user:hunter2-secret@mail.example")
    assert settings is not None
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in settings.describe()
    assert settings.describe() == "smtps://user@mail.example:465"


def test_sender() -> None:
    assert str(SENDER) == "Compute Credits <credits@acme.example>"
    assert str(mail.parse_sender("credits@acme.example")) == "credits@acme.example"
    assert mail.default_sender("https://credits.acme.example/") == (
        "Compute Credits <no-reply@credits.acme.example>")
    assert mail.default_sender("http://127.0.0.1:5000") == (
        "Compute Credits <no-reply@127.0.0.1>")
    assert mail.default_sender("http://wallet:5000") == "Compute Credits <no-reply@localhost>"
    for bad in ("not an address", "Name <>", "a@b\r\nBcc: x@evil.example", ""):
        with pytest.raises(mail.MailConfigError):
            mail.parse_sender(bad)


def _parsed(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_build_known_answer() -> None:
    draft = mail.compose_invitation(org="Acme AI", link="http://w.test/invite/TOKEN", days=7)
    msg = mail.build(sender=SENDER, to_addr="ada@example.test", to_name="Ada Lovelace",
                     draft=draft, key="invite:abc", now=NOW)
    got = _parsed(msg.as_bytes())
    assert got["From"] == "Compute Credits <credits@acme.example>"
    assert got["To"] == "Ada Lovelace <ada@example.test>"
    assert got["Subject"] == "Acme AI invites you to Compute Credits"
    assert got["Date"] == "Mon, 07 Dec 2026 23:00:00 +0000"
    # sha256("invite:abc")[:32]: the same key, the same Message-ID on every try
    assert got["Message-ID"] == "<b64fbe5b0e8336fdaad299372816b3ab@acme.example>"
    assert got["Auto-Submitted"] == "auto-generated"
    body = got.get_content()
    assert "http://w.test/invite/TOKEN" in body and "7 days" in body


@pytest.mark.parametrize("evil", [
    "Ada\r\nBcc: victim@evil.example",
    "Ada\nBcc: victim@evil.example",
    "Ada\rBcc: victim@evil.example",
    "Ada\u2028Bcc: victim@evil.example",
    "Ada\x00\x1b[31m",
])
def test_no_header_injection_through_names(evil: str) -> None:
    draft = mail.compose_vested(org=evil, amount="1.00 USD", on=date(2026, 12, 1),
                                link="http://w.test/orgs/acme/wallet")
    msg = mail.build(sender=SENDER, to_addr="ada@example.test", to_name=evil, draft=draft,
                     key="k", now=NOW)
    raw = msg.as_bytes()
    got = _parsed(raw)
    assert got.get_all("Bcc") is None
    assert b"\nBcc:" not in raw and b"\rBcc:" not in raw
    assert "\n" not in str(got["Subject"]) and "\n" not in str(got["To"])
    assert list(got.keys()) == ["From", "To", "Subject", "Date", "Message-ID",
                                "Auto-Submitted", "Content-Type", "Content-Transfer-Encoding",
                                "MIME-Version"]


def test_one_line() -> None:
    assert mail.one_line("a\r\n  b\tc\u2029d\u200e") == "a b c d"
    assert mail.one_line("x" * 500) == "x" * mail.MAX_SUBJECT


def test_non_ascii_names_and_subjects_are_encoded() -> None:
    draft = mail.compose_reset(org="Société Générale", link="http://w.test/reset/T",
                               minutes=60)
    msg = mail.build(sender=SENDER, to_addr="zoe@example.test", to_name="Zoë Ünal",
                     draft=draft, key="reset:x", now=NOW)
    raw = msg.as_bytes()
    assert raw.isascii()  # RFC 2047 encoded words: any server takes it
    got = _parsed(raw)
    assert got["Subject"] == "Société Générale: reset your Compute Credits password"
    assert got["To"].addresses[0].display_name == "Zoë Ünal"
    assert "60 minutes" in got.get_content()


def test_the_messages_name_the_organisation_and_link() -> None:
    cases = [
        mail.compose_invitation(org="Acme AI", link="L1", days=7),
        mail.compose_reset(org="Acme AI", link="L2", minutes=60),
        mail.compose_vested(org="Acme AI", amount="1,250.00 USD", on=date(2026, 12, 1),
                            link="L3"),
        mail.compose_redeemed(org="Acme AI", amount="50.00 USD",
                              by="https://globex.example/orgs/globex", link="L4"),
        mail.compose_alumni(org="Acme AI", closes_on=date(2026, 12, 21), days_left=14,
                            link="L5"),
    ]
    for n, draft in enumerate(cases, 1):
        assert draft.subject.startswith("Acme AI")
        assert f"L{n}" in draft.text and draft.text.endswith("\n")
    assert cases[2].subject == "Acme AI: 1,250.00 USD of your credits vested"
    assert "vested on 2026-12-01 and" in cases[2].text
    several = mail.compose_vested(org="Acme AI", amount="7,000.00 USD", on=date(2026, 12, 1),
                                  link="L", tranches=7)
    assert "vested (7 instalments, the last due on 2026-12-01) and" in several.text
    assert cases[4].subject == ("Acme AI: your alumni window closes in 14 days"
                                " — export your credits")
    assert "closes tomorrow" in mail.compose_alumni(org="A", closes_on=date(2026, 1, 2),
                                                    days_left=1, link="x").subject
    assert "closes today" in mail.compose_alumni(org="A", closes_on=date(2026, 1, 2),
                                                 days_left=0, link="x").subject


def test_retry_delay_doubles_up_to_the_most() -> None:
    assert [mail.retry_delay(n, first=60, most=3600) for n in range(1, 9)] == [
        60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert mail.retry_delay(10**6, first=60, most=3600) == 3600


def test_loopback() -> None:
    assert mail.is_loopback("localhost") and mail.is_loopback("127.0.0.5")
    assert mail.is_loopback("[::1]") and not mail.is_loopback("mail.example")
    assert not mail.is_loopback("10.0.0.1")
