"""Verify notes and presentations as an organisation would (no change to notes or nonces).

The report (docs/protocol.md) lists every check that ran, in order, with the status check last;
the first failure stops the rest. `valid` is true only when every check passed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of verifying one note or presentation: the checks that ran, in order."""

    checks: tuple[tuple[str, bool], ...] = ()
    errors: tuple[WalletError, ...] = ()
    note: notes.Note | None = None
    claims: dict[str, Any] | None = None  # of a note that did not verify, if it decodes

    @property
    def valid(self) -> bool:
        return not self.errors and bool(self.checks) and all(ok for _, ok in self.checks)

    def with_status(self, error: WalletError | None = None) -> Report:
        """This report with the status check last (failed with `error`)."""
        return replace(self, checks=(*self.checks, ("status", error is None)),
                       errors=self.errors if error is None else (*self.errors, error))

    def as_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "errors": [e.as_dict() for e in self.errors],
            "checks": [{"name": name, "ok": ok} for name, ok in self.checks],
            "note": self.note.as_json() if self.note else self.claims,
        }


@dataclass(frozen=True, slots=True)
class Verified:
    """The verify endpoint's answer: the report of a note (or of a body it could not
    read), or one report per presentation (`presentations`)."""

    reports: tuple[Report, ...]
    presentations: bool = False

    @property
    def valid(self) -> bool:
        return all(r.valid for r in self.reports)

    def as_json(self) -> dict[str, Any]:
        """One report; for presentations, the first invalid one (or the first) with every
        presentation's errors, each with its `index`, and each report in `results`."""
        if not self.presentations:
            return self.reports[0].as_json()
        first = next((r for r in self.reports if not r.valid), self.reports[0])
        return {**first.as_json(), "valid": self.valid,
                "errors": [{**e.as_dict(), "index": i}
                           for i, r in enumerate(self.reports) for e in r.errors],
                "results": [r.as_json() for r in self.reports]}


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
    signed = lookups.verify(lambda d: [_signed(d, text, presentation=presentation,
                                               nonce_ok=nonce_ok, now=now)
                                       for text, presentation in items])
    staged = [_status_source(lookups.directory, r) for r in signed]
    lookups.fetch_lists({uri: r.note.issuer for r, uri in staged
                         if uri is not None and r.note is not None})
    return [r if uri is None else _listed(lookups, r) for r, uri in staged]


def check_texts(session: Session, *, slug: str, texts: list[str]) -> list[Report]:
    """Reports for notes and presentations told apart by their form (`wallet note verify`)."""
    org = org_or_404(session, slug)
    items = [(text, notes.split(text)[1] is not None) for text in texts]
    return check(session, org=org, items=items, nonce_ok=nonce_checker(session, org))


def _signed(directory: Directory, text: object, *, presentation: bool, nonce_ok: Any,
            now: int) -> Report:
    """Every check of one note or presentation but its status (reads only: may run twice)."""
    checks: list[tuple[str, bool]] = []  # the core appends each check as it runs
    try:
        if presentation:
            note = notes.verify_presentation(
                text, resolve=directory.resolve, audience=directory.own_id, now=now,
                nonce_ok=nonce_ok, checks=checks).note
        else:
            note = notes.verify(text, resolve=directory.resolve, now=now, checks=checks)
    except WalletError as err:
        claims = None
        with contextlib.suppress(WalletError):
            claims = notes.decode(text)["claims"]
        return Report(tuple(checks), (err,), claims=claims)
    return Report(tuple(checks), note=note)


def _status_source(directory: Directory, report: Report) -> tuple[Report, str | None]:
    """What our records say of a verified note; the status list to consult, if any."""
    if report.errors or report.note is None:
        return report, None
    try:
        uri = directory.status_source(report.note)
    except WalletError as err:
        return report.with_status(err), None
    if uri is None:  # our own note: our records decided
        return report.with_status(), None
    return report, uri


def _listed(lookups: Lookups, report: Report) -> Report:
    """The report with what the status list says of its note."""
    assert report.note is not None
    try:
        lookups.check_status(report.note)
    except WalletError as err:
        return report.with_status(err)
    return report.with_status()


def verify_as(session: Session, *, slug: str, body: Any,
              person_id: int | None = None) -> Verified:
    """Answer the verify endpoint's report for any JSON body (no note or nonce changes).

    `person_id`: the authenticated caller, whose bound nonces are accepted too.
    """
    org = org_or_404(session, slug)
    try:
        if not isinstance(body, dict) or ("note" in body) == ("presentations" in body):
            raise Malformed('send {"note": "<note>"} or {"presentations": ["<presentation>", …]}')
        if "note" in body:
            return Verified(tuple(check(session, org=org, items=[(body["note"], False)])))
        items = body["presentations"]
        if not isinstance(items, list) or not items:
            raise Malformed("presentations must be a non-empty list")
        if len(items) > MAX_PRESENTATIONS:
            raise TooLarge(f"at most {MAX_PRESENTATIONS} presentations per request")
    except WalletError as err:
        return Verified((Report((("format", False),), (err,)),))
    nonce_ok = nonce_checker(session, org, person_id=person_id)
    reports = check(session, org=org, items=[(item, True) for item in items],
                    nonce_ok=nonce_ok)
    return Verified(tuple(reports), presentations=True)
