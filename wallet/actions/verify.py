"""Verify notes and presentations as an organisation would (no change to notes or nonces).

The report (docs/protocol.md) lists every check that ran, in order, with the status check last;
the first failure stops the rest. `valid` is true only when every check passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from wallet import clock
from wallet.actions import nonces as nonce_actions
from wallet.actions._base import org_or_404
from wallet.actions.lookups import Lookups
from wallet.core import notes
from wallet.core.errors import Malformed, NonceInvalid, TooLarge, WalletError
from wallet.directory import Directory
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


def check(session: Session, *, org: Organization, items: Sequence[tuple[object, bool]],
          nonce_ok: Any = None) -> list[Report]:
    """Verify notes (False) or presentations (True) as `org` would, every check in order
    and the status check last. Nothing is written but a re-pin: re-pinning a stale
    issuer and fetching status lists are network steps between transactions (`Lookups`).
    """
    now = clock.unix()
    lookups = Lookups(session, org)
    reports = lookups.verify(lambda d: [_signed(d, text, presentation=presentation,
                                                nonce_ok=nonce_ok, now=now)
                                        for text, presentation in items])
    sources = [_status_source(lookups.directory, r) for r in reports]
    lookups.fetch_lists({uri: r.note.issuer for r, uri in zip(reports, sources, strict=True)
                         if uri is not None and r.note is not None})
    for report, uri in zip(reports, sources, strict=True):
        if uri is not None:
            _listed(lookups, report)
    return reports


def check_texts(session: Session, *, slug: str, texts: list[str]) -> list[dict[str, Any]]:
    """Reports for notes and presentations told apart by their form (`wallet note verify`)."""
    org = org_or_404(session, slug)
    items = [(text, notes.split(text)[1] is not None) for text in texts]
    return [r.as_json() for r in check(session, org=org, items=items,
                                       nonce_ok=nonce_checker(session, org))]


def _signed(directory: Directory, text: object, *, presentation: bool, nonce_ok: Any,
            now: int) -> Report:
    """Every check of one note or presentation but its status (reads only: may run twice)."""
    report = Report()
    try:
        if presentation:
            report.note = notes.verify_presentation(
                text, resolve=directory.resolve, audience=directory.own_id, now=now,
                nonce_ok=nonce_ok, checks=report.checks).note
        else:
            report.note = notes.verify(text, resolve=directory.resolve, now=now,
                                       checks=report.checks)
    except WalletError as err:
        report.errors.append(err.as_dict())
        if report.note is None:
            with contextlib.suppress(WalletError):
                report.decoded = notes.decode(text)
    return report


def _status_source(directory: Directory, report: Report) -> str | None:
    """What our records say of a verified note; the status list to consult, if any."""
    if report.errors or report.note is None:
        return None
    try:
        uri = directory.status_source(report.note)
    except WalletError as err:
        _status_failed(report, err)
        return None
    if uri is None:  # our own note: our records decided
        report.checks.append(("status", True))
    return uri


def _listed(lookups: Lookups, report: Report) -> None:
    assert report.note is not None
    try:
        lookups.check_status(report.note)
    except WalletError as err:
        _status_failed(report, err)
        return
    report.checks.append(("status", True))


def _status_failed(report: Report, err: WalletError) -> None:
    report.checks.append(("status", False))
    report.errors.append(err.as_dict())


def verify_as(session: Session, *, slug: str, body: Any,
              person_id: int | None = None) -> dict[str, Any]:
    """Answer the verify endpoint's report for any JSON body (no note or nonce changes).

    `person_id`: the authenticated caller, whose bound nonces are accepted too.
    """
    org = org_or_404(session, slug)
    try:
        if not isinstance(body, dict) or ("note" in body) == ("presentations" in body):
            raise Malformed('send {"note": "<note>"} or {"presentations": ["<presentation>", …]}')
        if "note" in body:
            return check(session, org=org, items=[(body["note"], False)])[0].as_json()
        items = body["presentations"]
        if not isinstance(items, list) or not items:
            raise Malformed("presentations must be a non-empty list")
        if len(items) > MAX_PRESENTATIONS:
            raise TooLarge(f"at most {MAX_PRESENTATIONS} presentations per request")
    except WalletError as err:
        return Report(errors=[err.as_dict()], checks=[("format", False)]).as_json()
    nonce_ok = nonce_checker(session, org, person_id=person_id)
    reports = check(session, org=org, items=[(item, True) for item in items],
                    nonce_ok=nonce_ok)
    first = next((r for r in reports if not r.valid), reports[0])
    summary = first.as_json()
    summary["valid"] = all(r.valid for r in reports)
    summary["errors"] = [{**e, "index": i} for i, r in enumerate(reports) for e in r.errors]
    summary["results"] = [r.as_json() for r in reports]
    return summary
