"""Settling between employers: what each owes the other, and the payments recorded.

Both sides compute the same gross figures from the same signed receipts (the issuer from
its redemptions, the verifier from its honoured notes); the outstanding figures are the
`payable:<party>` and `receivable:<party>` balances, which a recorded payment moves to
or from `external` (docs/federation.md, "Settlement").

Paying is a protocol step (DESIGN §11.2), so that both sides post the same payment once:

1. `pay` (the payer, one transaction): store a statement signed with our org key (the
   same statement is sent again when `pay` runs again with its reference), commit;
2. (network, no transaction open) POST it to the payee's settlements endpoint, which
   comes from its pinned metadata;
3. `receive` (the payee, one transaction): verify it against its trust entry, check the
   amount against what the payer owes by its own receipts, claim the statement's jti,
   post `external -> receivable:payer` and answer a signed acknowledgement; a statement
   received before gets the acknowledgement stored for it;
4. (the payer, one transaction) verify the acknowledgement, move the statement `sent ->
   acknowledged` once and post `payable:payee -> external`.

`record` (one side's note of money that changed hands outside the protocol) is kept for
a counterparty that cannot receive statements; each side then records its own half.
"""

from __future__ import annotations

import json
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from sqlmodel import Session

from wallet import clock
from wallet.actions import signing, webhooks
from wallet.actions._base import Actor, atomic, commit, org_or_404, require_admin
from wallet.actions.ledger import check_key
from wallet.actions.lookups import Lookups
from wallet.actions.trust import normalise_issuer
from wallet.core import jose, ledger, notes
from wallet.core import settlement as core
from wallet.core.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    IssuerUnavailable,
    Malformed,
    PolicyRejected,
    Refusal,
    UntrustedIssuer,
    WalletError,
)
from wallet.core.money import Money, format_amount, parse_money
from wallet.models import Organization, TrustedIssuer
from wallet.peers import clean, clean_code, transport_for
from wallet.peers.base import origin
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import people
from wallet.store import settlement as store


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


def lines(session: Session, *, slug: str) -> list[Line]:
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
    found = []
    for (party, currency), (red_sum, red_n, hon_sum, hon_n) in sorted(gross.items()):
        found.append(Line(
            party, names.get(party, ""), currency, red_sum, red_n, hon_sum, hon_n,
            ledger_store.balance(session, org_id=org.id, name=ledger.payable(party),
                                 currency=currency),
            -ledger_store.balance(session, org_id=org.id, name=ledger.receivable(party),
                                  currency=currency),
        ))
    session.rollback()  # a read: nothing to keep
    return found


def record(session: Session, *, slug: str, counterparty: str, direction: str, amount: str,
           currency: str | None = None, reference: str = "", idempotency_key: str,
           actor: Actor) -> bool:
    """Record money that changed hands with a counterparty; True when newly recorded."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    money = parse_money(amount, currency or org.currency)
    party = normalise_issuer(counterparty)
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
        created = ledger_store.post(session, org_id=org.id, posting=posting).created
        if created:
            people.audit(session, org_id=org.id, actor=actor.label, action="settlement.record",
                         target=party, details={"direction": direction, "amount": str(money),
                                                "reference": reference})
    return created


# -- paying: the payer's side ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Paid:
    """A statement the payee acknowledged (now, or before: `replayed`)."""

    jti: str
    counterparty: str
    amount: Money
    reference: str
    outstanding: Money  # what we still owe the payee, by its receipts (its acknowledgement)
    we_owe: int  # what we owe it by ours, after posting
    replayed: bool

    def as_json(self) -> dict[str, Any]:
        return {"statement": self.jti, "counterparty": self.counterparty,
                "amount": self.amount.as_json(), "reference": self.reference,
                "outstanding": self.outstanding.as_json(),
                "we_owe": Money(self.we_owe, self.amount.currency).as_json(),
                "replayed": self.replayed}


def pay(session: Session, *, slug: str, counterparty: str, amount: str,
        currency: str | None = None, reference: str, actor: Actor, net: bool = False) -> Paid:
    """Pay a counterparty what we owe it: send it a signed statement, post once its
    acknowledgement verifies. Run again with the same reference, it sends the same
    statement again (its acknowledgement was lost) and posts nothing twice.

    `net`: the counterparty owes us too; all it owes us is cancelled against our debt
    (direction "net", `offset`) and `amount` is paid on top."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    money = parse_money(amount, currency or org.currency)
    party = normalise_issuer(counterparty)
    reference = core.check_reference(reference)
    entry = fed_store.entry(session, org_id=org.id, issuer=party)
    if entry is None:
        raise UntrustedIssuer(f"{party[:200]!r} is not in {slug}'s trust list: trust it"
                              " first ('wallet trust add'), its keys sign the acknowledgement")
    endpoint = settlement_endpoint(entry)
    row = store.sent_with_reference(session, org_id=org.id, counterparty=party,
                                    reference=reference)
    if row is None:
        row = _new_statement(session, org, party, money, reference, actor, net=net)
    if (row.amount, row.currency) != (money.micros, money.currency):
        raise IdempotencyConflict(f"the reference {reference!r} paid"
                                  f" {Money(row.amount, row.currency)} already; use another")
    statement_token, row_id, jti = row.statement, row.id, row.jti
    assert row_id is not None
    if row.state == "acknowledged":  # paid before: the same answer, nothing posted
        assert row.outstanding is not None
        return _paid(session, org, jti, party, money, reference,
                     Money(row.outstanding, money.currency), replayed=True)
    commit(session)  # the statement is kept before it leaves: a retry sends this one
    answer = _post_statement(session, org_id=org.id, row_id=row_id, endpoint=endpoint,
                             token=statement_token)
    lookups = Lookups(session, org)
    sent = core.read_statement(jose.parse(statement_token, typ=core.STATEMENT_TYP),
                               keys=lookups.directory.own_keys(), payee=party)
    try:
        ack = lookups.verify(lambda d: core.check_ack(answer, keys=d.resolve(party),
                                                     statement=sent))
    except WalletError as err:
        session.rollback()
        raise IssuerUnavailable("the acknowledgement did not verify: "
                                f"{err.message}; run the same 'pay' again") from None
    with atomic(session):
        # Once: a concurrent 'pay' with this reference sent the same statement, and only
        # one of the two moves it to acknowledged and posts.
        posted = store.set_ack(session, row_id=row_id, ack=ack.token, ack_jti=ack.jti,
                               outstanding=ack.outstanding.micros, at=clock.now(),
                               from_state="sent")
        if posted:
            if sent.offset is not None:  # what they owed us, cancelled against our debt
                ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
                    ledger.payable(party), ledger.receivable(party), sent.offset.micros,
                    money.currency, kind="settle", key=f"settlement-offset:{sent.jti}",
                    ref=party, memo=f"statement {sent.jti} (net): {reference}"[:300]))
            ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
                ledger.payable(party), ledger.EXTERNAL, money.micros, money.currency,
                kind="settle", key=f"settlement:{sent.jti}", ref=party,
                memo=f"statement {sent.jti}: {reference}"[:300]))
            people.audit(session, org_id=org.id, actor=actor.label, action="settlement.pay",
                         target=party, details={"statement": sent.jti, "amount": str(money),
                                                "reference": reference})
    return _paid(session, org, sent.jti, party, money, reference, ack.outstanding,
                 replayed=not posted)


def _paid(session: Session, org: Organization, jti: str, party: str, money: Money,
          reference: str, outstanding: Money, *, replayed: bool) -> Paid:
    assert org.id is not None
    owe = ledger_store.balance(session, org_id=org.id, name=ledger.payable(party),
                               currency=money.currency)
    session.rollback()  # a read
    return Paid(jti, party, money, reference, outstanding, owe, replayed)


def _unacknowledged(session: Session, org_id: int, party: str, currency: str) -> int:
    """What our statements to `party` that it has not acknowledged yet settle (a net
    one's offset included)."""
    total = 0
    for row in store.statements(session, org_id=org_id, counterparty=party):
        if row.role == "sent" and row.state == "sent" and row.currency == currency:
            offset = _offset_of(row)
            total += row.amount + (0 if offset is None else offset.micros)
    return total


def _offset_of(row: store.SettlementStatement) -> Money | None:
    """A stored net statement's offset, read from the statement itself (checked when it
    was signed or received)."""
    if row.direction != "net":
        return None
    offset = jose.parse(row.statement, typ=core.STATEMENT_TYP).payload.get("offset")
    return core.read_balance(offset)


def settlement_endpoint(entry: TrustedIssuer) -> str:
    """Where the counterparty takes statements: its pinned metadata's
    `settlement_endpoint`, else beside its `redeem_endpoint` (never a caller's address)."""
    meta = entry.issuer_metadata
    home = origin(entry.issuer)
    given = meta.get("settlement_endpoint")
    if isinstance(given, str) and len(given) <= 2000 and origin(given) == home:
        return given
    redeem_at = meta.get("redeem_endpoint")
    if isinstance(redeem_at, str) and redeem_at.endswith("/redeem") \
            and origin(redeem_at) == home:
        return redeem_at.removesuffix("/redeem") + "/settlements"
    raise IssuerUnavailable(f"{entry.issuer[:200]} publishes no settlements endpoint;"
                            " refresh its trust entry")


def _new_statement(session: Session, org: Organization, party: str, money: Money,
                   reference: str, actor: Actor, *, net: bool) -> store.SettlementStatement:
    """Sign and store a statement for `money` (within what we owe by our receipts)."""
    assert org.id is not None
    owe = ledger_store.balance(session, org_id=org.id, name=ledger.payable(party),
                               currency=money.currency)
    owe -= _unacknowledged(session, org.id, party, money.currency)
    offset = None
    if net:
        owed_us = -ledger_store.balance(session, org_id=org.id, name=ledger.receivable(party),
                                        currency=money.currency)
        if owed_us <= 0:
            raise PolicyRejected(f"{party[:200]} owes us nothing in {money.currency} to net;"
                                 " pay without --net")
        offset = Money(owed_us, money.currency)
    settles = money.micros + (offset.micros if offset is not None else 0)
    if settles > owe:
        raise PolicyRejected(f"we owe {party[:200]} {Money(max(owe, 0), money.currency)}"
                             " (less any statement not acknowledged yet), less than"
                             f" {Money(settles, money.currency)}")
    kid, key = signing.signer(session, org=org)
    now = clock.unix()
    statement = core.Statement(payer=signing.issuer_id(org), payee=party,
                               jti=notes.new_jti(secrets.token_bytes(16)), iat=now,
                               amount=money, reference=reference, through=now,
                               direction="net" if net else "pay", offset=offset)
    values = {"org_id": org.id, "counterparty": party, "jti": statement.jti,
              "digest": statement.digest(), "amount": money.micros,
              "currency": money.currency, "direction": statement.direction,
              "reference": reference, "created_at": clock.now(),
              "statement": core.sign_statement(statement, kid=kid, key=key)}
    store.add_sent(session, values)  # a concurrent pay with this reference: theirs
    people.audit(session, org_id=org.id, actor=actor.label, action="settlement.statement",
                 target=party, details={"statement": statement.jti, "amount": str(money),
                                        "reference": reference})
    row = store.sent_with_reference(session, org_id=org.id, counterparty=party,
                                    reference=reference)
    assert row is not None
    return row


def _post_statement(session: Session, *, org_id: int, row_id: int, endpoint: str,
                    token: str) -> object:
    """Send the statement (no transaction open); the acknowledgement JWS, unverified.

    A refusal (a 4xx problem) means the payee stored and posted nothing: the statement
    is dropped, so its reference may be used again. Anything else leaves it to be sent
    again (`IssuerUnavailable`)."""
    body = json.dumps({"statement": token}).encode()
    try:
        answer = transport_for(endpoint).request("POST", endpoint, body=body,
                                                 content_type="application/json")
    except WalletError as err:
        raise IssuerUnavailable(f"the counterparty could not be reached ({err.message});"
                                " run the same 'pay' again to send the same statement") from None
    if answer.status >= 500 or answer.status in (408, 409, 429):
        raise IssuerUnavailable(f"the counterparty answered {answer.status}; run the same"
                                " 'pay' again to send the same statement")
    try:
        data = jose.json_object(answer.body)
    except WalletError:
        raise IssuerUnavailable("the counterparty's answer was not JSON") from None
    if answer.status != 200:
        with atomic(session):
            store.forget_sent(session, row_id=row_id)
            people.audit(session, org_id=org_id, actor="settlement", action="settlement.refused",
                         target=endpoint[:200], details={"code": clean_code(data.get("code"))})
        why = clean(data.get("detail"), 300) or clean(data.get("title"), 300) or "no reason"
        raise Refusal(clean_code(data.get("code")), f"the counterparty refused: {why}")
    return data.get("acknowledgement")


# -- being paid: the payee's side --------------------------------------------------------


def receive(session: Session, *, slug: str, token: object) -> str:
    """Take a counterparty's settlement statement; answer our signed acknowledgement.

    Posted once per statement jti: the same statement again gets the acknowledgement
    stored for it (however old); other content under its jti is `idempotency_conflict`.
    """
    jws, payer = core.peek_payer(token)
    org = org_or_404(session, slug)
    assert org.id is not None
    lookups = Lookups(session, org)
    if payer == lookups.directory.own_id:
        raise Malformed("an organisation does not pay itself")
    statement = lookups.verify(lambda d: core.read_statement(
        jws, keys=d.resolve(payer), payee=d.own_id))
    stored = _stored_ack(session, org_id=org.id, statement=statement)
    if stored is not None:
        return stored
    core.check_fresh(statement, now=clock.unix())
    money = statement.amount
    owed = -ledger_store.balance(session, org_id=org.id, name=ledger.receivable(payer),
                                 currency=money.currency)
    core.check_owed(Money(statement.settles, money.currency), outstanding=owed,
                    settles=_settles(session, org.id, statement, owed))
    core.check_offset(statement, payee_owes=ledger_store.balance(
        session, org_id=org.id, name=ledger.payable(payer), currency=money.currency))
    kid, key = signing.signer(session, org=org, rows=lookups.directory.own_key_rows())
    with atomic(session):
        row_id = store.add_received(session, {
            "org_id": org.id, "counterparty": payer, "jti": statement.jti,
            "digest": statement.digest(), "amount": money.micros, "currency": money.currency,
            "direction": statement.direction, "reference": statement.reference,
            "statement": str(token), "created_at": clock.now()})
        if row_id is None:  # the same statement, delivered twice at once: the first won
            session.rollback()
            again = _stored_ack(session, org_id=org.id, statement=statement)
            assert again is not None
            return again
        if statement.offset is not None:  # what we owed them, cancelled against their debt
            ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
                ledger.payable(payer), ledger.receivable(payer), statement.offset.micros,
                money.currency, kind="settle", key=f"settlement-offset:{statement.jti}",
                ref=payer, memo=f"statement {statement.jti} (net): {statement.reference}"[:300]))
        posted = ledger_store.post(session, org_id=org.id, posting=ledger.Posting(
            ledger.EXTERNAL, ledger.receivable(payer), money.micros, money.currency,
            kind="settle", key=f"settlement:{statement.jti}", ref=payer,
            memo=f"statement {statement.jti}: {statement.reference}"[:300]))
        # The receivable row is locked from this update to the commit: a concurrent
        # statement read the balance before this one and is refused here.
        left = -(posted.balance if posted.balance is not None
                 else -owed + statement.settles)
        if left < 0:
            raise PolicyRejected(f"the statement settles"
                                 f" {Money(statement.settles, money.currency)}; by our"
                                 f" receipts {Money(owed, money.currency)} is owed")
        ack_jti = notes.new_jti(secrets.token_bytes(16))
        ack = core.sign_ack(payee=lookups.directory.own_id, payer=payer, jti=ack_jti,
                            iat=clock.unix(), statement=statement,
                            outstanding=Money(left, money.currency), kid=kid, key=key)
        store.set_ack(session, row_id=row_id, ack=ack, ack_jti=ack_jti, outstanding=left,
                      at=clock.now())
        people.audit(session, org_id=org.id, actor=payer, action="settlement.received",
                     target=payer, details={"statement": statement.jti, "amount": str(money),
                                            "reference": statement.reference})
        webhooks.emit(session, org_id=org.id, type="settlement.received",
                      key=f"settlement:{statement.jti}", data={
                          "statement": statement.jti, "payer": payer,
                          "reference": statement.reference, "direction": statement.direction,
                          **webhooks.money(money.micros, money.currency),
                          "outstanding": webhooks.money(left, money.currency)})
    return ack


def _stored_ack(session: Session, *, org_id: int, statement: core.Statement) -> str | None:
    """The acknowledgement we gave for this statement before, if we received it."""
    row = store.by_jti(session, org_id=org_id, jti=statement.jti)
    if row is None:
        return None
    if row.role != "received" or row.counterparty != statement.payer:
        raise IdempotencyConflict("a different statement was received with this jti")
    core.check_same(row.digest, statement)
    assert row.ack is not None
    return row.ack


def _settles(session: Session, org_id: int, statement: core.Statement, owed: int) -> int:
    """What the receipts a statement names (or those through its cut-off) come to."""
    currency = statement.amount.currency
    if statement.receipts is not None:
        found = store.honoured_of(session, org_id=org_id, issuer=statement.payer,
                                  note_jtis=list(statement.receipts))
        unknown = [j for j in statement.receipts
                   if j not in found or found[j][1] != currency]
        if unknown:
            raise PolicyRejected(f"we hold no receipt for {len(unknown)} of the statement's"
                                 f" notes (first {clean(unknown[0], 64)})")
        return sum(amount for amount, _c in found.values())
    assert statement.through is not None
    later = store.honoured_total(session, org_id=org_id, issuer=statement.payer,
                                 currency=currency,
                                 since=datetime.fromtimestamp(statement.through + 1, UTC))
    return owed - later


# -- reading the payments ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payment:
    """A statement sent or received, as the settlement page and reconcile show it."""

    counterparty: str
    jti: str
    role: str  # sent (we paid) | received (they paid us)
    amount: Money
    reference: str
    state: str  # sent (no acknowledgement yet) | acknowledged
    ack_jti: str | None
    outstanding: Money | None  # what the payer still owed after it, by the payee
    created_at: datetime
    acknowledged_at: datetime | None
    offset: Money | None = None  # a net statement's: what the payee owed, cancelled

    def as_json(self) -> dict[str, Any]:
        return {"statement": self.jti, "counterparty": self.counterparty, "role": self.role,
                "amount": self.amount.as_json(), "reference": self.reference,
                "offset": None if self.offset is None else self.offset.as_json(),
                "state": self.state, "acknowledgement": self.ack_jti,
                "outstanding": None if self.outstanding is None else self.outstanding.as_json(),
                "created_at": self.created_at.isoformat(),
                "acknowledged_at": None if self.acknowledged_at is None
                else self.acknowledged_at.isoformat()}


def payments(session: Session, *, slug: str,
             counterparty: str | None = None) -> dict[str, list[Payment]]:
    """Statements sent and received, per counterparty, oldest first."""
    org = org_or_404(session, slug)
    assert org.id is not None
    found: dict[str, list[Payment]] = defaultdict(list)
    for row in store.statements(session, org_id=org.id, counterparty=counterparty):
        found[row.counterparty].append(Payment(
            row.counterparty, row.jti, row.role, Money(row.amount, row.currency),
            row.reference, row.state, row.ack_jti,
            None if row.outstanding is None else Money(row.outstanding, row.currency),
            row.created_at, row.acknowledged_at, _offset_of(row)))
    session.rollback()  # a read
    return dict(found)


# -- reconciling ---------------------------------------------------------------------------


def pair_view(session: Session, *, org: Organization, counterparty: str) -> dict[str, Any]:
    """Our side of the pair, as `core.differences` compares it (no signature)."""
    assert org.id is not None

    def receipt(note: str, receipt_jti: str, amount: int, currency: str) -> dict[str, Any]:
        return {"note": note, "receipt": receipt_jti,
                "amount": Money(amount, currency).as_json()}

    redeemed, honoured = store.receipts_with(session, org_id=org.id, counterparty=counterparty)
    owed = {}
    for currency in sorted({r[3] for r in redeemed} | {r[3] for r in honoured}):
        owed[currency] = {
            "we_owe": format_amount(ledger_store.balance(
                session, org_id=org.id, name=ledger.payable(counterparty), currency=currency)),
            "they_owe": format_amount(-ledger_store.balance(
                session, org_id=org.id, name=ledger.receivable(counterparty),
                currency=currency))}
    return {
        "counterparty": counterparty, "owed": owed,
        "they_redeemed": [receipt(*r) for r in redeemed],
        "we_honoured": [receipt(*r) for r in honoured],
        "payments": [{"statement": row.jti, "way": "paid" if row.role == "sent" else "received",
                      "amount": Money(row.amount, row.currency).as_json(),
                      "offset": None if (offset := _offset_of(row)) is None
                      else offset.as_json(),
                      "reference": row.reference, "acknowledged": row.state == "acknowledged"}
                     for row in store.statements(session, org_id=org.id,
                                                 counterparty=counterparty)],
    }


def view_for(session: Session, *, slug: str, counterparty: str, token: object) -> str:
    """Answer a counterparty's signed request with our signed view of the pair."""
    jws, requester = core.peek_query(token)
    org = org_or_404(session, slug)
    party = normalise_issuer(counterparty)
    if requester != party:
        raise UntrustedIssuer("the request is signed by another organisation than the one"
                              " it asks about")
    lookups = Lookups(session, org)
    if party == lookups.directory.own_id:
        raise Malformed("an organisation has no settlement with itself")
    now = clock.unix()
    lookups.verify(lambda d: core.check_query(jws, keys=d.resolve(party),
                                              responder=d.own_id, now=now))
    view = pair_view(session, org=org, counterparty=party)
    kid, key = signing.signer(session, org=org, rows=lookups.directory.own_key_rows())
    session.rollback()  # a read
    return core.sign_view(view, responder=lookups.directory.own_id, requester=party,
                          jti=notes.new_jti(secrets.token_bytes(16)), iat=now, kid=kid,
                          key=key)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """Our view and the counterparty's signed view of the pair, and how they differ."""

    counterparty: str
    differences: list[str]
    ours: dict[str, Any]
    theirs: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"counterparty": self.counterparty, "agree": not self.differences,
                "differences": self.differences,
                "receipts": {"they_redeemed": len(self.ours["they_redeemed"]),
                             "we_honoured": len(self.ours["we_honoured"])},
                "payments": len(self.ours["payments"])}


def reconcile(session: Session, *, slug: str, counterparty: str, actor: Actor) -> Reconciled:
    """Fetch the counterparty's signed view of the pair and compare it with ours."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    assert org.id is not None
    party = normalise_issuer(counterparty)
    entry = fed_store.entry(session, org_id=org.id, issuer=party)
    if entry is None:
        raise UntrustedIssuer(f"{party[:200]!r} is not in {slug}'s trust list")
    me = signing.issuer_id(org)
    url = settlement_endpoint(entry) + "/" + quote(me, safe="")  # the pair, as they see it
    kid, key = signing.signer(session, org=org)
    query = core.sign_query(requester=me, responder=party,
                            jti=notes.new_jti(secrets.token_bytes(16)), iat=clock.unix(),
                            kid=kid, key=key)
    commit(session)  # nothing written: no transaction open while the peer answers
    answer = transport_for(url).request("GET", url + "?" + urlencode({"request": query}))
    if answer.status >= 500 or answer.status == 429:
        raise IssuerUnavailable(f"the counterparty answered {answer.status}; try again later")
    try:
        data = jose.json_object(answer.body)
    except WalletError:
        raise IssuerUnavailable("the counterparty's answer was not JSON") from None
    if answer.status != 200:
        why = clean(data.get("detail"), 300) or clean(data.get("title"), 300) or "no reason"
        raise Refusal(clean_code(data.get("code")), f"the counterparty refused: {why}")
    lookups = Lookups(session, org)
    theirs = lookups.verify(lambda d: core.read_view(data.get("view"), keys=d.resolve(party),
                                                     responder=party, requester=me))
    ours = pair_view(session, org=org, counterparty=party)
    session.rollback()  # a read
    return Reconciled(party, core.differences(ours, theirs), ours, theirs)


ACCOUNT_SHOWN = 100  # the latest movements a page shows (the CSV and reconcile have all)


def account(session: Session, *, slug: str, counterparty: str,
            currency: str) -> list[core.AccountLine]:
    """Every movement of what we and `counterparty` owe each other in `currency`, oldest
    first, each with the running balance (> 0: we owe them): receipts both ways,
    payments, netting. Straight from the ledger's transfers, so its last balance is
    the outstanding figure of `lines`."""
    org = org_or_404(session, slug)
    assert org.id is not None
    payable, receivable = ledger.payable(counterparty), ledger.receivable(counterparty)
    moves, after = [], 0
    while True:  # keyset pages: a long history is read in bounded pieces
        rows = ledger_store.transfers_page(session, org_id=org.id, since=None, before=None,
                                           after_id=after, limit=1000,
                                           account_names=(payable, receivable))
        moves += [(r.created_at, r.kind, r.source, r.destination, r.ref or "", r.amount)
                  for r in rows if r.currency == currency]
        if len(rows) < 1000:
            break
        after = rows[-1].id
    return core.account_lines(moves, payable=payable, receivable=receivable)
