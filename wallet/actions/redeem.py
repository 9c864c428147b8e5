"""The issuer's side: another organisation redeems notes we issued, exactly once.

A redeem request is a JWS signed by the verifier B (an organisation in our trust list)
carrying at most eight presentations made for B. For each note, one transaction (a
savepoint per note when there are several): `active → redeemed` by a conditional update,
the redemption row with its signed receipt, and the posting `notes_outstanding →
payable:B`. A retry by the same B gets the receipt it was given (`replayed`), even for a
presentation that has aged since; anyone else `already_redeemed`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from wallet import clock
from wallet.actions import signing, webhooks
from wallet.actions._base import atomic, org_or_404
from wallet.actions.lookups import Lookups
from wallet.actions.notes import forget_status_tokens
from wallet.core import ledger, notes, redeem
from wallet.core.errors import (
    AlreadyRedeemed,
    Expired,
    HolderBindingFailed,
    Malformed,
    Revoked,
    UnknownNote,
    WalletError,
)
from wallet.core.money import Money
from wallet.directory import Directory
from wallet.models import Note, Organization
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import notes as note_store
from wallet.store import people

ISSUER_KB_MAX_AGE = 900  # the issuer accepts presentations B forwards up to 15 minutes late
# ...and, in a request marked "pending" (B held them while we could not be reached), of
# any age: the note's own validity still applies, and the note is redeemed once anyway.
HELD_KB_MAX_AGE = 10**9


@dataclass(frozen=True, slots=True)
class NoteResult:
    """What we answer for one presented note: its receipt (maybe given before) or why not."""

    jti: str | None
    receipt: str | None = None
    replayed: bool = False
    error: WalletError | None = None

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"jti": self.jti, "error": self.error.as_dict()}
        if self.replayed:
            return {"jti": self.jti, "receipt": self.receipt, "replayed": True}
        return {"jti": self.jti, "receipt": self.receipt}


@dataclass(frozen=True, slots=True)
class Redeemed:
    """The answer to a redeem request: one result per presentation, in order."""

    results: list[NoteResult]

    def as_json(self) -> dict[str, Any]:
        return {"results": [r.as_json() for r in self.results]}


@dataclass(frozen=True, slots=True)
class _Request:
    """A checked redeem request, with what every note of it needs."""

    org: Organization
    directory: Directory
    request: redeem.RedeemRequest
    now: int
    kid: str
    key: Ed25519PrivateKey


def redeem_request(session: Session, *, slug: str, token: object) -> Redeemed:
    """Handle another organisation's redeem request; answer per-note receipts or errors.

    The sender's keys come from our trust list; a sender whose pin is stale or lacks the
    kid it signed with is re-pinned first (a network step, `Lookups`).
    """
    jws, sender = redeem.peek_verifier(token)
    org = org_or_404(session, slug)
    lookups = Lookups(session, org)
    if sender == lookups.directory.own_id:
        raise Malformed("an organisation does not redeem its own notes")
    now = clock.unix()
    request = lookups.verify(lambda d: redeem.check_request(
        jws, keys=d.resolve(sender), issuer=d.own_id, now=now))
    directory = lookups.directory
    kid, key = signing.signer(session, org=org, rows=directory.own_key_rows())
    checked = _Request(org, directory, request, now, kid, key)
    if len(request.presentations) == 1:  # the usual case: no savepoint needed
        try:
            with atomic(session):
                results = [_redeem_one(session, checked, request.presentations[0])]
        except _NoteRefused as refused:  # rolled back, whatever it had written
            results = [NoteResult(refused.jti, error=refused.error)]
    else:
        results = []
        with atomic(session):
            for text in request.presentations:
                try:
                    # A savepoint per note: a refusal after any write undoes that note only.
                    with session.begin_nested():
                        results.append(_redeem_one(session, checked, text))
                except _NoteRefused as refused:
                    results.append(NoteResult(refused.jti, error=refused.error))
    if any(r.error is None for r in results):
        assert org.id is not None
        forget_status_tokens(org.id)
    return Redeemed(results)


class _NoteRefused(Exception):
    """One note of a redeem request was refused (its savepoint is rolled back)."""

    def __init__(self, jti: str | None, error: WalletError) -> None:
        super().__init__(error.message)
        self.jti, self.error = jti, error


def _redeem_one(session: Session, checked: _Request, text: str) -> NoteResult:
    org, request = checked.org, checked.request
    assert org.id is not None
    jti = None
    try:
        try:
            pres = notes.verify_presentation(text, resolve=checked.directory.resolve,
                                             audience=request.verifier, now=checked.now,
                                             max_age=HELD_KB_MAX_AGE if request.held
                                             else ISSUER_KB_MAX_AGE)
        except (HolderBindingFailed, Expired) as err:
            # A retry after a lost answer may arrive late: if this verifier already
            # redeemed the note, give it the receipt it is owed.
            given = _late_replay(session, checked, text)
            if given is None:
                raise err from None
            return given
        note = pres.note
        jti = note.jti
        if note.issuer != checked.directory.own_id:
            raise UnknownNote("this organisation did not issue the note")
        taken = note_store.redeem(session, org_id=org.id, jti=note.jti,
                                  status_idx=note.status_idx,
                                  at=datetime.fromtimestamp(checked.now, UTC),
                                  by=request.verifier)
        if taken is not None:
            return _book_redemption(session, checked, taken)
        # Not taken by this call: unknown, or someone changed it first (read what they did).
        row = note_store.note_by_jti(session, org_id=org.id, jti=note.jti)
        if row is None or row.status_idx != note.status_idx or row.id is None:
            raise UnknownNote("this issuer has no record of the note")
        given = _given(session, row, request.verifier)
        if given is not None:
            return given
        if row.state == "redeemed":
            raise AlreadyRedeemed("the note was already redeemed")
        raise Revoked(f"the note was {row.state}")
    except WalletError as err:
        raise _NoteRefused(jti, err) from None


def _late_replay(session: Session, checked: _Request, text: str) -> NoteResult | None:
    """The receipt already given to the verifier for a late but genuine presentation."""
    assert checked.org.id is not None
    try:  # the holder's signature must still verify; only its age is forgiven
        pres = notes.verify_presentation(text, resolve=checked.directory.resolve,
                                         audience=checked.request.verifier, now=clock.unix(),
                                         max_age=10**9, ignore_expiry=True)
    except WalletError:
        return None
    row = note_store.note_by_jti(session, org_id=checked.org.id, jti=pres.note.jti)
    return None if row is None else _given(session, row, checked.request.verifier)


def _given(session: Session, row: Note, verifier: str) -> NoteResult | None:
    """The receipt `verifier` was given when it redeemed our note `row`, if it did."""
    if row.state != "redeemed" or row.id is None:
        return None
    red = fed_store.redemption_of(session, note_id=row.id)
    if red is None or red.redeemer != verifier:
        return None
    return NoteResult(row.jti, red.receipt, replayed=True)


def _book_redemption(session: Session, checked: _Request,
                     note: note_store.Redeemed) -> NoteResult:
    org, request = checked.org, checked.request
    assert org.id is not None
    receipt_jti = notes.new_jti(secrets.token_bytes(16))
    amount = Money(note.amount, note.currency)
    token = redeem.receipt(issuer=checked.directory.own_id, verifier=request.verifier,
                           jti=receipt_jti, iat=checked.now, note_jti=note.jti, amount=amount,
                           request_jti=request.jti, kid=checked.kid, key=checked.key)
    fed_store.add_redemption(session, {
        "org_id": org.id, "note_id": note.id, "redeemer": request.verifier,
        "amount": note.amount, "currency": note.currency, "receipt": token,
        "receipt_jti": receipt_jti, "request_jti": request.jti, "created_at": clock.now()})
    people.audit(session, org_id=org.id, actor=request.verifier, action="note.redeemed",
                 target=note.jti, details={"amount": str(amount)})
    webhooks.emit(session, org_id=org.id, type="note.redeemed", data={
        "note": note.jti, "redeemed_by": request.verifier,
        **webhooks.money(note.amount, note.currency)})
    # Last before the commit: every redemption by this verifier updates the same two
    # account rows, and each holds their locks until it commits.
    ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
        ledger.NOTES_OUTSTANDING, ledger.payable(request.verifier), note.amount,
        note.currency, kind="redeem", key=f"redeem:{note.jti}", ref=note.jti,
        memo=f"redeemed by {request.verifier}"[:300]))
    return NoteResult(note.jti, token)
