"""Finance reports read from the ledger: the liability roll-forward of a date range and
balances as of a date, for the organisation and for one person (issue 15).

Dates are UTC calendar days. A range [from, to) holds the transfers made from `from`
00:00 UTC up to, not including, `to` 00:00 UTC; its opening is the position as of the
start of `from`, its closing the position as of the start of `to`. A balance "as of" a
day is the position at the end of that day (every transfer of the day included).
Everything is computed from the transfers — the truth of the ledger — never from the
accounts' cached balances, in the organisation's currency. These are reads: nothing is
vested or written on the way (unlike `wallets.summary`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlmodel import Session

from wallet.actions._base import parse_date
from wallet.core import ledger as rules
from wallet.core import rollforward
from wallet.core.errors import Malformed
from wallet.core.money import format_amount
from wallet.models import Organization, Person
from wallet.store import ledger as ledger_store


def start_of(day: date) -> datetime:
    """00:00 UTC of `day`."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def end_of(day: date) -> datetime:
    """The end of `day` (00:00 UTC of the next day): transfers before it are "as of" it."""
    if day == date.max:
        return datetime.max.replace(tzinfo=UTC)
    return start_of(day + timedelta(days=1))


def parse_range(start: object, end: object) -> tuple[date, date]:
    """Parse a [from, to) range of ISO dates, or raise `Malformed` with every problem by
    field in `extra["fields"]` (the message is the first)."""
    days: dict[str, date] = {}
    problems: dict[str, str] = {}
    for field, value in (("from", start), ("to", end)):
        try:
            days[field] = parse_date(value, field)
        except Malformed as err:
            problems[field] = err.message
    if not problems and days["from"] >= days["to"]:
        problems["to"] = "from must be before to (the range is [from, to): to is not included)"
    if problems:
        raise Malformed(next(iter(problems.values())), fields=problems)
    return days["from"], days["to"]


def this_month(today: date) -> tuple[date, date]:
    """The calendar month of `today` as a [from, to) range."""
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following


@dataclass(frozen=True, slots=True)
class Report:
    """The roll-forward of one organisation over [start, end)."""

    slug: str
    start: date
    end: date
    rollforward: rollforward.RollForward

    @property
    def currency(self) -> str:
        return self.rollforward.currency


def roll_forward(session: Session, *, org: Organization, start: date, end: date) -> Report:
    """The liability roll-forward of [start, end) from the ledger's transfers."""
    org_id, currency = org.id, org.currency
    assert org_id is not None
    if start >= end:
        raise Malformed("from must be before to", fields={"to": "from must be before to"})
    sums = ledger_store.flows_around(session, org_id=org_id, currency=currency,
                                     start=start_of(start), end=start_of(end))
    report = rollforward.roll_forward(
        currency=currency,
        opening=_by_kind({key: before for key, (before, _in, _upto) in sums.items()}),
        flows={key: within for key, (_before, within, _upto) in sums.items() if within},
        closing=_by_kind({key: upto for key, (_before, _in, upto) in sums.items()}))
    return Report(org.slug, start, end, report)


def org_position(session: Session, *, org: Organization, on: date) -> rollforward.Position:
    """The organisation's positions (and so its liability) at the end of `on`."""
    assert org.id is not None
    flows = ledger_store.flows_between(session, org_id=org.id, currency=org.currency,
                                       start=None, end=end_of(on))
    return rollforward.position(_by_kind(flows))


def _by_kind(flows: rollforward.Flows) -> dict[str, int]:
    """Balances per account kind from the transfers that made them."""
    balances: dict[str, int] = {}
    for (_kind, source, destination), amount in flows.items():
        balances[source] = balances.get(source, 0) - amount
        balances[destination] = balances.get(destination, 0) + amount
    return balances


@dataclass(frozen=True, slots=True)
class PersonBalance:
    """One person's balances at one organisation at the end of `on`, in micros."""

    on: date
    currency: str
    available: int
    held: int
    unvested: int
    spent: int
    outstanding_notes: int
    outstanding_count: int


def person_balance(session: Session, *, org: Organization, person: Person,
                   on: date) -> PersonBalance:
    """A person's available, held, unvested, spent and outstanding notes at the end of
    `on`, from the transfers (what had vested by then, not what would vest on reading)."""
    assert org.id is not None and person.id is not None
    before = end_of(on)
    wallet, held = rules.wallet(person.id), rules.held(person.id)
    unvested = rules.unvested(person.id)
    balances = ledger_store.balances_before(session, org_id=org.id, currency=org.currency,
                                            names=[wallet, held, unvested], before=before)
    spent = ledger_store.moved_before(session, org_id=org.id, currency=org.currency,
                                      sources=[wallet, held], destination=rules.SPENT,
                                      before=before)
    notes, count = ledger_store.notes_outstanding_before(
        session, org_id=org.id, currency=org.currency, person_id=person.id, before=before)
    return PersonBalance(on, org.currency, balances[wallet], balances[held], balances[unvested],
                         spent, notes, count)


def as_json(report: Report) -> dict[str, object]:
    """The roll-forward for scripts: amounts as decimal strings of the currency."""
    roll = report.rollforward

    def amounts(p: rollforward.Position) -> dict[str, str]:
        return {name: format_amount(value) for name, value in p.as_dict().items()}

    return {
        "org": report.slug, "currency": roll.currency, "from": report.start.isoformat(),
        "to": report.end.isoformat(), "opening": amounts(roll.opening),
        "lines": [{"name": line.name, "label": line.label, "kinds": list(line.kinds),
                   "gross": format_amount(line.gross), "change": amounts(line.change)}
                  for line in roll.lines],
        "movements": amounts(roll.movements), "closing": amounts(roll.closing),
        "reconciles": roll.reconciles,
    }
