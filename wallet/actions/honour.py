"""The verifier's side: honour notes another employer issued, crediting the engineer once.

One honour, in three steps (docs/federation.md, "the life of one honour request"):

1. `prepare` (one transaction, which the caller commits): verify every presentation
   against the directory (re-pinning a stale issuer and fetching status lists are
   network steps between transactions, `Lookups`), apply the trust policy, then spend
   the presentations' one nonce, which must be bound to the engineer credited;
2. `redeem_at_issuers` (network, no transaction open): one signed redeem request per
   issuer and batch of eight, and each receipt checked against the issuer's keys;
3. `credit` (one transaction, which the caller commits): per receipt a unique
   honoured-note row and the posting `receivable:A → wallet:engineer`, keyed by
   (issuer, note) twice over.

`honour` runs the three for the CLI, the portal and the demo; the API runs them under
its Idempotency-Key (`honour_api` inside `wallet.actions.idempotency.once`), so the
stored answer commits with the credits.

A verified note whose issuer cannot be reached (its redeem endpoint, or its status list)
is not refused when WALLET_PENDING_HONOURS is on: step 3 records a **pending honour**
for it instead (nothing credited, the nonce spent for this engineer), and a background
job retries the redeem (`wallet.actions.pending`) with these same steps.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import current_app
from sqlmodel import Session

from wallet import clock
from wallet.actions import nonces as nonce_actions
from wallet.actions import signing, webhooks
from wallet.actions._base import atomic, commit, member_or_404, org_or_404
from wallet.actions.idempotency import Reply
from wallet.actions.lookups import Lookups
from wallet.actions.wallets import balances
from wallet.core import jose, ledger, notes, pending, redeem
from wallet.core.errors import (
    AlreadyRedeemed,
    IssuerUnavailable,
    Malformed,
    NonceInvalid,
    PolicyRejected,
    Refusal,
    WalletError,
)
from wallet.core.money import Money, format_amount
from wallet.directory import Directory
from wallet.models import HonouredNote, Organization, Person, TrustedIssuer
from wallet.peers import clean, clean_code, transport_for
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import pending as pending_store
from wallet.store import people

MAX_HONOUR = 50


@dataclass
class Outcome:
    """What happened to one presented note."""

    index: int
    jti: str | None = None
    issuer: str | None = None
    amount: Money | None = None
    error: WalletError | None = None
    receipt: str | None = None
    note: notes.Note | None = None
    status_url: str | None = None  # a pending honour's: the issuer could not be reached

    @property
    def honoured(self) -> bool:
        return self.error is None and self.receipt is not None

    @property
    def pending(self) -> bool:
        return self.status_url is not None

    def fail(self, err: WalletError) -> None:
        self.error = err

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "jti": self.jti, "issuer": self.issuer,
                               "amount": self.amount.as_json() if self.amount else None,
                               "honoured": self.honoured}
        if self.pending:
            out.update(state=pending.PENDING, status_url=self.status_url)
        elif self.error:
            out["error"] = self.error.as_dict()
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

    @property
    def pending(self) -> list[Outcome]:
        """The notes waiting for their issuer (pending honours)."""
        return [o for o in self.outcomes if o.pending]

    def pending_answer(self, currency: str) -> dict[str, Any]:
        """The 202 answer while notes wait for their issuer: the first one's status URL
        (each pending note carries its own in `results`)."""
        return {"state": pending.PENDING, "status_url": self.pending[0].status_url,
                **self.as_json(currency)}

    def as_json(self, currency: str) -> dict[str, Any]:
        """The honour API's answer (docs/protocol.md)."""
        return {"results": [o.as_json() for o in self.outcomes],
                "honoured": len(self.credited),
                "balance": {"currency": currency,
                            **{k: format_amount(v) for k, v in self.balances.items()}}}

    def refusal(self, currency: str) -> WalletError:
        """Why nothing was credited, as one error carrying the whole answer: 503 when no
        issuer could be reached (a retry may succeed), else the first note's error."""
        payload = self.as_json(currency)
        errors = [o.error for o in self.outcomes if o.error]
        if errors and all(e.code == "issuer_unavailable" for e in errors):
            return IssuerUnavailable("no issuer could be reached; nothing was credited;"
                                     " retry with the same Idempotency-Key", **payload)
        first = errors[0] if errors else Refusal("malformed", "nothing honoured")
        return Refusal(first.code, first.message, **payload)


@dataclass
class Plan:
    """A honour request verified and its nonce spent, ready to redeem at the issuers."""

    org: Organization
    person: Person
    lookups: Lookups
    result: Honoured
    ready: list[tuple[Outcome, str]]  # each verified outcome and its presentation
    signer: tuple[str, Ed25519PrivateKey] | None
    consumer: str = ""  # the request that spent the nonce
    # Spent but not sent: their issuer's status list could not be fetched (pending honours).
    deferred: list[tuple[Outcome, str]] = field(default_factory=list)
    held: bool = False  # a pending honour's retry: the redeem request says "pending"


def honour(session: Session, *, slug: str, email: str, presentations: object,
           consumer: str, org: Organization | None = None,
           person: Person | None = None) -> Honoured:
    """Verify presentations, redeem them at their issuers, credit the engineer once each.

    `consumer` names the idempotent request (a retry of it may reuse its spent nonce).
    Callers that already resolved the organisation and a member of it may pass them.
    Commits twice: the spent nonce before any issuer is called, the credits after.
    """
    if org is None or person is None or org.slug != slug or person.email != email:
        org = org_or_404(session, slug)
        _m, person = member_or_404(session, org, email)
    plan = prepare(session, org=org, person=person, presentations=presentations,
                   consumer=consumer)
    commit(session)  # the nonce is spent; no transaction is held while issuers answer
    done = redeem_at_issuers(plan)
    with atomic(session):
        result = credit(session, plan, done)
        wait_for_issuers(session, plan)
        return result


def honour_api(session: Session, *, org: Organization, person: Person,
               body: dict[str, Any], consumer: str) -> Reply:
    """The honour API's handler, run under its Idempotency-Key (`once`), so its result is
    the `Reply` (status, JSON object) stored as the key's answer; the action's own result
    is `honour`'s `Honoured`. The claim commits with
    the nonce, and the credits are left for the stored answer's commit. Nothing credited
    is an error carrying the whole answer (stored, or for a 5xx the key released)."""
    if set(body) != {"presentations"}:
        raise Malformed('send {"presentations": ["<presentation>", …]}')
    plan = prepare(session, org=org, person=person, presentations=body["presentations"],
                   consumer=consumer)
    commit(session)  # the claim and the nonce; no transaction is held while issuers answer
    result = credit(session, plan, redeem_at_issuers(plan))
    if wait_for_issuers(session, plan):  # stored with the key's answer: a retry replays it
        return 202, result.pending_answer(org.currency)
    if not result.credited:
        raise result.refusal(org.currency)
    return 200, result.as_json(org.currency)


# -- 1. verify and spend the nonce -----------------------------------------------------------


class _Checked(NamedTuple):
    """One presentation verified as far as it went."""

    presentation: notes.Presentation | None
    error: WalletError | None


def prepare(session: Session, *, org: Organization, person: Person, presentations: object,
            consumer: str) -> Plan:
    """Verify every presentation, then spend their one nonce, which must be bound to
    `person`: a presentation that leaked credits nobody but the engineer who asked for
    its nonce. Leaves the nonce in the session's transaction for the caller to commit."""
    if (not isinstance(presentations, list) or not presentations
            or len(presentations) > MAX_HONOUR):
        raise Malformed(f"presentations must be a list of 1-{MAX_HONOUR} presentations")
    lookups = Lookups(session, org)
    now = clock.unix()
    checked = lookups.verify(lambda d: [_check(d, text, now) for text in presentations])
    result = Honoured([Outcome(i) for i in range(len(presentations))])
    verified: list[tuple[Outcome, str, notes.Presentation]] = []
    for outcome, text, (pres, err) in zip(result.outcomes, presentations, checked,
                                          strict=True):
        if pres is not None:
            note = outcome.note = pres.note
            outcome.jti, outcome.issuer, outcome.amount = note.jti, note.issuer, note.amount
        if err is not None:
            outcome.fail(err)
        elif pres is not None:
            verified.append((outcome, text, pres))
    verified, unlisted = _listed(lookups, verified, defer=pending_on())
    spent = _spend(session, org, person, consumer, verified + unlisted)
    deferred = [(o, t) for o, t in spent if any(o is u for u, _t, _p in unlisted)]
    ready = [(o, t) for o, t in spent if not any(o is d for d, _t in deferred)]
    signer = (signing.signer(session, org=org, rows=lookups.directory.own_key_rows())
              if ready else None)
    return Plan(org, person, lookups, result, ready, signer, consumer, deferred)


def _check(directory: Directory, text: object, now: int) -> _Checked:
    """Verify one presentation and apply the trust policy (reads only: may run twice)."""
    pres = None
    try:
        # The nonce is checked once, later, by spending it (one conditional update).
        pres = notes.verify_presentation(text, resolve=directory.resolve,
                                         audience=directory.own_id, now=now)
        if pres.note.issuer == directory.own_id:
            raise PolicyRejected("this organisation issued the note; revoke it instead")
        check_policy(directory.trusted(pres.note.issuer), pres.note)
    except WalletError as err:
        return _Checked(pres, err)
    return _Checked(pres, None)


def check_policy(entry: TrustedIssuer | None, note: notes.Note) -> None:
    if entry is None:
        raise PolicyRejected("notes are honoured only from issuers in the trust list")
    accepted = entry.currencies.split(",")
    if note.amount.currency not in accepted:
        raise PolicyRejected(f"{note.amount.currency} is not accepted from this issuer"
                             f" (accepted: {', '.join(accepted)})")
    if entry.cap is not None and note.amount.micros > entry.cap:
        raise PolicyRejected("the note is larger than this issuer's cap per note")


Verified = list[tuple[Outcome, str, notes.Presentation]]


def _listed(lookups: Lookups, verified: Verified, *,
            defer: bool) -> tuple[Verified, Verified]:
    """The verified presentations whose notes their issuers' status lists let through
    (fetched first where this process holds none: a network step); the others fail.

    `defer`: those whose list could not be fetched come back second, to wait for their
    issuer as pending honours (nothing is credited before the issuer, the authority at
    redemption, answers), instead of failing closed."""
    sources: dict[str, str] = {}
    for outcome, _text, pres in verified:
        try:
            uri = lookups.directory.status_source(pres.note, redeeming=True)
        except WalletError as err:
            outcome.fail(err)
            continue
        if uri is not None:
            sources[uri] = pres.note.issuer
    lookups.fetch_lists(sources)
    passed, unlisted = [], []
    for outcome, text, pres in verified:
        if outcome.error is not None:
            continue
        try:
            lookups.check_status(pres.note, redeeming=True)
        except WalletError as err:
            outcome.fail(err)
            if defer and isinstance(err, IssuerUnavailable):
                unlisted.append((outcome, text, pres))
            continue
        passed.append((outcome, text, pres))
    return passed, unlisted


def _spend(session: Session, org: Organization, person: Person, consumer: str,
           verified: Verified) -> list[tuple[Outcome, str]]:
    """Spend the one nonce of the verified presentations; those it cannot cover fail."""
    assert org.id is not None and person.id is not None
    ready = [(outcome, text) for outcome, text, _pres in verified]
    nonces = {pres.nonce for _outcome, _text, pres in verified}
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


# -- 2. redeem at the issuers (network) --------------------------------------------------------


def redeem_at_issuers(plan: Plan) -> list[Outcome]:
    """Redeem the ready notes at their issuers; return those with a verified receipt.

    No database access: the endpoints come from the trust entries read in `prepare`.
    """
    if plan.signer is None:
        return []
    by_issuer: dict[str, list[tuple[Outcome, str]]] = defaultdict(list)
    for outcome, text in plan.ready:
        assert outcome.issuer is not None
        by_issuer[outcome.issuer].append((outcome, text))
    answered: list[tuple[Outcome, Any]] = []
    for issuer, items in by_issuer.items():
        entry = plan.lookups.directory.trusted(issuer)  # read in prepare: no query here
        assert entry is not None  # the policy refused untrusted issuers
        endpoint = str(entry.issuer_metadata["redeem_endpoint"])
        for start in range(0, len(items), redeem.MAX_PRESENTATIONS):
            batch = items[start:start + redeem.MAX_PRESENTATIONS]
            try:
                answers = _post_redeem(endpoint, _request(plan, issuer, batch))
                if len(answers) != len(batch):  # one answer per presentation, in order
                    raise IssuerUnavailable("the issuer's answer does not match the request")
            except WalletError as err:
                for outcome, _text in batch:
                    outcome.fail(err)
                continue
            answered += [(outcome, answer) for (outcome, _t), answer in zip(batch, answers,
                                                                            strict=True)]
    # A receipt signed with a key we had not pinned yet re-pins its issuer, once.
    checked = plan.lookups.verify(
        lambda d: [_receipt(outcome, answer, d) for outcome, answer in answered])
    done = []
    for (outcome, _answer), (receipt, err) in zip(answered, checked, strict=True):
        if err is not None:
            outcome.fail(err)
        else:
            outcome.receipt = receipt
            done.append(outcome)
    return done


def _request(plan: Plan, issuer: str, batch: list[tuple[Outcome, str]]) -> str:
    assert plan.signer is not None
    kid, key = plan.signer
    return redeem.request(verifier=plan.lookups.directory.own_id, issuer=issuer,
                          jti=notes.new_jti(secrets.token_bytes(16)), iat=clock.unix(),
                          presentations=[text for _o, text in batch], kid=kid, key=key,
                          held=plan.held)


def _post_redeem(endpoint: str, request_token: str) -> list[Any]:
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


def _receipt(outcome: Outcome, answer: Any,
             directory: Directory) -> tuple[str | None, WalletError | None]:
    """The issuer's answer for one note: its verified receipt, or why there is none."""
    assert outcome.note is not None and outcome.issuer is not None
    if not isinstance(answer, dict) or answer.get("jti") not in (outcome.jti, None):
        return None, IssuerUnavailable("the issuer's answer does not match the request")
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        return None, Refusal(clean_code(error.get("code")), "the issuer refused: "
                             + (clean(error.get("message"), 300) or "no reason"))
    try:
        keys = directory.resolve(outcome.issuer)
        checked = redeem.check_receipt(answer.get("receipt"), keys=keys,
                                       verifier=directory.own_id, note=outcome.note)
    except WalletError as err:
        return None, IssuerUnavailable(f"the issuer's receipt did not verify: {err.message}")
    return checked.token, None


# -- 3. credit -----------------------------------------------------------------------------------


def credit(session: Session, plan: Plan, done: list[Outcome]) -> Honoured:
    """Credit the engineer once per honoured note (in the session's transaction, which
    the caller commits); the result carries their balances afterwards."""
    org, person = plan.org, plan.person
    assert org.id is not None and person.id is not None
    # Read before the postings, which lock the issuer's (shared) receivable row until the
    # commit; the wallet's new balance comes back from its own update.
    held = balances(session, org=org, person=person)
    for outcome in done:
        note, receipt = outcome.note, outcome.receipt
        assert note is not None and receipt is not None
        claims = jose.parse(receipt, typ=redeem.RECEIPT_TYP).payload
        row_id = fed_store.add_honoured(session, {
            "org_id": org.id, "issuer": note.issuer, "note_jti": note.jti,
            "person_id": person.id, "amount": note.amount.micros,
            "currency": note.amount.currency, "receipt": receipt,
            "receipt_jti": str(claims["jti"]), "created_at": clock.now(),
        })
        if row_id is None:  # a concurrent request for the same note got here first
            outcome.receipt = None
            outcome.fail(AlreadyRedeemed("this note was already honoured here"))
            continue
        people.audit(session, org_id=org.id, actor=person.email, action="note.honour",
                     target=note.jti, details={"issuer": note.issuer,
                                               "amount": str(note.amount)})
        # Every honour of this issuer's notes debits the same receivable row: that update
        # waits for the commit, so the row is locked only while committing.
        posted = ledger_store.post(session, org_id=org.id, defer_debit=True,
                                   posting=ledger.Posting(
            ledger.receivable(note.issuer), ledger.wallet(person.id), note.amount.micros,
            note.amount.currency, kind="honour", key=f"honour:{note.issuer}:{note.jti}",
            ref=note.jti, memo=f"note honoured from {note.issuer}"[:300]))
        webhooks.emit(session, org_id=org.id, type="honour.completed", data={
            "note": note.jti, "issuer": note.issuer, "person": person.email,
            **webhooks.money(note.amount.micros, note.amount.currency)})
        if posted.balance is not None and note.amount.currency == org.currency:
            held["available"] = posted.balance
    plan.result.balances = held
    return plan.result


def receipts_for(session: Session, *, org: Organization, person: Person) -> list[HonouredNote]:
    """Notes from other issuers honoured for a person here."""
    assert org.id is not None and person.id is not None
    return fed_store.honoured_all(session, org_id=org.id, person_id=person.id)


# -- 3b. wait for the issuers that could not be reached (pending honours) ------------------


def pending_on() -> bool:
    """Whether a note whose issuer cannot be reached waits as a pending honour (the
    setting WALLET_PENDING_HONOURS; it needs a `wallet worker` to complete)."""
    return bool(current_app.config["WALLET_PENDING_HONOURS"])


def status_url(org: Organization, public_id: str) -> str:
    """Where the engineer asks how a pending honour stands."""
    return (f"{current_app.config['WALLET_BASE_URL']}/api/v1/orgs/{org.slug}"
            f"/honours/{public_id}")


def first_retry(now: datetime, attempts: int = 0) -> datetime:
    """When to try a pending honour again after `attempts` tries (exponential backoff)."""
    cfg = current_app.config
    return now + timedelta(seconds=pending.next_delay(
        attempts, first=int(cfg["WALLET_PENDING_RETRY_SECONDS"]),
        most=int(cfg["WALLET_PENDING_RETRY_MAX_SECONDS"])))


def wait_for_issuers(session: Session, plan: Plan) -> bool:
    """Record a pending honour for each spent note whose issuer could not be reached (in
    the caller's transaction); True when any note now waits. Off (nothing recorded) when
    WALLET_PENDING_HONOURS is, and for a retry, which has its row already."""
    if plan.held or not pending_on():
        return False
    waiting = [(o, t) for o, t in plan.ready if isinstance(o.error, IssuerUnavailable)]
    for outcome, text in waiting + plan.deferred:
        _wait(session, plan, outcome, text)
    return bool(plan.result.pending)


def _wait(session: Session, plan: Plan, outcome: Outcome, text: str) -> None:
    org, person, note = plan.org, plan.person, outcome.note
    assert org.id is not None and person.id is not None and note is not None
    assert outcome.error is not None
    now = clock.now()
    public_id = f"ph_{secrets.token_urlsafe(18)}"
    row_id = pending_store.insert(session, {
        "public_id": public_id, "org_id": org.id, "person_id": person.id,
        "issuer": note.issuer, "note_jti": note.jti, "amount": note.amount.micros,
        "currency": note.amount.currency, "presentation": text,
        "consumer": plan.consumer[:250], "state": pending.PENDING, "attempts": 0,
        "next_attempt_at": first_retry(now), "note_expires_at": datetime.fromtimestamp(
            note.exp, UTC), "last_error": outcome.error.message[:300], "created_at": now})
    if row_id is None:  # the note waits already (presented again while its issuer sleeps)
        found = pending_store.open_for_note(session, org_id=org.id, issuer=note.issuer,
                                            jti=note.jti)
        if found is None or found.person_id != person.id:
            return  # not theirs to wait on: the outcome keeps its error
        public_id = found.public_id
    else:
        people.audit(session, org_id=org.id, actor=person.email, action="note.pending",
                     target=note.jti, details={"issuer": note.issuer,
                                               "amount": str(note.amount)})
    outcome.status_url = status_url(org, public_id)
