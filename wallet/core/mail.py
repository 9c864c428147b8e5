"""Email, pure: the SMTP URL, the messages' words, building a message safely, backoff.

No I/O here: `wallet.actions.mail` queues what `compose_*` return and sends what
`build` makes (docs: /work/notes/mail-docs.md). Every header value that comes from a
person (a name, an organisation's name) goes through `one_line`, and every message is
an `email.message.EmailMessage` with the strict default policy, so a name holding CR or
LF can never add a header.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from ipaddress import ip_address
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMES = {"smtp": 587, "smtps": 465}  # the default port of each
LOOPBACK_NAMES = ("localhost", "localhost.localdomain")
MAX_SUBJECT = 200


class MailConfigError(ValueError):
    """WALLET_SMTP_URL or WALLET_MAIL_FROM cannot be used (the message says why)."""


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """Where and how to send: parsed from WALLET_SMTP_URL."""

    host: str
    port: int
    ssl: bool  # smtps://: TLS from the first byte (RFC 8314)
    starttls: bool  # smtp://…?starttls=1: upgrade before anything else is sent
    username: str = ""
    password: str = field(default="", repr=False)

    def describe(self) -> str:
        """The server for the logs: never the password."""
        scheme = "smtps" if self.ssl else "smtp"
        user = f"{self.username}@" if self.username else ""
        tls = "?starttls=1" if self.starttls else ""
        return f"{scheme}://{user}{self.host}:{self.port}{tls}"


def parse_smtp_url(url: str) -> SmtpSettings | None:
    """Read `smtp://[user:pass@]host[:port][?starttls=1]` or `smtps://…`; None when empty.

    Refuses (MailConfigError) an unknown scheme or option, a missing host, a bad port,
    and a password that would cross the network in clear (plain smtp:// to a host that
    is not loopback).
    """
    url = url.strip()
    if not url:
        return None
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise MailConfigError(f"WALLET_SMTP_URL must start with smtp:// or smtps:// (got"
                              f" {scheme or 'no scheme'!r})")
    try:
        port = parts.port or SCHEMES[scheme]
    except ValueError:
        raise MailConfigError("WALLET_SMTP_URL has a bad port") from None
    host = parts.hostname or ""
    if not host:
        raise MailConfigError("WALLET_SMTP_URL has no host (smtp://host:587)")
    if parts.path not in ("", "/") or parts.fragment:
        raise MailConfigError("WALLET_SMTP_URL takes no path (smtp://user:pass@host:587"
                              "?starttls=1)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - {"starttls"}
    if unknown:
        raise MailConfigError(f"WALLET_SMTP_URL: unknown option {sorted(unknown)[0]!r}"
                              " (only starttls=1 or 0)")
    flag = options.get("starttls", "0").lower()
    if flag not in ("1", "0", "true", "false", "yes", "no"):
        raise MailConfigError("WALLET_SMTP_URL: starttls must be 1 or 0")
    starttls = flag in ("1", "true", "yes")
    ssl = scheme == "smtps"
    if ssl and starttls:
        raise MailConfigError("WALLET_SMTP_URL: smtps:// is TLS already; starttls=1 is for"
                              " smtp://")
    username, password = unquote(parts.username or ""), unquote(parts.password or "")
    if password and not (ssl or starttls or is_loopback(host)):
        raise MailConfigError("WALLET_SMTP_URL would send its password in clear: add"
                              " ?starttls=1 or use smtps://")
    return SmtpSettings(host=host, port=port, ssl=ssl, starttls=starttls,
                        username=username, password=password)


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (no network between us and it)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_sender(value: str) -> Address:
    """Read WALLET_MAIL_FROM (`Name <addr@host>` or `addr@host`), or MailConfigError."""
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise MailConfigError("WALLET_MAIL_FROM must be one line")
    name, addr = parseaddr(value.strip())
    local, _, domain = addr.rpartition("@")
    if not local or not domain or " " in addr:
        raise MailConfigError(f"WALLET_MAIL_FROM must be an address like"
                              f" 'Compute Credits <credits@example.com>' (got {value!r})")
    try:
        return Address(display_name=name, username=local, domain=domain)
    except ValueError as err:
        raise MailConfigError(f"WALLET_MAIL_FROM: {err}") from None


def default_sender(base_url: str) -> str:
    """`Compute Credits <no-reply@HOST>`, HOST from WALLET_BASE_URL (no WALLET_MAIL_FROM)."""
    host = urlsplit(base_url).hostname or "localhost"
    if "." not in host and not host.startswith("["):
        host = "localhost"
    return f"Compute Credits <no-reply@{host}>"


def one_line(text: str, limit: int = MAX_SUBJECT) -> str:
    """Text fit for a header: every control, format or line/paragraph separator becomes
    a space (CR and LF included: no header can be smuggled in), runs of spaces one."""
    cleaned = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c
                      for c in text)
    return " ".join(cleaned.split())[:limit]


# -- the messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Draft:
    """A message's words: its subject and plain-text body."""

    subject: str
    text: str


def _draft(subject: str, *paragraphs: str) -> Draft:
    return Draft(one_line(subject), "\n\n".join(paragraphs) + "\n")


def compose_invitation(*, org: str, link: str, days: int) -> Draft:
    """The invitation to join an organisation (its link works once, for `days`)."""
    org = one_line(org)
    return _draft(f"{org} invites you to Compute Credits",
                  f"{org} has added you to its Compute Credits wallet.",
                  f"Join with this link (it works once, for {days} days):\n{link}",
                  "With it you choose a password, or confirm with the one of the Compute"
                  " Credits account you already have.",
                  "If you did not expect this, ignore this message.")


def compose_reset(*, org: str, link: str, minutes: int) -> Draft:
    """A password reset link an administrator of `org` issued."""
    org = one_line(org)
    return _draft(f"{org}: reset your Compute Credits password",
                  f"An administrator of {org} issued a password reset link for your"
                  " Compute Credits account.",
                  f"Choose a new password with this link (it works once, for {minutes}"
                  f" minutes):\n{link}",
                  f"Using it signs you out everywhere and keeps your membership of {org}"
                  " only: other organisations you belong to will invite you again.",
                  "If you did not ask for this, ignore this message: your password stays"
                  " as it is.")


def compose_vested(*, org: str, amount: str, on: date, link: str, tranches: int = 1) -> Draft:
    """Credits of a grant vested: `tranches` of them at once, the last due `on`
    (`amount`, their sum, already formatted for people)."""
    org = one_line(org)
    when = (f"on {on.isoformat()}" if tranches == 1 else
            f"({tranches} instalments, the last due on {on.isoformat()})")
    return _draft(f"{org}: {amount} of your credits vested",
                  f"{amount} of your compute credits at {org} vested {when} and are yours"
                  " to spend.",
                  f"Your wallet: {link}")


def compose_redeemed(*, org: str, amount: str, by: str, link: str) -> Draft:
    """A note the person exported was redeemed by another organisation."""
    org, by = one_line(org), one_line(by, 300)
    return _draft(f"{org}: your note of {amount} was redeemed",
                  f"The credit note of {amount} you exported from {org} has been"
                  f" redeemed.\n\nRedeemed by: {by}\nThe note: {link}",
                  "If you did not present this note yourself, tell an administrator of"
                  f" {org}.")


def compose_alumni(*, org: str, closes_on: date, days_left: int, link: str) -> Draft:
    """The alumni window of a former employee closes soon: export the credits."""
    org = one_line(org)
    when = "today" if days_left <= 0 else (
        "tomorrow" if days_left == 1 else f"in {days_left} days")
    return _draft(f"{org}: your alumni window closes {when} — export your credits",
                  f"Your access to your compute credits at {org} ends after"
                  f" {closes_on.isoformat()} ({when}).",
                  f"Export what you have left as a credit note before then: {link}",
                  "A note is yours to keep: another organisation that trusts"
                  f" {org} can honour it.")


# -- building and retrying ------------------------------------------------------------------


def build(*, sender: Address, to_addr: str, to_name: str, draft: Draft, key: str,
          now: datetime) -> EmailMessage:
    """The message to send. Its Message-ID comes from the outbox key, so a retry sends
    the same message (a receiver may drop the copy). Raises ValueError for an address
    the email package refuses."""
    local, _, domain = to_addr.rpartition("@")
    msg = EmailMessage()  # policy.default: a header value with CR or LF raises
    msg["From"] = sender
    msg["To"] = Address(display_name=one_line(to_name), username=local, domain=domain)
    msg["Subject"] = one_line(draft.subject)
    msg["Date"] = format_datetime(now)
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    msg["Message-ID"] = f"<{digest}@{sender.domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies, please
    msg.set_content(draft.text)
    return msg


def retry_delay(attempts: int, *, first: int, most: int) -> int:
    """Seconds to wait after the `attempts`-th failed try: first, doubling, at most `most`."""
    return min(most, first * (1 << max(0, min(attempts - 1, 30))))
