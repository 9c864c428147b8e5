"""Credit notes at their issuer: export, revoke, reclaim, status lists.

Formats: docs/protocol.md §3 "The credit note" and §6 "Issuer documents".

Exporting is one transaction: debit `wallet:p → notes_outstanding` (refused when the
wallet holds less), claim a random free index in a status list (a unique constraint
decides), sign, record. Notes carry no personal data; the record maps jti → person.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.actions import nonces as nonce_actions
from wallet.actions import signing
from wallet.actions._base import Actor, atomic, member_or_404, org_or_404, require_admin, utcnow
from wallet.actions.ledger import check_key
from wallet.actions.verify import nonce_checker
from wallet.core import jose, ledger, notes, status
from wallet.core.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    Malformed,
    NonceInvalid,
    NotFound,
    UnknownNote,
    WalletError,
)
from wallet.core.money import Money, parse_money
from wallet.directory import Directory
from wallet.memo import memo
from wallet.models import Membership, Note, Organization, Person
from wallet.store import ledger as ledger_store
from wallet.store import notes as note_store
from wallet.store import people

MAX_INDEX_TRIES = 32


def status_uri(org: Organization, number: int) -> str:
    """The URI of one of the organisation's status lists."""
    return f"{signing.issuer_id(org)}/status/{number}"



def _may_export(m: Membership, org: Organization) -> None:
    """Employees, and former employees within the alumni window, may export."""
    today = utcnow().date()
    if m.ended_on is not None and today > m.ended_on + timedelta(days=org.alumni_days):
        raise Forbidden(f"access to {org.name} ended {org.alumni_days} days after"
                        f" {m.ended_on.isoformat()}")


def export(session: Session, *, slug: str, email: str, amount: str, currency: str | None = None,
           holder_jwk: Any, actor: Actor, request_key: str | None = None) -> Note:
    """Turn part of a person's available balance into a note bound to `holder_jwk`.

    With a `request_key` (a form's hidden key, an API Idempotency-Key, the CLI's
    --idempotency-key), keyed per person, the export happens once: repeating it returns
    the same note, inside the same transaction as the debit, so even a retry after a
    crash between commit and answer cannot export twice; other arguments under the same
    key raise `IdempotencyConflict`.
    """
    return export_once(session, slug=slug, email=email, amount=amount, currency=currency,
                       holder_jwk=holder_jwk, actor=actor, request_key=request_key)[0]


def export_once(session: Session, *, slug: str, email: str, amount: str,
                currency: str | None = None, holder_jwk: Any, actor: Actor,
                request_key: str | None = None) -> tuple[Note, bool]:
    """`export`, also telling whether this call made the note (False: a replay)."""
    org = org_or_404(session, slug)
    assert org.id is not None
    membership, person = member_or_404(session, org, email)
    if actor.person_id != person.id:
        require_admin(session, org, actor)
    _may_export(membership, org)
    money = parse_money(amount, currency or org.currency)
    try:
        holder = jose.PublicKey.from_jwk(holder_jwk)
    except WalletError as err:
        raise Malformed(f"holder JWK: {err.message}") from None
    ledger_key = None if request_key is None else _export_key(person, request_key)
    try:
        return _export_keyed(session, org=org, person=person, money=money, holder=holder,
                             actor=actor, ledger_key=ledger_key)
    except IdempotencyConflict:
        if ledger_key is None:
            raise
        # The same key, committed by a concurrent export after our check found nothing:
        # its ledger row refused ours (the unique key decides) and all was rolled back.
        # Look again: the same request gets that note; other arguments stay a conflict.
        return _export_keyed(session, org=org, person=person, money=money, holder=holder,
                             actor=actor, ledger_key=ledger_key)


def _export_keyed(session: Session, *, org: Organization, person: Person, money: Money,
                  holder: jose.PublicKey, actor: Actor,
                  ledger_key: str | None) -> tuple[Note, bool]:
    """One transaction: the note this key already made, or a new one."""
    assert org.id is not None
    with atomic(session):
        if ledger_key is not None:
            prior = _prior_export(session, org=org, key=ledger_key)
            if prior is not None:
                if (prior.amount, prior.currency, prior.holder_jkt) != (
                        money.micros, money.currency, holder.kid):
                    raise IdempotencyConflict("this export was already made, with another"
                                              " amount or holder key")
                return prior, False
        row = _issue(session, org=org, person=person, money=money, holder=holder,
                     now=utcnow(), kind="export", ledger_key=ledger_key)
        people.audit(session, org_id=org.id, actor=actor.label, action="note.export",
                     target=row.jti, details={"amount": str(money), "person": person.email})
    return row, True


def exported_for_key(session: Session, *, slug: str, email: str,
                     request_key: str) -> Note | None:
    """The note `export(request_key=…)` already made for this person, if any (a read)."""
    org = org_or_404(session, slug)
    _membership, person = member_or_404(session, org, email)
    return _prior_export(session, org=org, key=_export_key(person, request_key))


def _export_key(person: Person, request_key: str) -> str:
    """The ledger key of a keyed export: per person, so one person's key is not another's."""
    return f"export-request:{person.id}:{check_key(request_key)}"


def _prior_export(session: Session, *, org: Organization, key: str) -> Note | None:
    """The note an export with this ledger idempotency key already made, if any."""
    assert org.id is not None
    transfer = ledger_store.by_key(session, org_id=org.id, key=key)
    return None if transfer is None else note_store.note_by_jti(session, org_id=org.id,
                                                                jti=transfer.ref)


def export_to_new_wallet(session: Session, *, slug: str, email: str, amount: str,
                         passphrase: str, actor: Actor,
                         request_key: str | None = None) -> tuple[Note, str]:
    """Export a note to a brand-new holder key and return it inside a `.ccwallet` file.

    The key is generated and encrypted under `passphrase` *before* the note is exported,
    so nothing can fail between the debit and the hand-over; the server keeps neither
    the key nor the passphrase.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from wallet.core import walletfile

    if len(passphrase) < 8:
        raise Malformed("choose a passphrase of at least 8 characters")
    key = Ed25519PrivateKey.generate()
    empty = walletfile.create(key, passphrase, [], salt=secrets.token_bytes(16),
                              iv=secrets.token_bytes(16))
    row = export(session, slug=slug, email=email, amount=amount, holder_jwk=empty.holder_jwk,
                 actor=actor, request_key=request_key)
    return row, empty.with_notes([row.token]).to_json()


def _issue(session: Session, *, org: Organization, person: Person, money: Money,
           holder: jose.PublicKey, now: datetime, kind: str,
           ledger_key: str | None = None) -> Note:
    """Debit the wallet, claim a status index, sign and record a note (no commit)."""
    assert org.id is not None and person.id is not None
    jti = notes.new_jti(secrets.token_bytes(16))
    ledger_store.post(session, org_id=org.id, at=now, posting=ledger.Posting(
        ledger.wallet(person.id), ledger.NOTES_OUTSTANDING, money.micros, money.currency,
        kind=kind, key=ledger_key or f"{kind}:{jti}", ref=jti, memo="credit note"))
    kid, key = signing.signer(session, org=org)
    iat = int(now.timestamp())
    exp = iat + org.note_ttl_days * 86_400
    size = int(current_app.config["WALLET_STATUS_LIST_SIZE"])
    number = _list_with_room(session, org=org, size=size, now=now)
    for _ in range(MAX_INDEX_TRIES):
        # Uniform over the whole list, whatever the bound: an index tells nothing about
        # who holds the note or when it was issued.
        idx = secrets.randbelow(size)
        token = notes.issue(issuer=signing.issuer_id(org), jti=jti, iat=iat, exp=exp,
                            amount=money, holder_jwk=holder.jwk,
                            status_uri=status_uri(org, number), status_idx=idx, kid=kid,
                            key=key)
        note_id = note_store.insert_note(session, {
            "org_id": org.id, "jti": jti, "person_id": person.id, "amount": money.micros,
            "currency": money.currency, "holder_jkt": holder.kid, "holder_jwk": holder.jwk,
            "kid": kid, "status_list": number, "status_idx": idx, "state": "active",
            "issued_at": datetime.fromtimestamp(iat, now.tzinfo),
            "expires_at": datetime.fromtimestamp(exp, now.tzinfo), "token": token,
        })
        if note_id is not None:
            row = session.get(Note, note_id)
            assert row is not None
            return row
    raise Conflict("could not find a free status index; try again")


def _list_with_room(session: Session, *, org: Organization, size: int, now: datetime) -> int:
    """The list the next note goes in: the newest with room, locked until the commit.

    A list takes at most `WALLET_STATUS_LIST_MAX_NOTES` notes, ever: each may turn
    non-zero (revoked, redeemed), and the bound keeps its token under what verifiers
    accept (`status.check_capacity`). A list that is full, holds more (an older, looser
    bound) or has another size (an older `WALLET_STATUS_LIST_SIZE`) is left for a new
    one; no note moves. The list's row is locked before its notes are counted, so
    concurrent exports take turns and none can overfill it (they already queue on the
    `notes_outstanding` row); the unique (list, index) key claims the index itself.
    """
    assert org.id is not None
    limit = int(current_app.config["WALLET_STATUS_LIST_MAX_NOTES"])
    found = note_store.lock_list(session, org_id=org.id)
    number = 1 if found is None else found.number
    while True:
        if found is None:
            note_store.open_list(session, org_id=org.id, number=number, size=size, now=now)
            found = note_store.lock_list(session, org_id=org.id, number=number)
            assert found is not None  # ours, or one a concurrent export just committed
        if found.size == size and found.used < limit:
            return number
        number += 1
        found = note_store.lock_list(session, org_id=org.id, number=number)


def revoke(session: Session, *, slug: str, jti: str, reason: str, actor: Actor) -> Note:
    """Revoke an active note: value back to the engineer's wallet, reason recorded."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    reason = reason.strip()
    if not reason or len(reason) > 300:
        raise Malformed("give a reason (1-300 characters)")
    with atomic(session):
        row = note_store.note_by_jti(session, org_id=org.id, jti=jti.strip())
        if row is None:
            raise NotFound(f"{slug} issued no note {jti!r}")
        if not _revoke_row(session, org=org, row=row, reason=reason):
            raise Conflict(f"note {row.jti} is {row.state}, not active")
        people.audit(session, org_id=org.id, actor=actor.label, action="note.revoke",
                     target=row.jti, details={"reason": reason})
    forget_status_tokens(org.id)
    return row


def _revoke_row(session: Session, *, org: Organization, row: Note, reason: str) -> bool:
    assert org.id is not None and row.id is not None
    now = utcnow()
    if not note_store.set_state(session, note_id=row.id, from_state="active",
                                to_state="revoked",
                                values={"revoked_at": now, "revoke_reason": reason[:300]}):
        return False
    ledger_store.post(session, org_id=org.id, at=now, posting=ledger.Posting(
        ledger.NOTES_OUTSTANDING, ledger.wallet(row.person_id), row.amount, row.currency,
        kind="note_revoke", key=f"note_revoke:{row.jti}", ref=row.jti, memo=reason[:300]))
    session.refresh(row)
    return True


def revoke_signed_since(session: Session, *, org: Organization, kid: str, since: datetime,
                        actor: Actor, reason: str) -> int:
    """Revoke every active note `kid` signed at or after `since` (inside the caller's commit)."""
    assert org.id is not None
    count = 0
    for row in note_store.active_signed_since(session, org_id=org.id, kid=kid, since=since):
        if _revoke_row(session, org=org, row=row, reason=reason):
            people.audit(session, org_id=org.id, actor=actor.label, action="note.revoke",
                         target=row.jti, details={"reason": reason})
            count += 1
    forget_status_tokens(org.id)
    return count


def breakage(session: Session, *, slug: str, jti: str, actor: Actor) -> Note:
    """Book an expired, unredeemed note as breakage (issuer income); explicit and recorded."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    now = utcnow()
    with atomic(session):
        row = note_store.note_by_jti(session, org_id=org.id, jti=jti.strip())
        if row is None or row.id is None:
            raise NotFound(f"{slug} issued no note {jti!r}")
        if row.expires_at > now:
            raise Conflict("only an expired note can be booked as breakage")
        if not note_store.set_state(session, note_id=row.id, from_state="active",
                                    to_state="reclaimed",
                                    values={"reclaimed_at": now, "reclaim_kind": "breakage"}):
            raise Conflict(f"note {row.jti} is {row.state}, not outstanding")
        ledger_store.post(session, org_id=org.id, at=now, posting=ledger.Posting(
            ledger.NOTES_OUTSTANDING, ledger.BREAKAGE, row.amount, row.currency,
            kind="note_breakage", key=f"note_breakage:{row.jti}", ref=row.jti,
            memo="expired note booked as breakage"))
        people.audit(session, org_id=org.id, actor=actor.label, action="note.breakage",
                     target=row.jti)
    session.refresh(row)
    forget_status_tokens(org.id)
    return row


def reissue(session: Session, *, org: Organization, row: Note) -> Note:
    """Replace an expired note with a fresh one to the same holder key (caller verified it)."""
    assert org.id is not None and row.id is not None
    now = utcnow()
    if row.expires_at > now:
        raise Conflict("the note has not expired; it can still be presented as is")
    if row.state != "active":  # fail early; the conditional update below decides races
        raise Conflict(f"note {row.jti} is {row.state}, not outstanding")
    person = session.get(Person, row.person_id)
    assert person is not None
    with atomic(session):
        # Reclaim first (value back to the wallet), then export the replacement from it,
        # then retire the old note in one conditional update that names its successor.
        ledger_store.post(session, org_id=org.id, at=now, posting=ledger.Posting(
            ledger.NOTES_OUTSTANDING, ledger.wallet(row.person_id), row.amount, row.currency,
            kind="note_reclaim", key=f"note_reclaim:{row.jti}", ref=row.jti,
            memo="expired note reclaimed for reissue"))
        fresh = _issue(session, org=org, person=person, money=Money(row.amount, row.currency),
                       holder=jose.PublicKey.from_jwk(row.holder_jwk), now=now, kind="export")
        if not note_store.set_state(session, note_id=row.id, from_state="active",
                                    to_state="reclaimed",
                                    values={"reclaimed_at": now, "reclaim_kind": "reissued",
                                            "replaced_by": fresh.jti}):
            raise Conflict(f"note {row.jti} is {row.state}, not outstanding")
        people.audit(session, org_id=org.id, actor=f"holder:{row.holder_jkt[:12]}",
                     action="note.reissue", target=row.jti, details={"new": fresh.jti})
    forget_status_tokens(org.id)
    return fresh


def reissue_presented(session: Session, *, slug: str, presentation: object) -> tuple[Note, str]:
    """Reissue an expired note to its holder, who proves the key with a presentation.

    The presentation is made for this issuer (`aud` = its issuer id) with a nonce it
    issued; everything is checked as usual except the note's expiry. The nonce is spent
    in the same transaction as the reissue. Returns (the new note, the old jti).
    """
    org = org_or_404(session, slug)
    assert org.id is not None
    directory = Directory(session, org)
    pres = notes.verify_presentation(
        presentation, resolve=directory.resolve, audience=directory.own_id,
        now=clock.unix(), nonce_ok=nonce_checker(session, org), ignore_expiry=True)
    if pres.note.issuer != directory.own_id:
        raise UnknownNote("only the note's own issuer can reissue it")
    row = note_store.note_by_jti(session, org_id=org.id, jti=pres.note.jti)
    if row is None or row.status_idx != pres.note.status_idx:
        raise UnknownNote("this issuer has no record of the note")
    if not nonce_actions.spend(session, org_id=org.id, value=pres.nonce,
                               consumer=f"reissue:{row.jti}"):
        raise NonceInvalid("the nonce was used by another request")
    return reissue(session, org=org, row=row), row.jti


# -- status lists ------------------------------------------------------------------------

STATUS_CACHE_SECONDS = 2.0  # rebuild at most this often per list and process
log = logging.getLogger("wallet.notes")


def forget_status_tokens(org_id: int) -> None:
    """Drop this process's signed status lists of an organisation (its notes changed)."""
    epochs = memo("status-token-epochs")
    epochs.put(org_id, epochs.get(org_id, 0) + 1)


def status_list_token(session: Session, *, org: Organization, number: int) -> str:
    """The signed `statuslist+jwt` of list `number` (rebuilt at most every 2 s)."""
    assert org.id is not None
    # Keyed by the organisation's epoch as read before the lists: a token built from rows
    # read before a change is kept under the epoch that change left behind.
    cache_key = (org.id, memo("status-token-epochs").get(org.id, 0), number)
    tokens = memo("status-tokens", ttl=STATUS_CACHE_SECONDS, maxsize=1024)
    hit: str | None = tokens.get(cache_key)
    if hit is not None:
        return hit
    row = note_store.status_list(session, org_id=org.id, number=number)
    if row is None:
        raise NotFound(f"{org.slug} has no status list {number}")
    packed = status.build(row.size, note_store.non_valid_entries(session, org_id=org.id,
                                                                 number=number))
    kid, key = signing.signer(session, org=org)
    iat = int(utcnow().timestamp())
    ttl = int(current_app.config["WALLET_STATUS_LIST_TTL"])
    claims = status.claims(uri=status_uri(org, number), packed=packed, iat=iat, ttl=ttl,
                           exp=iat + 3600)
    token = jose.sign({"alg": jose.SIGNING_ALG, "typ": status.TYP, "kid": kid}, claims, key)
    oversized = memo("status-lists-oversized")  # lists already reported as over 16 KiB
    if len(token) > jose.MAX_TOKEN_BYTES and oversized.get((org.id, number)) is None:
        # Only a list filled under an older, looser bound gets here: it still verifies at
        # verifiers of this protocol (status.MAX_TOKEN_BYTES), not at those applying the
        # general 16 KiB token limit. It takes no more notes.
        oversized.put((org.id, number), True)
        log.warning("status list %s of %s is %d bytes, over %d", number, org.slug, len(token),
                    jose.MAX_TOKEN_BYTES)
    return tokens.put(cache_key, token)


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteView:
    """A note as shown to people."""

    row: Note
    person: Person

    @property
    def expired(self) -> bool:
        return self.row.state == "active" and self.row.expires_at <= utcnow()

    @property
    def display_state(self) -> str:
        return "expired" if self.expired else self.row.state


def note_of(session: Session, *, org: Organization, person: Person, jti: str) -> Note | None:
    """One of a person's own notes at `org`, by jti; None when it is not theirs."""
    assert org.id is not None
    row = note_store.note_by_jti(session, org_id=org.id, jti=jti)
    return None if row is None or row.person_id != person.id else row


def of_person(session: Session, *, org: Organization, person: Person) -> list[NoteView]:
    """A person's notes at an organisation, newest first."""
    assert org.id is not None
    return [NoteView(n, p) for n, p in note_store.notes_of(
        session, org_id=org.id, person_id=person.id, limit=500)]


def search(session: Session, *, org: Organization, query: str = "", state: str | None = None,
           limit: int = 50, offset: int = 0) -> list[NoteView]:
    """Notes an organisation issued, by person email or jti. State `expired`: the notes
    still outstanding past their expiry, which nobody reissued (breakage candidates)."""
    assert org.id is not None
    expired = state == "expired"
    return [NoteView(n, p) for n, p in note_store.notes_of(
        session, org_id=org.id, query=query, state="active" if expired else state,
        limit=limit, offset=offset, expired_at=utcnow() if expired else None)]
