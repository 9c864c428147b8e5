"""What an engineer holds at one organisation.

Reading balances vests first: `summary` posts the person's tranches that have fallen
due (exactly once, through the same conditional claim as the vesting run), so what the
engineer sees never waits for the scheduled job. It also prepares what the portal
shows beside the balances: the next vesting date, a cumulative vesting chart (drawn as
SVG by the template from the integer coordinates computed here) and what the available
balance buys at each model's price.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlalchemy as sa
from sqlmodel import Session, select

from wallet import clock
from wallet.actions import usage as usage_actions
from wallet.actions.grants import vest_person
from wallet.core import ledger as rules
from wallet.core.money import format_display
from wallet.core.spend import SpendChart, spend_chart
from wallet.core.usage import Price, format_tokens, tokens_for
from wallet.models import Note, Organization, Person, Tranche
from wallet.store import grants as grant_store
from wallet.store import holds as hold_store
from wallet.store import ledger

SPEND_DAYS = 14  # the portal's spend chart

@dataclass(frozen=True, slots=True)
class NextVest:
    """The next vesting date of a person and the micros that vest on it."""

    due_on: date
    amount: int


@dataclass(frozen=True, slots=True)
class Point:
    """A point of the chart in SVG user units (integers; y grows downwards)."""

    x: int
    y: int


@dataclass(frozen=True, slots=True)
class VestingChart:
    """Cumulative vested credit over time, laid out for an SVG of `width` by `height`."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    vested_path: str  # the steps up to today (solid)
    future_path: str  # the steps still to come (dashed)
    area_path: str  # the area under the vested steps
    today_x: int | None  # None when today is outside the schedule
    start: date
    end: date
    total: int
    vested: int
    title: str
    desc: str
    rows: tuple[tuple[date, int, int, str], ...]  # (due_on, amount, cumulative, state)


@dataclass(frozen=True, slots=True)
class Buy:
    """What the available balance buys at one model's price."""

    model: str
    input_tokens: int
    output_tokens: int
    input_text: str
    output_text: str


@dataclass(frozen=True, slots=True)
class Summary:
    """Balances of one person at one organisation, in micros of `currency`."""

    currency: str
    available: int
    unvested: int
    spent: int
    outstanding_notes: int
    outstanding_count: int
    next_vest: NextVest | None = None
    chart: VestingChart | None = None
    buys: tuple[Buy, ...] = field(default=())
    held: int = 0  # reserved by open holds (calls in progress); not in `available`
    holds_open: int = 0
    spend: SpendChart | None = None  # spend per model per day, the last 14 days


def summary(session: Session, *, org: Organization, person: Person,
            today: date | None = None, charts: bool = True) -> Summary:
    """Return a person's balances at an organisation, vesting what is due first; with
    `charts`, also the next tranche, the vesting and spend charts and what the balance
    buys (the portal's pages; the API's balances leave them out).

    The lazy vesting commits its own transaction when something is due: call this
    outside an unfinished write.
    """
    assert org.id is not None and person.id is not None
    day = today or clock.today()
    vest_person(session, org=org, person_id=person.id, as_of=day)
    currency = org.currency
    outstanding = session.exec(
        select(sa.func.coalesce(sa.func.sum(Note.amount), 0), sa.func.count())
        .where(Note.org_id == org.id, Note.person_id == person.id, Note.state == "active",
               Note.currency == currency)
    ).one()
    spent = ledger.total_moved(session, org_id=org.id, currency=currency,
                               source=(rules.wallet(person.id), rules.held(person.id)),
                               destination=rules.SPENT)
    open_holds = hold_store.open_of(session, org_id=org.id, person_id=person.id)
    available = ledger.balance(session, org_id=org.id, name=rules.wallet(person.id),
                               currency=currency)
    unvested = ledger.balance(session, org_id=org.id, name=rules.unvested(person.id),
                              currency=currency)
    held = sum(h.amount for h in open_holds if h.currency == currency)
    if not charts:
        return Summary(currency=currency, available=available, unvested=unvested,
                       spent=int(spent), outstanding_notes=int(outstanding[0]),
                       outstanding_count=int(outstanding[1]), held=held,
                       holds_open=len(open_holds))
    tranches = grant_store.tranches_of(session, org_id=org.id, person_id=person.id)
    start = grant_store.first_start(session, org_id=org.id, person_id=person.id)
    upcoming = [t for t in tranches if t.state == "pending" and t.due_on > day]
    next_vest = None
    if upcoming:
        first = min(t.due_on for t in upcoming)
        next_vest = NextVest(first, sum(t.amount for t in upcoming if t.due_on == first))
    return Summary(
        currency=currency,
        available=available,
        unvested=unvested,
        spent=int(spent),
        outstanding_notes=int(outstanding[0]),
        outstanding_count=int(outstanding[1]),
        next_vest=next_vest,
        chart=vesting_chart(tranches, start=start, today=day, currency=currency),
        buys=buys(available, usage_actions.catalogue(session, org=org)),
        held=held,
        holds_open=len(open_holds),
        spend=spend_chart(hold_store.spend_by_model_and_day(
            session, org_id=org.id, person_id=person.id,
            since=clock.now() - timedelta(days=SPEND_DAYS)),
            today=day, currency=currency, days=SPEND_DAYS),
    )


def balances(session: Session, *, org: Organization, person: Person) -> dict[str, int]:
    """A person's available and unvested micros, straight from the two accounts (cheap)."""
    assert org.id is not None and person.id is not None
    names = {rules.wallet(person.id): "available", rules.unvested(person.id): "unvested"}
    found = ledger.balances_named(session, org_id=org.id, currency=org.currency,
                                  names=list(names))
    return {label: found.get(name, 0) for name, label in names.items()}


def next_vesting(session: Session, *, org: Organization, person: Person,
                 after: date | None = None) -> tuple[date, int] | None:
    """Return the next vesting date after `after` (default today) and what vests then."""
    assert org.id is not None and person.id is not None
    day = session.exec(
        select(sa.func.min(Tranche.due_on)).where(
            Tranche.org_id == org.id, Tranche.person_id == person.id,
            Tranche.state == "pending", Tranche.due_on > (after or clock.today()))
    ).one()
    if day is None:
        return None
    amount = session.exec(
        select(sa.func.sum(Tranche.amount)).where(
            Tranche.org_id == org.id, Tranche.person_id == person.id,
            Tranche.state == "pending", Tranche.due_on == day)
    ).one()
    return day, int(amount or 0)


# -- pure helpers --------------------------------------------------------------------------


def buys(available: int, entries: Sequence[Price]) -> tuple[Buy, ...]:
    """What `available` micros buy at each model's price (input only, or output only)."""
    result = []
    for e in entries:
        tokens_in = tokens_for(available, e.input_per_mtok)
        tokens_out = tokens_for(available, e.output_per_mtok)
        result.append(Buy(e.model, tokens_in, tokens_out, format_tokens(tokens_in),
                          format_tokens(tokens_out)))
    return tuple(result)


WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 12, 708, 16, 204


def vesting_chart(tranches: Sequence[Tranche], *, start: date | None, today: date,
                  currency: str) -> VestingChart | None:
    """Lay out the cumulative vesting of `tranches` (forfeited ones left out) as steps."""
    live = sorted((t for t in tranches if t.state != "forfeited"),
                  key=lambda t: (t.due_on, t.id or 0))
    if not live:
        return None
    first_day = min(start or live[0].due_on, live[0].due_on)
    last_day = max(live[-1].due_on, first_day)
    span = max((last_day - first_day).days, 1)
    total = sum(t.amount for t in live)

    def x(day: date) -> int:
        return LEFT + (day - first_day).days * (RIGHT - LEFT) // span

    def y(amount: int) -> int:
        return BOTTOM - amount * (BOTTOM - TOP) // total

    vested_x = x(first_day)
    vested_cmds = [f"M{vested_x} {BOTTOM}"]
    future_cmds: list[str] = []
    rows = []
    cumulative = vested = 0
    for t in live:
        cumulative += t.amount
        # Lazy vesting ran just before: what is due by today has vested.
        is_vested = t.state == "vested" or t.due_on <= today
        step = f"H{x(t.due_on)} V{y(cumulative)}"
        if is_vested:
            vested_cmds.append(step)
            vested_x, vested = x(t.due_on), cumulative
        else:
            future_cmds.append(step)
        rows.append((t.due_on, t.amount, cumulative, "vested" if is_vested else "pending"))
    today_x = x(today) if first_day <= today <= last_day else None
    if future_cmds:
        if today_x is not None and today_x > vested_x:
            vested_cmds.append(f"H{today_x}")
            vested_x = today_x
        future_cmds.insert(0, f"M{vested_x} {y(vested)}")
    area = " ".join(vested_cmds) + f" V{BOTTOM} Z" if vested else ""
    title = "Vesting schedule"
    desc = (f"Cumulative vested credit from {first_day.isoformat()} to {last_day.isoformat()}:"
            f" {format_display(vested, currency)} of {format_display(total, currency)} vested"
            f" by {today.isoformat()}.")
    pending = [r for r in rows if r[3] == "pending"]
    if pending:
        desc += (f" Next {format_display(pending[0][1], currency)} on"
                 f" {pending[0][0].isoformat()}; fully vested on {last_day.isoformat()}.")
    return VestingChart(
        width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT, top=TOP, bottom=BOTTOM,
        vested_path=" ".join(vested_cmds), future_path=" ".join(future_cmds), area_path=area,
        today_x=today_x, start=first_day, end=last_day, total=total, vested=vested,
        title=title, desc=desc, rows=tuple(rows))

