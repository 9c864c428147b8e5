"""Honouring notes across employers (DESIGN §8): trust, redeem, honour, settle.

Exactly once, enforced by the database:
- at the issuer A, `active → redeemed` is a conditional update; the posting
  `notes_outstanding → payable:B`, the receipt and the redemption row go in the same
  transaction. A retry by the same B gets the stored receipt; anyone else
  `already_redeemed`.
- at the verifier B, the nonce is spent with a conditional update (a retry of the same
  idempotent request may reuse it), and the credit `receivable:A → wallet:p` is keyed by
  (issuer, note) twice over: a unique honoured-note row and the transfer's idempotency
  key. B never holds a database transaction while it waits for A.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session

from wallet.actions import keys as key_actions
from wallet.actions import nonces as nonce_actions
from wallet.actions._base import (
    Actor,
    atomic,
    member_or_404,
    org_or_404,
    require_admin,
    utcnow,
)
from wallet.actions.ledger import check_key
from wallet.core import jose, ledger, notes, redeem
from wallet.core.errors import (
    AlreadyRedeemed,
    Conflict,
    Expired,
    HolderBindingFailed,
    InsufficientFunds,
    IssuerUnavailable,
    Malformed,
    NonceInvalid,
    NotFound,
    PolicyRejected,
    Refusal,
    Revoked,
    UnknownNote,
    WalletError,
)
from wallet.core.money import Money, format_amount, parse_currency, parse_money
from wallet.federation import Directory, fetch_issuer, transport_for
from wallet.models import HonouredNote, Organization, Person, TrustedIssuer
from wallet.peers import clean, clean_code
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import notes as note_store
from wallet.store import people
from wallet.store._sql import insert_ignore

ISSUER_KB_MAX_AGE = 900  # the issuer accepts presentations B forwards up to 15 minutes late
MAX_HONOUR = 50


# -- trust -------------------------------------------------------------------------------


def _normalise_issuer(issuer: str) -> str:
    issuer = issuer.strip().rstrip("/")
    if not issuer.startswith(("https://", "http://")) or len(issuer) > 300 \
            or clean(issuer, 300) != issuer:  # no spaces or control characters either
        raise Malformed("an issuer id is an http(s) URL such as https://credits.example/orgs/acme")
    return issuer


def _currencies(values: list[str] | None) -> str:
    codes = sorted({parse_currency(v.strip().upper()) for v in (values or ["USD"]) if v.strip()})
    if not codes:
        raise Malformed("accept at least one currency")
    return ",".join(codes)


@dataclass(frozen=True, slots=True)
class Change:
    """One thing a trust change alters: `field` goes from `before` to `after`."""

    field: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.field} {self.before} -> {self.after}"

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class Trusted:
    """The outcome of trust add: `added`, `replaced` (with `changes`) or `unchanged`."""

    entry: TrustedIssuer
    outcome: str
    changes: list[Change]


@dataclass(frozen=True, slots=True)
class TrustUpdate:
    """A trust entry after an explicit policy change, and what changed (maybe nothing)."""

    entry: TrustedIssuer
    changes: list[Change]


def _cap_text(micros: int | None) -> str:
    return "none" if micros is None else format_amount(micros)


def _policy_changes(entry: TrustedIssuer, cap: int | None, currencies: str) -> list[Change]:
    changes = []
    if entry.cap != cap:
        changes.append(Change("cap", _cap_text(entry.cap), _cap_text(cap)))
    if entry.currencies != currencies:
        changes.append(Change("currencies", entry.currencies, currencies))
    return changes


def _key_changes(entry: TrustedIssuer, jwks: dict[str, Any]) -> list[Change]:
    before, after = sorted(jose.jwks_keys(entry.jwks)), sorted(jose.jwks_keys(jwks))
    if before == after:
        return []
    return [Change("keys", ", ".join(before) or "none", ", ".join(after) or "none")]


def _already_trusted(slug: str, entry: TrustedIssuer, changes: list[Change]) -> Conflict:
    listed = "; ".join(str(c) for c in changes)
    return Conflict(f"{slug} already trusts {entry.issuer}; adding it again would change"
                    f" {listed}. Replace explicitly (--replace, or confirm on the page), or"
                    " change the policy alone with 'wallet trust update'",
                    changes=[c.as_json() for c in changes])


def trust_add(session: Session, *, slug: str, issuer: str, cap: str | None = None,
              currencies: list[str] | None = None, replace: bool = False,
              actor: Actor) -> Trusted:
    """Trust an issuer: fetch, check and pin its metadata and keys, with a policy.

    An issuer trusted already keeps its entry unless `replace`: a re-add that would
    change its policy or pinned keys is refused with a `Conflict` listing the changes
    (`extra["changes"]`); one that would change nothing leaves the entry as it is.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    issuer = _normalise_issuer(issuer)
    if issuer == key_actions.issuer_id(org):
        raise Malformed("an organisation trusts its own notes already")
    cap_micros = parse_money(cap, "USD").micros if cap else None
    accepted = _currencies(currencies)
    session.commit()  # hold no transaction while fetching
    pinned = fetch_issuer(issuer)
    now = utcnow()
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=issuer)
        action, details = "trust.add", {"cap": cap, "currencies": accepted,
                                        "keys": sorted(jose.jwks_keys(pinned.jwks))}
        changes: list[Change] = []
        if entry is None:
            entry = TrustedIssuer(org_id=org.id, issuer=issuer)
        else:
            changes = (_policy_changes(entry, cap_micros, accepted)
                       + _key_changes(entry, pinned.jwks))
            if not changes:
                return Trusted(entry, "unchanged", [])  # the same policy and keys
            if not replace:
                raise _already_trusted(slug, entry, changes)
            action, details = "trust.replace", {"changes": [c.as_json() for c in changes]}
        entry.name = clean(pinned.metadata.get("name"), 200)
        entry.issuer_metadata, entry.jwks = pinned.metadata, pinned.jwks
        entry.cap, entry.currencies = cap_micros, accepted
        entry.pinned_at = entry.refreshed_at = now
        session.add(entry)
        session.flush()
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action=action,
                     target=issuer, details=details)
    return Trusted(entry, "replaced" if changes else "added", changes)


def trust_update(session: Session, *, slug: str, issuer: str, cap: str | None = None,
                 no_cap: bool = False, currencies: list[str] | None = None,
                 actor: Actor) -> TrustUpdate:
    """Change a trusted issuer's policy (cap, currencies) and nothing else: no fetch."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    if cap and no_cap:
        raise Malformed("give a cap or no cap, not both")
    if not cap and not no_cap and not currencies:
        raise Malformed("nothing to change: give a cap, no cap, or currencies")
    cap_micros = parse_money(cap, "USD").micros if cap else None
    accepted = _currencies(currencies) if currencies else None
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=_normalise_issuer(issuer))
        if entry is None:
            raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
        changes = _policy_changes(
            entry, cap_micros if cap or no_cap else entry.cap, accepted or entry.currencies)
        if changes:
            if cap or no_cap:
                entry.cap = cap_micros
            entry.currencies = accepted or entry.currencies
            session.add(entry)
            people.bump_config(session, org_id=org.id)
            people.audit(session, org_id=org.id, actor=actor.label, action="trust.update",
                         target=entry.issuer,
                         details={"changes": [c.as_json() for c in changes]})
    return TrustUpdate(entry, changes)


def trust_entry(session: Session, *, slug: str, issuer: str) -> TrustedIssuer:
    """An organisation's trust entry for one issuer, or `NotFound`."""
    org = org_or_404(session, slug)
    assert org.id is not None
    entry = fed_store.entry(session, org_id=org.id, issuer=_normalise_issuer(issuer))
    if entry is None:
        raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
    return entry


def trust_remove(session: Session, *, slug: str, issuer: str, actor: Actor) -> None:
    """Stop trusting an issuer (notes already honoured stay honoured)."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    with atomic(session):
        entry = fed_store.entry(session, org_id=org.id, issuer=_normalise_issuer(issuer))
        if entry is None:
            raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
        session.delete(entry)
        people.bump_config(session, org_id=org.id)
        people.audit(session, org_id=org.id, actor=actor.label, action="trust.remove",
                     target=entry.issuer)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh changed for one issuer."""

    issuer: str
    added: list[str]
    removed: list[str]
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"issuer": self.issuer, "added": self.added, "removed": self.removed,
                "error": self.error}


def trust_refresh(session: Session, *, slug: str, actor: Actor,
                  issuer: str | None = None) -> list[Refreshed]:
    """Re-fetch pinned metadata and keys (scheduled, or after an unknown kid)."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    targets = [e.issuer for e in fed_store.entries(session, org_id=org.id)
               if issuer is None or e.issuer == _normalise_issuer(issuer)]
    if issuer is not None and not targets:
        raise NotFound(f"{slug} does not trust {clean(issuer, 300)}")
    session.commit()
    out: list[Refreshed] = []
    for target in targets:
        try:
            pinned = fetch_issuer(target)
        except WalletError as err:
            out.append(Refreshed(target, [], [], clean(err.message, 300)))
            continue
        with atomic(session):
            entry = fed_store.entry(session, org_id=org.id, issuer=target)
            if entry is None:
                continue
            before, after = set(jose.jwks_keys(entry.jwks)), set(jose.jwks_keys(pinned.jwks))
            entry.issuer_metadata, entry.jwks, entry.refreshed_at = (
                pinned.metadata, pinned.jwks, utcnow())
            entry.name = clean(pinned.metadata.get("name"), 200) or entry.name
            session.add(entry)
            people.bump_config(session, org_id=org.id)
            if before != after:
                people.audit(session, org_id=org.id, actor=actor.label, action="trust.refresh",
                             target=target, details={"added": sorted(after - before),
                                                     "removed": sorted(before - after)})
        out.append(Refreshed(target, sorted(after - before), sorted(before - after)))
    return out


def trust_list(session: Session, *, slug: str) -> list[TrustedIssuer]:
    """An organisation's trust list."""
    org = org_or_404(session, slug)
    assert org.id is not None
    return fed_store.entries(session, org_id=org.id)


# -- the issuer side: redeem -------------------------------------------------------------


def redeem_request(session: Session, *, slug: str, token: object) -> dict[str, Any]:
    """Handle another organisation's redeem request; return per-note receipts or errors."""
    jws, sender = redeem.peek_verifier(token)
    org = org_or_404(session, slug)
    directory = Directory(session, org)  # the sender's trust entry comes from its cache
    if sender == directory.own_id:
        raise Malformed("an organisation does not redeem its own notes")
    now = int(time.time())
    request = redeem.check_request(jws, keys=directory.resolve(sender),
                                   issuer=directory.own_id, now=now)
    kid, key = key_actions.signer(session, org=org, rows=directory.own_key_rows())
    results: list[dict[str, Any]] = []

    def one(text: str) -> dict[str, Any]:
        return _redeem_one(session, org=org, directory=directory, text=text,
                           request=request, now=now, kid=kid, key=key)

    if len(request.presentations) == 1:  # the usual case: no savepoint needed
        try:
            with atomic(session):
                results.append(one(request.presentations[0]))
        except _NoteRefused as refused:  # rolled back, whatever it had written
            results.append({"jti": refused.jti, "error": refused.error.as_dict()})
    else:
        with atomic(session):
            for text in request.presentations:
                try:
                    # A savepoint per note: a refusal after any write undoes that note only.
                    with session.begin_nested():
                        results.append(one(text))
                except _NoteRefused as refused:
                    results.append({"jti": refused.jti, "error": refused.error.as_dict()})
    if any("receipt" in r for r in results):
        from wallet.actions.notes import _invalidate_status_cache

        assert org.id is not None
        _invalidate_status_cache(org.id)
    return {"results": results}


def _redeem_one(session: Session, *, org: Organization, directory: Directory, text: str,
                request: redeem.RedeemRequest, now: int, kid: str, key: Any) -> dict[str, Any]:
    assert org.id is not None
    jti = None
    try:
        try:
            pres = notes.verify_presentation(text, resolve=directory.resolve,
                                             audience=request.verifier, now=now,
                                             max_age=ISSUER_KB_MAX_AGE)
        except (HolderBindingFailed, Expired) as err:
            # A retry after a lost answer may arrive late: if this verifier already
            # redeemed the note, give it the receipt it is owed.
            stored = _stored_receipt(session, org, text, request.verifier, directory)
            if stored is None:
                raise err from None
            return stored
        note = pres.note
        jti = note.jti
        if note.issuer != directory.own_id:
            raise UnknownNote("this organisation did not issue the note")
        taken = note_store.redeem(session, org_id=org.id, jti=note.jti,
                                  status_idx=note.status_idx,
                                  at=datetime.fromtimestamp(now, UTC), by=request.verifier)
        if taken is not None:
            return _book_redemption(session, org=org, note=taken, request=request, now=now,
                                    kid=kid, key=key)
        # Not taken by this call: unknown, or someone changed it first (read what they did).
        row = note_store.note_by_jti(session, org_id=org.id, jti=note.jti)
        if row is None or row.status_idx != note.status_idx or row.id is None:
            raise UnknownNote("this issuer has no record of the note")
        if row.state == "redeemed":
            red = fed_store.redemption_of(session, note_id=row.id)
            if red is not None and red.redeemer == request.verifier:
                return {"jti": row.jti, "receipt": red.receipt, "replayed": True}
            raise AlreadyRedeemed("the note was already redeemed")
        raise Revoked(f"the note was {row.state}")
    except WalletError as err:
        raise _NoteRefused(jti, err) from None


class _NoteRefused(Exception):
    """One note of a redeem request was refused (its savepoint is rolled back)."""

    def __init__(self, jti: str | None, error: WalletError) -> None:
        super().__init__(error.message)
        self.jti, self.error = jti, error


def _stored_receipt(session: Session, org: Organization, text: str, verifier: str,
                    directory: Directory) -> dict[str, Any] | None:
    """The receipt already given to `verifier` for a late but genuine presentation."""
    assert org.id is not None
    try:  # the holder's signature must still verify; only its age is forgiven
        pres = notes.verify_presentation(text, resolve=directory.resolve, audience=verifier,
                                         now=int(time.time()), max_age=10**9,
                                         ignore_expiry=True)
    except WalletError:
        return None
    row = note_store.note_by_jti(session, org_id=org.id, jti=pres.note.jti)
    if row is None or row.id is None or row.state != "redeemed":
        return None
    red = fed_store.redemption_of(session, note_id=row.id)
    if red is None or red.redeemer != verifier:
        return None
    return {"jti": row.jti, "receipt": red.receipt, "replayed": True}


def _book_redemption(session: Session, *, org: Organization, note: note_store.Redeemed,
                     request: redeem.RedeemRequest, now: int, kid: str,
                     key: Any) -> dict[str, Any]:
    assert org.id is not None
    receipt_jti = notes.new_jti(secrets.token_bytes(16))
    amount = Money(note.amount, note.currency)
    token = redeem.receipt(issuer=key_actions.issuer_id(org), verifier=request.verifier,
                           jti=receipt_jti, iat=now, note_jti=note.jti, amount=amount,
                           request_jti=request.jti, kid=kid, key=key)
    fed_store.add_redemption(session, {
        "org_id": org.id, "note_id": note.id, "redeemer": request.verifier,
        "amount": note.amount, "currency": note.currency, "receipt": token,
        "receipt_jti": receipt_jti, "request_jti": request.jti, "created_at": utcnow()})
    people.audit(session, org_id=org.id, actor=request.verifier, action="note.redeemed",
                 target=note.jti, details={"amount": str(amount)})
    # Last before the commit: every redemption by this verifier updates the same two
    # account rows, and each holds their locks until it commits.
    ledger_store.move(session, org_id=org.id, posting=ledger.Posting(
        ledger.NOTES_OUTSTANDING, ledger.payable(request.verifier), note.amount,
        note.currency, kind="redeem", key=f"redeem:{note.jti}", ref=note.jti,
        memo=f"redeemed by {request.verifier}"[:300]))
    return {"jti": note.jti, "receipt": token}


# -- the verifier side: honour -----------------------------------------------------------


@dataclass
class Outcome:
    """What happened to one presented note."""

    index: int
    jti: str | None = None
    issuer: str | None = None
    amount: Money | None = None
    error: dict[str, Any] | None = None
    receipt: str | None = None
    note: notes.Note | None = None

    @property
    def honoured(self) -> bool:
        return self.error is None and self.receipt is not None

    def fail(self, err: WalletError) -> None:
        self.error = err.as_dict()

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "jti": self.jti, "issuer": self.issuer,
                               "amount": self.amount.as_json() if self.amount else None,
                               "honoured": self.honoured}
        if self.error:
            out["error"] = self.error
        if self.receipt:
            out["receipt"] = self.receipt
        return out


@dataclass
class Honoured:
    """The answer to an honour request."""

    outcomes: list[Outcome] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)  # the engineer's, afterwards

    @property
    def credited(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.honoured]


def _policy(entry: TrustedIssuer | None, note: notes.Note) -> None:
    if entry is None:
        raise PolicyRejected("notes are honoured only from issuers in the trust list")
    accepted = entry.currencies.split(",")
    if note.amount.currency not in accepted:
        raise PolicyRejected(f"{note.amount.currency} is not accepted from this issuer"
                             f" (accepted: {', '.join(accepted)})")
    if entry.cap is not None and note.amount.micros > entry.cap:
        raise PolicyRejected("the note is larger than this issuer's cap per note")


def honour(session: Session, *, slug: str, email: str, presentations: object,
           consumer: str, org: Organization | None = None,
           person: Person | None = None, commit: bool = True) -> Honoured:
    """Verify presentations, redeem them at their issuers, credit the engineer once each.

    `consumer` names the idempotent request (a retry of it may reuse its spent nonce).
    Callers that already resolved the organisation and a member of it may pass them.
    With `commit=False` the credits are left in the session's transaction, for a caller
    that records its answer in the same commit (the API's idempotent response); it
    must commit or roll back. The nonce is committed before any issuer is called either
    way: no transaction is held across the network.
    """
    if org is None or person is None or org.slug != slug or person.email != email:
        org = org_or_404(session, slug)
        _m, person = member_or_404(session, org, email)
    if (not isinstance(presentations, list) or not presentations
            or len(presentations) > MAX_HONOUR):
        raise Malformed(f"presentations must be a list of 1-{MAX_HONOUR} presentations")
    directory = Directory(session, org)
    result = Honoured([Outcome(i) for i in range(len(presentations))])
    ready = _verify_all(session, org, directory, presentations, result, consumer, person)
    signer = key_actions.signer(session, org=org, rows=directory.own_key_rows()) if ready else None
    session.commit()  # nonce spent; no transaction is held while issuers answer
    receipts = _redeem_remote(org, directory, ready, signer) if signer else []
    if commit:
        with atomic(session):
            result.balances = _credit(session, org, person, receipts)
    else:
        try:
            result.balances = _credit(session, org, person, receipts)
        except BaseException:
            session.rollback()
            raise
    return result


def _verify_all(session: Session, org: Organization, directory: Directory,
                presentations: list[Any], result: Honoured, consumer: str,
                person: Person) -> list[tuple[Outcome, str]]:
    """Verify every presentation, then spend their one nonce, which must be bound to
    `person`: a presentation that leaked credits nobody but the engineer who asked for
    its nonce."""
    assert org.id is not None and person.id is not None
    now = int(time.time())
    ready: list[tuple[Outcome, str]] = []
    nonces: set[str] = set()
    for outcome, text in zip(result.outcomes, presentations, strict=True):
        try:
            # The nonce is checked once, below, by spending it (one conditional update).
            pres = notes.verify_presentation(text, resolve=directory.resolve,
                                             audience=directory.own_id, now=now)
            note = outcome.note = pres.note
            outcome.jti, outcome.issuer, outcome.amount = note.jti, note.issuer, note.amount
            if note.issuer == directory.own_id:
                raise PolicyRejected("this organisation issued the note; revoke it instead")
            _policy(directory.trusted(note.issuer), note)
            directory.check_status(note, redeeming=True)
            nonces.add(pres.nonce)
            ready.append((outcome, text))
        except WalletError as err:
            outcome.fail(err)
    if len(nonces) > 1:
        err = Malformed("all presentations of one request must use the same nonce")
        for outcome, _text in ready:
            outcome.fail(err)
        return []
    value = nonces.pop() if ready else ""
    if ready and not nonce_actions.spend(session, org_id=org.id, value=value,
                                         consumer=consumer, person_id=person.id):
        how = (f"get one from POST /api/v1/orgs/{org.slug}/nonces with your personal token"
               " (or signed in), or from the 'Bring credits' page")
        spent = NonceInvalid(
            f"the nonce was asked for anonymously; honour needs a nonce asked for as the"
            f" engineer credited: {how}" if nonce_actions.is_anonymous(org.id, value) else
            f"this organisation did not issue the nonce to you, or it is used or expired;"
            f" {how}")
        for outcome, _text in ready:
            outcome.fail(spent)
        return []
    return ready


def _redeem_remote(org: Organization, directory: Directory, ready: list[tuple[Outcome, str]],
                   signer: tuple[str, Any]) -> list[Outcome]:
    by_issuer: dict[str, list[tuple[Outcome, str]]] = defaultdict(list)
    for outcome, text in ready:
        assert outcome.issuer is not None
        by_issuer[outcome.issuer].append((outcome, text))
    kid, key = signer
    endpoints = {}
    for issuer in by_issuer:
        entry = directory.trusted(issuer)  # read in _verify_all: no database access here
        assert entry is not None  # _policy refused untrusted issuers
        endpoints[issuer] = str(entry.issuer_metadata["redeem_endpoint"])
    done: list[Outcome] = []
    for issuer, items in by_issuer.items():
        for start in range(0, len(items), redeem.MAX_PRESENTATIONS):
            batch = items[start:start + redeem.MAX_PRESENTATIONS]
            try:
                answers = _post_redeem(endpoints[issuer], redeem.request(
                    verifier=directory.own_id, issuer=issuer,
                    jti=notes.new_jti(secrets.token_bytes(16)), iat=int(time.time()),
                    presentations=[text for _o, text in batch], kid=kid, key=key))
                if len(answers) != len(batch):  # one answer per presentation, in order
                    raise IssuerUnavailable("the issuer's answer does not match the request")
                keys = directory.resolve(issuer)
            except WalletError as err:
                for outcome, _text in batch:
                    outcome.fail(err)
                continue
            for (outcome, _text), answer in zip(batch, answers, strict=True):
                _take_answer(outcome, answer, keys, directory.own_id)
                if outcome.receipt is not None and outcome.error is None:
                    done.append(outcome)
    return done


def _post_redeem(endpoint: str, request_token: str) -> list[dict[str, Any]]:
    body = json.dumps({"request": request_token}).encode()
    answer = transport_for(endpoint).request("POST", endpoint, body=body,
                                             content_type="application/json")
    if answer.status >= 500 or answer.status == 429:
        raise IssuerUnavailable(f"the issuer answered {answer.status}; try again later")
    try:
        data = jose.json_object(answer.body)
    except WalletError:
        raise IssuerUnavailable("the issuer's answer was not JSON") from None
    if answer.status != 200:
        raise _problem_error(data)
    results = data.get("results")
    if not isinstance(results, list):
        raise IssuerUnavailable("the issuer's answer has no results")
    return results


def _problem_error(problem: dict[str, Any]) -> WalletError:
    """Pass on an issuer's problem+json with its code, so the engineer sees why (the code
    only if it looks like one, the text without control characters)."""
    why = clean(problem.get("detail"), 300) or clean(problem.get("title"), 300) or "no reason"
    return Refusal(clean_code(problem.get("code")), f"the issuer refused: {why}")


def _take_answer(outcome: Outcome, answer: Any, keys: notes.IssuerKeys, own_id: str) -> None:
    assert outcome.note is not None
    if not isinstance(answer, dict) or answer.get("jti") not in (outcome.jti, None):
        outcome.fail(IssuerUnavailable("the issuer's answer does not match the request"))
        return
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        outcome.error = {"code": clean_code(error.get("code")),
                         "message": "the issuer refused: "
                         + (clean(error.get("message"), 300) or "no reason")}
        return
    try:
        checked = redeem.check_receipt(answer.get("receipt"), keys=keys, verifier=own_id,
                                       note=outcome.note)
    except WalletError as err:
        outcome.fail(IssuerUnavailable(f"the issuer's receipt did not verify: {err.message}"))
        return
    outcome.receipt = checked.token


def _credit(session: Session, org: Organization, person: Person,
            done: list[Outcome]) -> dict[str, int]:
    """Credit the engineer once per honoured note; return their balances afterwards."""
    from wallet.actions.wallets import balances

    assert org.id is not None and person.id is not None
    # Read before the postings, which lock the issuer's (shared) receivable row until the
    # commit; the wallet's new balance comes back from its own update.
    held = balances(session, org=org, person=person)
    for outcome in done:
        note, receipt = outcome.note, outcome.receipt
        assert note is not None and receipt is not None
        claims = jose.parse(receipt, typ=redeem.RECEIPT_TYP).payload
        row_id = insert_ignore(session, HonouredNote.__table__, {  # type: ignore[arg-type]
            "org_id": org.id, "issuer": note.issuer, "note_jti": note.jti,
            "person_id": person.id, "amount": note.amount.micros,
            "currency": note.amount.currency, "receipt": receipt,
            "receipt_jti": str(claims["jti"]), "created_at": utcnow(),
        }, ("org_id", "issuer", "note_jti"))
        if row_id is None:  # a concurrent request for the same note got here first
            outcome.receipt = None
            outcome.fail(AlreadyRedeemed("this note was already honoured here"))
            continue
        people.audit(session, org_id=org.id, actor=person.email, action="note.honour",
                     target=note.jti, details={"issuer": note.issuer,
                                               "amount": str(note.amount)})
        # Every honour of this issuer's notes debits the same receivable row: that update
        # waits for the commit, so the row is locked only while committing.
        after = ledger_store.move_reading(session, org_id=org.id, posting=ledger.Posting(
            ledger.receivable(note.issuer), ledger.wallet(person.id), note.amount.micros,
            note.amount.currency, kind="honour", key=f"honour:{note.issuer}:{note.jti}",
            ref=note.jti, memo=f"note honoured from {note.issuer}"[:300]), defer_debit=True)
        if after is not None and note.amount.currency == org.currency:
            held["available"] = after
    return held


# -- settlement --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """Where an organisation stands with one counterparty, in one currency."""

    counterparty: str
    name: str
    currency: str
    redeemed_by_them: int  # our notes they redeemed (gross, from our receipts)
    redeemed_count: int
    honoured_from_them: int  # their notes we honoured (gross, from their receipts)
    honoured_count: int
    we_owe: int  # outstanding: payable balance
    they_owe: int  # outstanding: minus the receivable balance


def settlement(session: Session, *, slug: str) -> list[Line]:
    """What this organisation owes and is owed, per counterparty, from the receipts."""
    org = org_or_404(session, slug)
    assert org.id is not None
    gross: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for red in fed_store.redemptions(session, org_id=org.id):
        g = gross[(red.redeemer, red.currency)]
        g[0] += red.amount
        g[1] += 1
    for hon in fed_store.honoured_all(session, org_id=org.id):
        g = gross[(hon.issuer, hon.currency)]
        g[2] += hon.amount
        g[3] += 1
    names = {e.issuer: e.name for e in fed_store.entries(session, org_id=org.id)}
    lines = []
    for (party, currency), (red_sum, red_n, hon_sum, hon_n) in sorted(gross.items()):
        lines.append(Line(
            party, names.get(party, ""), currency, red_sum, red_n, hon_sum, hon_n,
            ledger_store.balance(session, org_id=org.id, name=ledger.payable(party),
                                 currency=currency),
            -ledger_store.balance(session, org_id=org.id, name=ledger.receivable(party),
                                  currency=currency),
        ))
    session.rollback()
    return lines


def record_settlement(session: Session, *, slug: str, counterparty: str, direction: str,
                      amount: str, currency: str | None = None, reference: str = "",
                      idempotency_key: str, actor: Actor) -> bool:
    """Record money that changed hands with a counterparty; True when newly recorded."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    money = parse_money(amount, currency or org.currency)
    party = _normalise_issuer(counterparty)
    key = check_key(idempotency_key)
    if direction == "paid":  # we paid what we owed them
        posting = ledger.Posting(ledger.payable(party), ledger.EXTERNAL, money.micros,
                                 money.currency, kind="settle", key=f"settle:{key}",
                                 ref=party, memo=reference[:300])
    elif direction == "received":  # they paid what they owed us
        owed = -ledger_store.balance(session, org_id=org.id, name=ledger.receivable(party),
                                     currency=money.currency)
        if money.micros > owed:
            raise InsufficientFunds(f"{party} owes {Money(owed, money.currency)}, less than that")
        posting = ledger.Posting(ledger.EXTERNAL, ledger.receivable(party), money.micros,
                                 money.currency, kind="settle", key=f"settle:{key}",
                                 ref=party, memo=reference[:300])
    else:
        raise Malformed("direction is 'paid' or 'received'")
    with atomic(session):
        created = ledger_store.move(session, org_id=org.id, posting=posting)
        if created:
            people.audit(session, org_id=org.id, actor=actor.label, action="settlement.record",
                         target=party, details={"direction": direction, "amount": str(money),
                                                "reference": reference})
    return created


def bring_wallet(session: Session, *, slug: str, email: str, wallet_text: str,
                 passphrase: str, consumer: str) -> Honoured:
    """Honour every note of a wallet file: unlock the holder key in memory, present, honour.

    The passphrase and the decrypted key live only for this call; nothing is stored.
    """
    from wallet.core import walletfile

    org = org_or_404(session, slug)
    _m, person = member_or_404(session, org, email)
    wallet = walletfile.parse(wallet_text)
    if not wallet.notes:
        raise Malformed("the wallet file holds no notes")
    key = wallet.unlock(passphrase)
    nonce, _expires = nonce_actions.new_nonce(session, slug=org.slug, person_id=person.id)
    audience, now = key_actions.issuer_id(org), int(time.time())
    presentations = [notes.present(item, holder_key=key, audience=audience, nonce=nonce,
                                   iat=now) for item in wallet.notes]
    return honour(session, slug=slug, email=email, presentations=presentations,
                  consumer=consumer, org=org, person=person)


def receipts_for(session: Session, *, org: Organization, person: Person) -> list[HonouredNote]:
    """Notes from other issuers honoured for a person here."""
    assert org.id is not None and person.id is not None
    return fed_store.honoured_all(session, org_id=org.id, person_id=person.id)

