"""Verify notes and presentations as an organisation would (no side effects).

The report (DESIGN §7) lists every check that ran, in order, with the status check last;
the first failure stops the rest. `valid` is true only when every check passed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from wallet.actions import nonces as nonce_actions
from wallet.actions._base import org_or_404
from wallet.core import notes
from wallet.core.errors import Malformed, NonceInvalid, TooLarge, WalletError
from wallet.federation import Directory
from wallet.models import Organization

MAX_PRESENTATIONS = 50


@dataclass
class Report:
    """The outcome of verifying one note or presentation."""

    checks: list[tuple[str, bool]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    note: notes.Note | None = None
    decoded: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        return not self.errors and bool(self.checks) and all(ok for _, ok in self.checks)

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": self.errors,
            "checks": [{"name": name, "ok": ok} for name, ok in self.checks],
            "note": self.note.as_json() if self.note else
            (self.decoded["claims"] if self.decoded else None),
        }


def nonce_checker(session: Session, org: Organization, *, person_id: int | None = None,
                  consumer: str | None = None) -> Any:
    """A `nonce_ok` callable that checks (never consumes) this organisation's nonces.

    Anonymous nonces pass, and with `person_id` (the authenticated caller) the nonces
    bound to that person too.
    """
    assert org.id is not None
    org_id = org.id

    def nonce_ok(value: str) -> None:
        if not nonce_actions.usable(session, org_id=org_id, value=value, person_id=person_id,
                                    consumer=consumer):
            raise NonceInvalid(
                "this organisation did not issue the nonce, or it is used or expired (a"
                " nonce asked for by an engineer checks only with that engineer's token"
                " or session)")

    return nonce_ok


def check_one(directory: Directory, text: object, *, presentation: bool,
              nonce_ok: Any = None, now: int | None = None) -> Report:
    """Verify one note or presentation for the directory's organisation."""
    report = Report()
    moment = int(time.time()) if now is None else now
    try:
        if presentation:
            report.note = notes.verify_presentation(
                text, resolve=directory.resolve, audience=directory.own_id, now=moment,
                nonce_ok=nonce_ok, checks=report.checks).note
        else:
            report.note = notes.verify(text, resolve=directory.resolve, now=moment,
                                       checks=report.checks)
        try:
            directory.check_status(report.note)
        except WalletError:
            report.checks.append(("status", False))
            raise
        report.checks.append(("status", True))
    except WalletError as err:
        report.errors.append(err.as_dict())
        if report.note is None:
            with contextlib.suppress(WalletError):
                report.decoded = notes.decode(text)
    return report


def verify_as(session: Session, *, slug: str, body: Any,
              person_id: int | None = None) -> dict[str, Any]:
    """Answer the verify endpoint's report for any JSON body.

    `person_id`: the authenticated caller, whose bound nonces are accepted too.
    """
    org = org_or_404(session, slug)
    directory = Directory(session, org)
    try:
        if not isinstance(body, dict) or ("note" in body) == ("presentations" in body):
            raise Malformed('send {"note": "<note>"} or {"presentations": ["<presentation>", …]}')
        if "note" in body:
            return check_one(directory, body["note"], presentation=False).as_json()
        items = body["presentations"]
        if not isinstance(items, list) or not items:
            raise Malformed("presentations must be a non-empty list")
        if len(items) > MAX_PRESENTATIONS:
            raise TooLarge(f"at most {MAX_PRESENTATIONS} presentations per request")
    except WalletError as err:
        return Report(errors=[err.as_dict()], checks=[("format", False)]).as_json()
    nonce_ok = nonce_checker(session, org, person_id=person_id)
    reports = [check_one(directory, item, presentation=True, nonce_ok=nonce_ok)
               for item in items]
    first = next((r for r in reports if not r.valid), reports[0])
    summary = first.as_json()
    summary["valid"] = all(r.valid for r in reports)
    summary["errors"] = [{**e, "index": i} for i, r in enumerate(reports) for e in r.errors]
    summary["results"] = [r.as_json() for r in reports]
    return summary
