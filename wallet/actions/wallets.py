"""What an engineer holds at one organisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from sqlmodel import Session, select

from wallet.core import ledger as rules
from wallet.models import Note, Organization, Person, Tranche
from wallet.store import ledger


@dataclass(frozen=True, slots=True)
class Summary:
    """Balances of one person at one organisation, in micros of `currency`."""

    currency: str
    available: int
    unvested: int
    spent: int
    outstanding_notes: int
    outstanding_count: int


def summary(session: Session, *, org: Organization, person: Person) -> Summary:
    """Return a person's balances at an organisation."""
    assert org.id is not None and person.id is not None
    currency = org.currency
    outstanding = session.exec(
        select(sa.func.coalesce(sa.func.sum(Note.amount), 0), sa.func.count())
        .where(Note.org_id == org.id, Note.person_id == person.id, Note.state == "active",
               Note.currency == currency)
    ).one()
    spent = ledger.total_moved(session, org_id=org.id, currency=currency,
                               source=rules.wallet(person.id), destination=rules.SPENT)
    return Summary(
        currency=currency,
        available=ledger.balance(session, org_id=org.id, name=rules.wallet(person.id),
                                 currency=currency),
        unvested=ledger.balance(session, org_id=org.id, name=rules.unvested(person.id),
                                currency=currency),
        spent=int(spent),
        outstanding_notes=int(outstanding[0]),
        outstanding_count=int(outstanding[1]),
    )


def next_vesting(session: Session, *, org: Organization, person: Person,
                 after: date | None = None) -> tuple[date, int] | None:
    """Return the next vesting date after `after` (default today) and what vests then."""
    from wallet.actions._base import today

    assert org.id is not None and person.id is not None
    day = session.exec(
        select(sa.func.min(Tranche.due_on)).where(
            Tranche.org_id == org.id, Tranche.person_id == person.id,
            Tranche.state == "pending", Tranche.due_on > (after or today()))
    ).one()
    if day is None:
        return None
    amount = session.exec(
        select(sa.func.sum(Tranche.amount)).where(
            Tranche.org_id == org.id, Tranche.person_id == person.id,
            Tranche.state == "pending", Tranche.due_on == day)
    ).one()
    return day, int(amount or 0)
