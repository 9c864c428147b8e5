"""Email through SMTP (WALLET_SMTP_URL), from an outbox (issue 15, "Notifications").

Every message is a row of `mail_message` with a unique key naming its event
(`invite:<token hash>`, `reset:<token hash>`, `vested:<first tranche of a vesting
run>`, `redeemed:<note>`,
`alumni:<membership>:14d`), so it is queued once however often, or however
concurrently, its cause is seen. Invitations and reset links are queued by the action
that makes them, in its transaction (`queue_link`); the other three by `sweep`, driven by
rows: tranches vested and notes redeemed since the sweep last looked (with an overlap,
for transactions that committed late), and memberships whose alumni window closes within
14 days.

`send_due` (the every-minute job "send_mail", wallet/jobs.py) runs the sweep, then sends
what is due: each try is claimed by a conditional update (which also sets the next try:
a worker that dies mid-send is retried then), sent with no transaction open, then the
row is finished (sent; failed after WALLET_MAIL_MAX_ATTEMPTS tries, or at once when the
server refuses the recipient for good; expired when its link no longer works) or given
its next try (WALLET_MAIL_RETRY_SECONDS, doubling, at most _MAX_SECONDS). A finished
row's body is blanked: it may hold a one-time link.

With WALLET_SMTP_URL unset, messages are "sent" to the log (development): one INFO
record each on the logger `wallet_mail`, its first line the recipient and subject, then
the body, one-time links included — the one place a link is written to a log, which is
why that logger is outside the redacted `wallet.*` tree, and why in production the body
is left out (the administrator still sees the link on the page).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import smtplib
import socket
import ssl
import threading
import time
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.actions._base import atomic, commit
from wallet.core import mail
from wallet.core.money import format_display
from wallet.models import MailMessage, Membership, Organization, Person
from wallet.store import mail as store

log = logging.getLogger(__name__)
# The log-only transport's logger: outside `wallet.*` (whose records are redacted) on
# purpose, since its records are the messages, links included. Development only.
outbox_log = logging.getLogger("wallet_mail")


class _UnlessConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """Standard error, while the process has configured no logging of its own (`wallet
    demo`, `flask run`): else log-only mail would be dropped with Python's INFO records.
    Once a root handler exists (`wallet worker`, gunicorn, pytest), that one shows it."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


if not outbox_log.handlers:
    outbox_log.addHandler(_UnlessConfigured())
    outbox_log.setLevel(logging.INFO)

QUEUED, SENT, FAILED, EXPIRED = "queued", "sent", "failed", "expired"
OVERLAP = timedelta(minutes=10)  # a transaction may commit a little after its clock read
FIRST_LOOK = timedelta(days=1)  # how far back a sweep's first run looks
ALUMNI_NOTICE_DAYS = 14
ALUMNI_EVERY = timedelta(hours=1)  # windows close by the day: no need to look each minute
ALUMNI_HORIZON_DAYS = 3660  # the longest alumni window the sweep looks for
LEASE_SLACK = timedelta(seconds=60)  # a claimed try is retried after its deadline and this
SWEEP_PAGE = 500  # rows a sweep reads at a time


# -- queueing --------------------------------------------------------------------------------


def log_only() -> bool:
    """True when no SMTP server is configured: messages go to the log."""
    return not str(current_app.config.get("WALLET_SMTP_URL") or "").strip()


def link(path: str) -> str:
    """An absolute link into this instance (WALLET_BASE_URL)."""
    return f"{str(current_app.config['WALLET_BASE_URL']).rstrip('/')}{path}"


def queue(session: Session, *, key: str, kind: str, org: Organization | None,
          to_addr: str, to_name: str, draft: mail.Draft,
          expires_at: datetime | None = None) -> bool:
    """Put a message in the outbox, in the caller's transaction, unless its key is there
    already; True when this call queued it."""
    now = clock.now()
    return store.insert(session, {
        "key": key[:200], "org_id": org.id if org is not None else None, "kind": kind,
        "to_addr": to_addr, "to_name": mail.one_line(to_name), "subject": draft.subject,
        "body": draft.text, "state": QUEUED, "attempts": 0, "next_attempt_at": now,
        "expires_at": expires_at, "last_error": "", "created_at": now}) is not None


def link_key(purpose: str, token_hash: str) -> str:
    """The outbox key of a link's email: `invite:<token hash>` or `reset:<token hash>`."""
    return f"{'invite' if purpose == 'join' else 'reset'}:{token_hash}"


def queue_link(session: Session, *, purpose: str, org: Organization, person: Person,
               membership: Membership, token: str, token_hash: str,
               expires_at: datetime, lifetime: timedelta) -> bool:
    """Queue the email of an invitation (`join`) or password reset link just issued."""
    if purpose == "join":
        kind, draft = "invite", mail.compose_invitation(
            org=org.name, link=link(f"/invite/{token}"), days=lifetime.days)
    else:
        kind, draft = "reset", mail.compose_reset(
            org=org.name, link=link(f"/reset/{token}"),
            minutes=int(lifetime.total_seconds() // 60))
    return queue(session, key=link_key(purpose, token_hash), kind=kind, org=org,
                 to_addr=person.email, to_name=membership.name or person.name, draft=draft,
                 expires_at=expires_at)


# -- the sweeps: what rows tell of ------------------------------------------------------------


def sweep(session: Session) -> int:
    """Queue the messages that rows call for and are not queued yet; how many were
    (safe twice, or in two workers at once: each message's key is unique)."""
    now = clock.now()
    with atomic(session):
        count = _vested(session, now) + _redeemed(session, now)
    with atomic(session):
        count += _alumni(session, now)
    return count


def _since(session: Session, name: str, now: datetime) -> datetime:
    last = store.swept_to(session, name=name)
    return (now - FIRST_LOOK) if last is None else last - OVERLAP


def _pages(fetch: Any, since: datetime, moment: str) -> list[Any]:
    """Every row a sweep's query finds since `since`, page by page (keyset: however many
    vested in one minute, one sweep reads them all and its mark moves on)."""
    found: list[Any] = []
    after = None
    while True:
        page = fetch(since=since, after=after, limit=SWEEP_PAGE)
        found.extend(page)
        if len(page) < SWEEP_PAGE:
            return found
        last = page[-1][0]
        after = (getattr(last, moment), last.id)


def _vested(session: Session, now: datetime) -> int:
    """One message per vesting run of a grant: the tranches one claim vested together
    (same grant, same instant; they commit together, so every sweep sees the same run),
    keyed by the run's first tranche."""
    rows = _pages(functools.partial(store.vested_since, session),
                  _since(session, "vested", now), "settled_at")
    runs: dict[tuple[int, datetime | None], list[Any]] = {}
    for row in rows:
        runs.setdefault((row[0].grant_id, row[0].settled_at), []).append(row)
    keys = {run: f"vested:{min(r[0].id for r in group)}" for run, group in runs.items()}
    taken = store.taken(session, list(keys.values()))
    count = 0
    for run, group in runs.items():
        if keys[run] in taken:
            continue
        _, org, person, name = group[0]
        draft = mail.compose_vested(
            org=org.name, amount=format_display(sum(r[0].amount for r in group),
                                                org.currency),
            on=max(r[0].due_on for r in group), tranches=len(group),
            link=link(f"/orgs/{org.slug}/wallet"))
        count += queue(session, key=keys[run], kind="vested", org=org,
                       to_addr=person.email, to_name=name or person.name, draft=draft)
    store.advance(session, name="vested", to=now)
    return count


def _redeemed(session: Session, now: datetime) -> int:
    rows = _pages(functools.partial(store.redeemed_since, session),
                  _since(session, "redeemed", now), "redeemed_at")
    taken = store.taken(session, [f"redeemed:{n.id}" for n, *_ in rows])
    count = 0
    for note, org, person, name in rows:
        key = f"redeemed:{note.id}"
        if key in taken:
            continue
        draft = mail.compose_redeemed(org=org.name, amount=format_display(
            note.amount, note.currency), by=note.redeemed_by or "another organisation",
            link=link(f"/orgs/{org.slug}/notes/{note.jti}"))
        count += queue(session, key=key, kind="redeemed", org=org, to_addr=person.email,
                       to_name=name or person.name, draft=draft)
    store.advance(session, name="redeemed", to=now)
    return count


def _alumni(session: Session, now: datetime) -> int:
    last = store.swept_to(session, name="alumni")
    if last is not None and now - last < ALUMNI_EVERY:
        return 0
    today = now.date()
    count = 0
    for m, org, person in store.ended_since(
            session, on_or_after=today - timedelta(days=ALUMNI_HORIZON_DAYS)):
        assert m.ended_on is not None
        closes: date = m.ended_on + timedelta(days=org.alumni_days)
        days_left = (closes - today).days
        if not 0 <= days_left <= ALUMNI_NOTICE_DAYS:
            continue
        draft = mail.compose_alumni(org=org.name, closes_on=closes, days_left=days_left,
                                    link=link(f"/orgs/{org.slug}/export"))
        count += queue(session, key=f"alumni:{m.id}:{ALUMNI_NOTICE_DAYS}d", kind="alumni",
                       org=org, to_addr=person.email, to_name=m.name or person.name,
                       draft=draft)
    store.advance(session, name="alumni", to=now)
    return count


# -- sending ---------------------------------------------------------------------------------


class Permanent(Exception):
    """A refusal that trying again cannot change (the recipient refused for good)."""


def send_due(session: Session) -> int:
    """Send the messages waiting in the outbox; how many were tried."""
    queued = sweep(session)
    if queued:
        log.info("mail: %d message(s) queued by the sweep", queued)
    due = store.due(session, now=clock.now())
    commit(session)  # end the read: no transaction stays open while a server answers
    return sum(1 for message_id in due if send(session, message_id=message_id) is not None)


def send_now(session: Session, *, key: str) -> str | None:
    """Send the message of `key` now, if it is queued and due (the demo's invitations);
    the state it is in afterwards, None when there is none to send."""
    row = store.by_key(session, key=key)
    commit(session)
    return None if row is None or row.id is None else send(session, message_id=row.id)


def send(session: Session, *, message_id: int) -> str | None:
    """Try one message once, if its try is due; the state it is in afterwards, or None
    when it was not due (another worker took the try, or it is finished)."""
    cfg = current_app.config
    now = clock.now()
    timeout = float(cfg["WALLET_SMTP_TIMEOUT"])
    with atomic(session):
        row = store.by_id(session, message_id=message_id)
        if row is None or row.state != QUEUED or row.next_attempt_at > now:
            return None
        if row.expires_at is not None and row.expires_at <= now:
            store.finish(session, message_id=message_id, to=EXPIRED, now=now,
                         why="its link expired before it could be sent")
            return EXPIRED
        lease = now + timedelta(seconds=timeout) + LEASE_SLACK
        if not store.claim(session, message_id=message_id, now=now, lease_until=lease):
            return None
    attempts = row.attempts + 1
    via = "log" if log_only() else "smtp"
    try:
        _deliver(row, timeout=timeout)
    except Permanent as err:
        return _close(session, message_id, FAILED, why=str(err))
    except Exception as err:  # a worker goes on to the next message, whatever happened
        if not isinstance(err, OSError | smtplib.SMTPException):
            log.exception("mail %s: unexpected error while sending", row.key)
        why = _describe(err)
        if attempts >= int(cfg["WALLET_MAIL_MAX_ATTEMPTS"]):
            log.warning("mail %s to %s given up after %d tries: %s", row.key, row.to_addr,
                        attempts, why)
            return _close(session, message_id, FAILED, why=why)
        wait = mail.retry_delay(attempts, first=int(cfg["WALLET_MAIL_RETRY_SECONDS"]),
                                most=int(cfg["WALLET_MAIL_RETRY_MAX_SECONDS"]))
        log.warning("mail %s to %s not sent (try %d), again in %d s: %s", row.key,
                    row.to_addr, attempts, wait, why)
        with atomic(session):
            store.retry_at(session, message_id=message_id,
                           at=clock.now() + timedelta(seconds=wait), why=why)
        return QUEUED
    return _close(session, message_id, SENT, via=via)


def _close(session: Session, message_id: int, to: str, *, why: str = "",
           via: str | None = None) -> str:
    with atomic(session):
        if not store.finish(session, message_id=message_id, to=to, now=clock.now(),
                            why=why, via=via):
            found = store.by_id(session, message_id=message_id)  # finished by another try
            return found.state if found is not None else to
    return to


def _deliver(row: MailMessage, *, timeout: float) -> None:
    """Hand one message to the SMTP server, or to the log when there is none."""
    cfg = current_app.config
    draft = mail.Draft(row.subject, row.body)
    try:
        msg = mail.build(sender=mail.parse_sender(str(cfg["WALLET_MAIL_FROM"])),
                         to_addr=row.to_addr, to_name=row.to_name, draft=draft, key=row.key,
                         now=clock.now())
    except ValueError as err:  # an address the email package refuses
        raise Permanent(f"cannot be written as an email: {err}"[:300]) from None
    settings = mail.parse_smtp_url(str(cfg.get("WALLET_SMTP_URL") or ""))
    if settings is None:
        _to_log(row, msg)
        return
    smtp_send(settings, msg, timeout=timeout)


def _to_log(row: MailMessage, msg: EmailMessage) -> None:
    if current_app.config["WALLET_ENV"] == "production":
        body = "  (body not logged in production; set WALLET_SMTP_URL to send email)"
    else:
        body = "\n".join("  " + line for line in row.body.rstrip("\n").split("\n"))
    outbox_log.info("mail not sent, WALLET_SMTP_URL is unset: to %s, subject %r [%s]\n%s",
                    msg["To"], row.subject, row.key, body)


def tls_context() -> ssl.SSLContext:
    """How the server's certificate is checked: the system's CAs, for the URL's host."""
    return ssl.create_default_context()


def smtp_send(settings: mail.SmtpSettings, msg: EmailMessage, *, timeout: float) -> None:
    """Send one message within a total deadline of `timeout` seconds (connect, TLS,
    sign-in, every command and answer): a server that answers a byte at a time is cut
    off when the deadline passes. Raises OSError or smtplib.SMTPException (`Permanent`
    when every recipient was refused for good)."""
    deadline = time.monotonic() + timeout
    context = tls_context()
    client: smtplib.SMTP = (smtplib.SMTP_SSL(timeout=timeout, context=context)
                            if settings.ssl else smtplib.SMTP(timeout=timeout))
    # Made unconnected (so that the deadline's timer can reach it from the start), it
    # needs the name its TLS checks the certificate for: what SMTP(host) would have set.
    client._host = settings.host
    cut = threading.Event()

    def cut_off() -> None:  # the deadline: end the connection under whatever step waits
        cut.set()
        sock = client.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def step() -> None:  # each step gets what is left of the deadline, no more
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within the {timeout:g} s deadline")
        if client.sock is not None:
            client.sock.settimeout(left)

    timer = threading.Timer(timeout, cut_off)
    timer.daemon = True
    timer.start()
    try:
        step()
        client.connect(settings.host, settings.port)
        if settings.starttls:
            step()
            client.starttls(context=context)
            step()
            client.ehlo()
        if settings.username:
            step()
            client.login(settings.username, settings.password)
        step()
        try:
            client.send_message(msg)
        except smtplib.SMTPRecipientsRefused as err:
            if all(code >= 500 for code, _ in err.recipients.values()):
                raise Permanent("the server refused the recipient: " + "; ".join(
                    f"{code} {text.decode(errors='replace')}"
                    for code, text in err.recipients.values())[:250]) from None
            raise
        except smtplib.SMTPDataError as err:  # 5xx to the message itself: for good
            if err.smtp_code >= 500:
                raise Permanent(f"the server refused the message: {_describe(err)}"[:300]
                                ) from None
            raise
        try:  # the server took the message: a lost goodbye must not send it twice
            step()
            client.quit()
        except (OSError, smtplib.SMTPException):
            pass
    except (OSError, smtplib.SMTPException):
        if cut.is_set() or time.monotonic() >= deadline - 0.05:  # the timer, or a read's
            # own timeout (what was left of the deadline), whichever came first
            raise TimeoutError(f"no complete answer within the {timeout:g} s deadline"
                               ) from None
        raise
    finally:
        timer.cancel()
        client.close()


def _describe(err: BaseException) -> str:
    """Why a try failed, for the log and the row (no password is ever in it)."""
    if isinstance(err, smtplib.SMTPResponseException):
        text = err.smtp_error.decode(errors="replace") if isinstance(
            err.smtp_error, bytes) else str(err.smtp_error)
        return f"{type(err).__name__}: {err.smtp_code} {text}"[:300]
    return f"{type(err).__name__}: {err}"[:300]
