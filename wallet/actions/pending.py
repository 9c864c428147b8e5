"""Pending honours: retry the redeem of a note whose issuer could not be reached, until
the issuer answers (a receipt: credited once; a refusal: the engineer sees why) or the
note expires (docs/federation.md, "When the issuer sleeps").

Driven by rows (`pending_honour`, recorded by `wallet.actions.honour`): `retry_due` finds
the rows whose next try is due, and `retry` claims one try with a conditional update that
also sets the next one (exponential backoff; the next try is this one's lease, so a
worker that dies mid-try is retried then). A try runs the honour's own steps with the
presentation held: verify it again (its key-binding JWT's age forgiven), redeem it at the
issuer with the request marked "pending", credit. Crediting is the honour's `credit`: one
honoured-note row and one transfer key per note, so however two tries race, the engineer
is credited once, and the row is finished by one conditional update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from wallet import clock
from wallet.actions import honour, signing
from wallet.actions._base import atomic, commit, org_or_404
from wallet.actions.lookups import Lookups, end_transaction
from wallet.core import notes, pending
from wallet.core.errors import AlreadyRedeemed, IssuerUnavailable, NotFound, WalletError
from wallet.core.money import Money
from wallet.directory import Directory
from wallet.models import Organization, PendingHonour, Person
from wallet.store import pending as store

HELD_KB_MAX_AGE = 10**9  # B checked the key-binding JWT's age when it was presented


def retry_due(session: Session, *, limit: int = 100) -> int:
    """Try every pending honour whose next try is due, in every organisation; return
    how many were tried (a sweep: safe to run twice, or in two workers at once)."""
    due = store.due(session, now=clock.now(), limit=limit)
    commit(session)  # ends the read: each try holds no transaction while issuers answer
    return sum(1 for pending_id in due if retry(session, pending_id=pending_id) is not None)


def retry(session: Session, *, pending_id: int) -> str | None:
    """Try one pending honour once, if its try is due; the state it is in afterwards,
    or None when it was not due (another worker took the try, or it is finished)."""
    now = clock.now()
    with atomic(session):
        row = store.by_id(session, pending_id=pending_id)
        if row is None or row.state != pending.PENDING or not store.claim(
                session, pending_id=pending_id, now=now,
                next_at=honour.first_retry(now, row.attempts + 1)):
            return None
    return attempt(session, row)


def attempt(session: Session, row: PendingHonour) -> str:
    """One try of a claimed pending honour: verify the held presentation, redeem it at
    its issuer (no transaction open), then credit and settle the row in one transaction."""
    org, person = session.get(Organization, row.org_id), session.get(Person, row.person_id)
    assert org is not None and person is not None and row.id is not None
    outcome = honour.Outcome(0)
    lookups = Lookups(session, org)
    now = clock.unix()
    try:
        pres = lookups.verify(lambda d: _check_held(d, row.presentation, now))
    except WalletError as err:  # no longer trusted, over a new cap, a key revoked …
        outcome.fail(err)
        with atomic(session):
            return _settle(session, row, outcome)
    note = outcome.note = pres.note
    outcome.jti, outcome.issuer, outcome.amount = note.jti, note.issuer, note.amount
    signer = signing.signer(session, org=org, rows=lookups.directory.own_key_rows())
    plan = honour.Plan(org, person, lookups, honour.Honoured([outcome]),
                       [(outcome, row.presentation)], signer, row.consumer, held=True)
    end_transaction(session)
    done = honour.redeem_at_issuers(plan)  # network: no transaction open
    with atomic(session):
        if done:
            honour.credit(session, plan, done)
        return _settle(session, row, outcome)


def _check_held(directory: Directory, text: str, now: int) -> notes.Presentation:
    """Verify a held presentation again (reads only: may run twice): the note, the
    holder's signature and audience, and the trust policy as it stands now. Its age is
    forgiven (checked when it was given), and so is the note's expiry: the issuer may
    still owe us the receipt of a redemption whose answer was lost."""
    pres = notes.verify_presentation(text, resolve=directory.resolve,
                                     audience=directory.own_id, now=now,
                                     max_age=HELD_KB_MAX_AGE, ignore_expiry=True)
    honour.check_policy(directory.trusted(pres.note.issuer), pres.note)
    return pres


def _settle(session: Session, row: PendingHonour, outcome: honour.Outcome) -> str:
    """Finish the row as the try ended (in the caller's transaction); its state after."""
    assert row.id is not None
    now = clock.now()
    credited = store.honoured_note(session, org_id=row.org_id, issuer=row.issuer,
                                   jti=row.note_jti)
    err = outcome.error
    if credited is not None and credited.person_id == row.person_id and (
            outcome.honoured or isinstance(err, AlreadyRedeemed)
            or (err is not None and err.code == "already_redeemed")):
        # Credited now, or already by another request of this engineer: done, once.
        to, values = pending.HONOURED, {"honoured_id": credited.id, "last_error": ""}
    elif isinstance(err, IssuerUnavailable) and now < row.note_expires_at:
        store.note_failure(session, pending_id=row.id, why=err.message)
        return pending.PENDING  # the claim set the next try
    elif isinstance(err, IssuerUnavailable) or (err is not None and err.code == "expired"):
        to, values = pending.EXPIRED, {"error_code": "expired", "error_message": (
            "the note expired before its issuer could redeem it" if err.code != "expired"
            else err.message[:300])}
    else:
        assert err is not None
        to, values = pending.REFUSED, {"error_code": err.code[:40],
                                       "error_message": err.message[:300]}
    if not store.finish(session, pending_id=row.id, to=to, now=now, values=values):
        found = store.by_id(session, pending_id=row.id)  # another try finished it first
        return found.state if found is not None else to
    return to


# -- what the engineer sees ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """A pending honour as its engineer sees it."""

    row: PendingHonour
    org: Organization

    def as_json(self) -> dict[str, Any]:
        row = self.row
        out: dict[str, Any] = {
            "id": row.public_id, "state": row.state,
            "status_url": honour.status_url(self.org, row.public_id),
            "jti": row.note_jti, "issuer": row.issuer,
            "amount": Money(row.amount, row.currency).as_json(),
            "attempts": row.attempts, "created_at": row.created_at.isoformat()}
        if row.state == pending.PENDING:
            out.update(next_attempt_at=row.next_attempt_at.isoformat(),
                       last_error=row.last_error or None)
        else:
            out["closed_at"] = row.closed_at.isoformat() if row.closed_at else None
        if row.error_code is not None:
            out["error"] = {"code": row.error_code, "message": row.error_message or ""}
        return out


def status(session: Session, *, slug: str, person: Person, public_id: str) -> Shown:
    """How one of the engineer's pending honours stands; `NotFound` for anyone else's."""
    org = org_or_404(session, slug)
    assert org.id is not None
    row = store.by_public_id(session, org_id=org.id, public_id=public_id[:40])
    if row is None or row.person_id != person.id:
        raise NotFound("no such pending honour")
    return Shown(row, org)


def listing(session: Session, *, org: Organization, person: Person) -> list[PendingHonour]:
    """The engineer's pending honours here, waiting or finished, newest first."""
    assert org.id is not None and person.id is not None
    return store.of_person(session, org_id=org.id, person_id=person.id)
