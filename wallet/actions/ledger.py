"""Funding the pool, reading balances and transfers, checking the ledger's invariants."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from wallet.actions._base import Actor, atomic, org_or_404, require_admin
from wallet.core import ledger as rules
from wallet.core.errors import Malformed
from wallet.core.money import Money, parse_money
from wallet.models import Organization, Person, Transfer
from wallet.store import holds as hold_store
from wallet.store import ledger, people

MAX_KEY_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Recorded:
    """A transfer and whether this call created it (False: an idempotent replay)."""

    transfer: Transfer
    created: bool


def check_key(key: str) -> str:
    """Validate a client-supplied idempotency key."""
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Malformed(f"idempotency key must be 1-{MAX_KEY_LENGTH} printable characters")
    return key


def fund(session: Session, *, slug: str, amount: str, currency: str | None = None,
         idempotency_key: str, actor: Actor, memo: str = "") -> Recorded:
    """Move money from outside into the organisation's pool, exactly once per key."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    money = parse_money(amount, currency or org.currency)
    key = check_key(idempotency_key)
    posting = rules.Posting(rules.EXTERNAL, rules.POOL, money.micros, money.currency,
                            kind="fund", key=f"fund:{key}", memo=memo.strip()[:300])
    with atomic(session):
        posted = ledger.post(session, org_id=_id(org), posting=posting)
        if posted.created:
            people.audit(session, org_id=org.id, actor=actor.label, action="pool.fund",
                         target=str(money), details={"key": key})
    return Recorded(posted.transfer, posted.created)


def pool(session: Session, *, org: Organization) -> Money:
    """Return the unallocated pool of an organisation."""
    return Money(ledger.balance(session, org_id=_id(org), name=rules.POOL,
                                currency=org.currency), org.currency)


@dataclass(frozen=True, slots=True)
class Movement:
    """A transfer as a person's transactions list it: its accounts by name, and what it
    did to their available balance (`sign`: in 1, out -1, neither 0)."""

    row: Transfer
    source: str
    destination: str
    sign: int


def transfers_of(session: Session, *, org: Organization, person: Person,
                 kind: str | None = None, limit: int = 50, offset: int = 0) -> list[Movement]:
    """A person's transfers at `org` (their wallet and unvested credit), newest first."""
    assert person.id is not None
    wallet = rules.wallet(person.id)
    rows = ledger.transfers(session, org_id=_id(org),
                            account_names=[wallet, rules.unvested(person.id)], kind=kind,
                            limit=limit, offset=offset)
    names = ledger.account_names(
        session, org_id=_id(org),
        ids={r.from_account_id for r in rows} | {r.to_account_id for r in rows})
    return [Movement(r, names.get(r.from_account_id, "?"), names.get(r.to_account_id, "?"),
                     1 if names.get(r.to_account_id) == wallet
                     else -1 if names.get(r.from_account_id) == wallet else 0) for r in rows]


def check(session: Session, *, slug: str | None = None) -> dict[str, list[str]]:
    """Check the ledger invariants for one or every organisation; map slug → problems.

    The invariants are listed in docs/ledger.md, "Invariants".
    """
    orgs = [org_or_404(session, slug)] if slug else people.orgs(session)
    report: dict[str, list[str]] = {}
    for org in orgs:
        states, outstanding = ledger.invariant_inputs(session, org_id=_id(org))
        report[org.slug] = rules.check_invariants(
            states, outstanding, hold_store.open_totals(session, org_id=_id(org)))
    session.rollback()  # read-only: end the transaction now
    return report


def _id(org: Organization) -> int:
    assert org.id is not None
    return org.id
