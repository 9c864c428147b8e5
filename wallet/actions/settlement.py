"""Settling between employers: what each owes the other, and the payments recorded.

Both sides compute the same gross figures from the same signed receipts (the issuer from
its redemptions, the verifier from its honoured notes); the outstanding figures are the
`payable:<party>` and `receivable:<party>` balances, which a recorded payment moves to
or from `external` (docs/federation.md, "Settlement").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlmodel import Session

from wallet.actions._base import Actor, atomic, org_or_404, require_admin
from wallet.actions.ledger import check_key
from wallet.actions.trust import normalise_issuer
from wallet.core import ledger
from wallet.core.errors import InsufficientFunds, Malformed
from wallet.core.money import Money, parse_money
from wallet.store import federation as fed_store
from wallet.store import ledger as ledger_store
from wallet.store import people


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
