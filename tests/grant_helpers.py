"""Helpers for the grants, vesting, termination and usage tests: a movable clock, bulk people."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from flask import Flask

from wallet import clock, db
from wallet.core import ledger as rules
from wallet.models import Membership, Person, Tranche, Transfer
from wallet.store import ledger, people

UNIT = 1_000_000


def set_clock(app: Flask, day: date) -> datetime:
    """Make all of `app` believe it is noon UTC on `day`; return that moment.

    One `wallet.clock.FakeClock` on the app: actions, store, web and the per-app memos
    all read it, so nothing can disagree about the date. Moving forward keeps the same
    clock (its monotonic time moves too, so lifetimes expire); moving back installs a
    new one.
    """
    now = datetime(day.year, day.month, day.day, 12, 0, tzinfo=UTC)
    found = app.extensions.get(clock.EXTENSION)
    if isinstance(found, clock.FakeClock) and found.now() <= now:
        found.set(now)
    else:
        clock.install(app, clock.FakeClock(now))
    return now


def real_clock(app: Flask) -> None:
    """Give `app` the system clock again."""
    clock.install(app, clock.SystemClock())


@contextmanager
def at_moment(app: Flask, moment: datetime) -> Iterator[clock.FakeClock]:
    """All of `app` at `moment` (a stopped clock) inside the block; its clock after."""
    before = app.extensions.get(clock.EXTENSION) or clock.SystemClock()
    fake = clock.FakeClock(moment)
    clock.install(app, fake)
    try:
        yield fake
    finally:
        clock.install(app, before)


def add_members(app: Flask, slug: str, count: int, *, prefix: str = "eng",
                start: date = date(2020, 1, 1)) -> list[str]:
    """Add `count` engineers to an organisation in bulk (no passwords); return their emails."""
    emails = [f"{prefix}{i:05d}@{slug}.test" for i in range(count)]
    with app.app_context():
        now = clock.now()
        s = db.session()
        org = people.org_by_slug(s, slug=slug)
        assert org is not None
        connection = s.connection()
        connection.execute(sa.insert(Person.__table__),
                           [{"email": e, "name": "", "created_at": now} for e in emails])
        ids = dict(connection.execute(sa.select(Person.__table__.c.email, Person.__table__.c.id)
                                      .where(Person.__table__.c.email.in_(emails))).all())
        connection.execute(sa.insert(Membership.__table__), [
            {"org_id": org.id, "person_id": ids[e], "role": "engineer", "started_on": start,
             "created_at": now} for e in emails])
        s.commit()
    return emails


def person_id(app: Flask, email: str) -> int:
    with app.app_context():
        found = people.person_by_email(db.session(), email=email)
        assert found is not None and found.id is not None
        return found.id


def balance(app: Flask, name: str, slug: str = "acme") -> int:
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug=slug)
        assert org is not None and org.id is not None
        return ledger.balance(s, org_id=org.id, name=name, currency="USD")


def wallet_of(app: Flask, email: str) -> int:
    return balance(app, rules.wallet(person_id(app, email)))


def unvested_of(app: Flask, email: str) -> int:
    return balance(app, rules.unvested(person_id(app, email)))


def count(app: Flask, table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
    with app.app_context():
        return int(db.session().execute(
            sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one())


def transfers_of_kind(app: Flask, kind: str) -> int:
    t = Transfer.__table__
    return count(app, t, t.c.kind == kind)


def tranche_states(app: Flask) -> dict[str, int]:
    t = Tranche.__table__
    with app.app_context():
        return {str(state): int(n) for state, n in db.session().execute(
            sa.select(t.c.state, sa.func.count()).group_by(t.c.state))}


def days(n: int) -> timedelta:
    return timedelta(days=n)


def backdate_start(app: Flask, email: str, day: date = date(2020, 1, 1),
                   slug: str = "acme") -> None:
    """Move a member's employment start back (the world fixture hires everyone today)."""
    m = Membership.__table__
    pid = person_id(app, email)
    with app.app_context():
        s = db.session()
        org = people.org_by_slug(s, slug=slug)
        assert org is not None
        s.execute(sa.update(m).where(m.c.org_id == org.id, m.c.person_id == pid)
                  .values(started_on=day))
        s.commit()
