"""Forms that survive the Back button: one idempotency key per form, recent submissions kept.

A form that moves money gets its idempotency key at its first render and keeps it, in
the session, until a submission of that form is recorded: a page shown again before
that (reload, Back, a validation error) carries the same key, so sending it twice
records once (the action's own idempotency does that, in the database).

After a success the next render gets a fresh key, so Back + "send again" would be a new
request. To stop that honest slip, each recorded submission is remembered for a window
(`WALLET_RESUBMIT_WINDOW_SECONDS`, 10 minutes): the same values sent again by the same
person inside it are refused with what was recorded, and go through only when the
person ticks "record another identical one" on that answer.

The session holds only keys, a hash of the non-secret values (passwords and files never
enter it), a time and a short description; it is bounded so that a signed-cookie
session stays well under the 4 KiB a browser keeps.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from flask import current_app, request, session

from wallet import clock

PENDING = "_form_keys"  # form id -> the key its next submission carries
RECORDED = "_form_done"  # [form id, key, fingerprint, epoch seconds, description], oldest first
MAX_PENDING = 16
MAX_RECORDED = 10
MAX_DESCRIPTION = 120


@dataclass(frozen=True, slots=True)
class Recorded:
    """A submission of one form that was recorded a moment ago."""

    form_id: str
    key: str
    fingerprint: str
    at: int  # seconds since the epoch
    description: str

    def ago(self) -> str:
        """How long ago, in words ("just now", "3 minutes ago")."""
        seconds = max(clock.unix() - self.at, 0)
        if seconds < 60:
            return "just now"
        minutes = seconds // 60
        return f"{minutes} minute{'' if minutes == 1 else 's'} ago"


def form_id(form_name: str, prefix: str) -> str:
    """Name one form on one page: its class, prefix and the URL's arguments (org, person…)."""
    args = ",".join(f"{k}={v}" for k, v in sorted((request.view_args or {}).items()))
    return f"{form_name}:{prefix}:{args}"[:120]


def fingerprint(values: dict[str, str]) -> str:
    """A short hash of a submission's (non-secret, normalised) values."""
    text = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def pending_key(fid: str) -> str:
    """The key this form carries until a submission of it is recorded (made on first use)."""
    keys: dict[str, str] = dict(session.get(PENDING) or {})
    key = keys.get(fid)
    if key is None:
        key = secrets.token_hex(16)
        keys.pop(fid, None)
        keys[fid] = key
        while len(keys) > MAX_PENDING:  # the oldest form loses only its Back-proof key
            keys.pop(next(iter(keys)))
        session[PENDING] = keys
    return key


def renew_key(fid: str) -> str:
    """Give this form a fresh key (its old one is spent) and return it."""
    keys: dict[str, str] = dict(session.get(PENDING) or {})
    keys.pop(fid, None)
    session[PENDING] = keys
    return pending_key(fid)


def recent(fid: str) -> list[Recorded]:
    """This form's submissions recorded within the window, oldest first."""
    return [r for r in _records() if r.form_id == fid]


def remember(fid: str, *, key: str, fingerprint: str, description: str) -> None:
    """Note a recorded submission; the form's next render gets a fresh key."""
    now = clock.unix()
    rows = [[r.form_id, r.key, r.fingerprint, r.at, r.description] for r in _records()
            if not (r.form_id == fid and r.key == key)]
    rows.append([fid, key, fingerprint, now, description[:MAX_DESCRIPTION]])
    session[RECORDED] = rows[-MAX_RECORDED:]
    keys: dict[str, str] = dict(session.get(PENDING) or {})
    if keys.pop(fid, None) is not None:
        session[PENDING] = keys


def _records() -> list[Recorded]:
    window = int(current_app.config["WALLET_RESUBMIT_WINDOW_SECONDS"])
    oldest = clock.unix() - window
    found = []
    for row in session.get(RECORDED) or []:
        try:
            record = Recorded(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]))
        except (TypeError, ValueError, IndexError):
            continue  # a session written by another version: forget the entry
        if record.at > oldest:
            found.append(record)
    return found
