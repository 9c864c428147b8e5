"""Grants and their tranches: bulk inserts, exactly-once claims, and reads for pages.

Every state change of a tranche is ONE conditional statement
(`UPDATE tranche SET state = … WHERE state = 'pending' AND … RETURNING …`): whoever's
statement changes the row owns the posting that follows, so two concurrent vesting runs,
or a vesting run racing a termination, can never post the same tranche twice. The
statement re-checks `state` on the newest row version on PostgreSQL (READ COMMITTED)
and runs under SQLite's `BEGIN IMMEDIATE` write lock, and `UPDATE … RETURNING` works on
SQLite ≥ 3.35 and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from wallet import clock
from wallet.core import ledger as rules
from wallet.core.vesting import Tranche as CoreTranche
from wallet.models import Account, Grant, Membership, Person, Tranche, Transfer
from wallet.store._dialect import chunks, dialect_of, run

GRANT: sa.Table = Grant.__table__  # type: ignore[attr-defined]
TRANCHE: sa.Table = Tranche.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Claimed:
    """A tranche whose state this transaction changed (so it alone posts it)."""

    id: int
    person_id: int
    grant_id: int
    amount: int
    currency: str


# -- grants --------------------------------------------------------------------------------


def insert_grant(session: Session, *, values: dict[str, Any]) -> int | None:
    """Insert one grant; return its id, or None when its `request_key` already exists."""
    if values.get("request_key") is not None:
        return dialect_of(session).insert_ignore(session, GRANT, values,
                                                 ("org_id", "request_key"))
    return int(run(session, _INSERT_GRANT, values).scalar_one())


def insert_grants(session: Session, *, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert many grants in bulk; return their ids in the order of `rows`."""
    ids: list[int] = []
    for chunk in chunks(rows):
        result = run(session, _INSERT_GRANTS, list(chunk))
        ids.extend(int(r[0]) for r in result)
    return ids


_INSERT_GRANT = sa.insert(GRANT).returning(GRANT.c.id)
_INSERT_GRANTS = sa.insert(GRANT).returning(GRANT.c.id, sort_by_parameter_order=True)


def grant_by_request_key(session: Session, *, org_id: int, request_key: str) -> Grant | None:
    """Return the grant an idempotency key created, if any."""
    return session.scalars(sa.select(Grant).where(
        Grant.org_id == org_id, Grant.request_key == request_key)).first()  # type: ignore[arg-type]


def insert_tranches(session: Session, *, org_id: int, grant_id: int, person_id: int,
                    parts: Iterable[CoreTranche], vested_at: datetime | None = None) -> None:
    """Store a grant's tranches (`vested_at`: all of them already vested, at that time)."""
    insert_tranche_rows(session, rows=[
        tranche_row(org_id=org_id, grant_id=grant_id, person_id=person_id, part=part,
                    vested_at=vested_at) for part in parts])


def tranche_row(*, org_id: int, grant_id: int, person_id: int, part: CoreTranche,
                vested_at: datetime | None = None) -> dict[str, Any]:
    """The row of one tranche, ready for `insert_tranche_rows`."""
    return {"org_id": org_id, "grant_id": grant_id, "person_id": person_id, "seq": part.seq,
            "due_on": part.due_on, "amount": part.amount,
            "state": "pending" if vested_at is None else "vested", "settled_at": vested_at}


TRANCHE_COLUMNS = ("org_id", "grant_id", "person_id", "seq", "due_on", "amount", "state",
                   "settled_at")


def insert_tranche_rows(session: Session, *, rows: Sequence[dict[str, Any]]) -> None:
    """Insert tranche rows in bulk (the seam's bulk copy).

    A 10,000-grant import writes 370,000 tranches: a COPY where the database has one.
    """
    dialect_of(session).copy_rows(session, TRANCHE, TRANCHE_COLUMNS, rows)


# -- exactly-once state changes -----------------------------------------------------------


def claim_due(session: Session, *, org_id: int, as_of: date, now: datetime,
              person_id: int | None = None) -> list[Claimed]:
    """Mark every pending tranche due on or before `as_of` vested; return those this call won.

    One conditional UPDATE … RETURNING: a tranche is returned to exactly one caller
    however many runs race, which makes the posting that follows happen once.
    """
    where = [TRANCHE.c.org_id == org_id, TRANCHE.c.state == "pending",
             TRANCHE.c.due_on <= as_of]
    if person_id is not None:
        where.append(TRANCHE.c.person_id == person_id)
    return _claim(session, where, state="vested", now=now)


def forfeit_after(session: Session, *, org_id: int, person_id: int, ended_on: date,
                  now: datetime) -> list[Claimed]:
    """Mark a person's pending tranches due after `ended_on` forfeited; return those won."""
    where = [TRANCHE.c.org_id == org_id, TRANCHE.c.person_id == person_id,
             TRANCHE.c.state == "pending", TRANCHE.c.due_on > ended_on]
    return _claim(session, where, state="forfeited", now=now)


def _claim(session: Session, where: list[Any], *, state: str, now: datetime) -> list[Claimed]:
    rows = run(
        session, sa.update(TRANCHE).where(*where).values(state=state, settled_at=now)
        .returning(TRANCHE.c.id, TRANCHE.c.person_id, TRANCHE.c.amount, TRANCHE.c.grant_id)
    ).all()
    if not rows:
        return []
    currencies = _grant_currencies(session, {int(r.grant_id) for r in rows})
    claimed = [Claimed(int(r.id), int(r.person_id), int(r.grant_id), int(r.amount),
                       currencies[int(r.grant_id)]) for r in rows]
    claimed.sort(key=lambda c: c.id)  # RETURNING order is unspecified; keep postings stable
    return claimed


def _grant_currencies(session: Session, grant_ids: set[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    seam = dialect_of(session)
    for chunk in chunks(sorted(grant_ids)):
        found.update((int(i), str(c)) for i, c in run(
            session, sa.select(GRANT.c.id, GRANT.c.currency).where(seam.in_(GRANT.c.id, chunk))))
    return found


def has_due(session: Session, *, org_id: int, person_id: int, as_of: date) -> bool:
    """Tell cheaply whether a person has a pending tranche due on or before `as_of`."""
    return run(
        session, sa.select(TRANCHE.c.id).where(
            TRANCHE.c.org_id == org_id, TRANCHE.c.person_id == person_id,
            TRANCHE.c.state == "pending", TRANCHE.c.due_on <= as_of).limit(1)
    ).first() is not None


def end_membership(session: Session, *, membership_id: int, ended_on: date) -> bool:
    """Set a membership's end date once; False when it already had one."""
    table = Membership.__table__
    result = run(
        session, sa.update(table).where(table.c.id == membership_id, table.c.ended_on.is_(None))
        .values(ended_on=ended_on))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


# -- members, accounts --------------------------------------------------------------------


def members_by_email(session: Session, *, org_id: int, emails: Iterable[str],
                     lock: bool = False) -> dict[str, tuple[int, date | None]]:
    """Map each given email that is a member of the organisation to (person id, ended_on).

    `lock` takes the membership rows with the seam's row lock (in email order, so
    concurrent callers cannot deadlock): a termination then waits for the caller's
    commit, and sees what it granted.
    """
    person, membership = Person.__table__, Membership.__table__
    seam = dialect_of(session)
    found: dict[str, tuple[int, date | None]] = {}
    for chunk in chunks(sorted(set(emails))):
        query = (sa.select(person.c.email, person.c.id, membership.c.ended_on)
                 .select_from(membership.join(person, person.c.id == membership.c.person_id))
                 .where(membership.c.org_id == org_id, seam.in_(person.c.email, chunk))
                 .order_by(person.c.email))
        if lock:
            query = seam.for_update(query, of=membership)
        rows = run(session, query)
        found.update((str(e), (int(i), ended)) for e, i, ended in rows)
    return found


def ensure_accounts(session: Session, *, org_id: int, names: Iterable[str],
                    currency: str) -> None:
    """Create missing ledger accounts in bulk (`INSERT … ON CONFLICT DO NOTHING`).

    `store.ledger.post_batch` creates a missing account with three statements each; for
    10,000 new people that is most of a bulk run's time, so bulk runs create them first.
    """
    now = clock.now()
    rows = [{"org_id": org_id, "name": name, "currency": currency, "balance": 0,
             "kind": rules.kind_of(name), "allow_negative": rules.may_go_negative(name),
             "created_at": now} for name in sorted(set(names))]
    dialect_of(session).insert_ignore_many(session, Account.__table__,  # type: ignore[arg-type]
                                           rows, ("org_id", "name", "currency"))


# -- reads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrantView:
    """A grant with its person and how far it has vested."""

    grant: Grant
    email: str
    vested: int
    forfeited: int
    pending: int
    next_due: date | None
    next_amount: int
    tranche_count: int


def grant_views(session: Session, *, org_id: int, limit: int = 100,
                offset: int = 0) -> list[GrantView]:
    """Return an organisation's grants, newest first, with their vesting progress."""
    person = Person.__table__
    grants = session.execute(
        sa.select(Grant, person.c.email)
        .join(person, person.c.id == Grant.person_id)  # type: ignore[arg-type]
        .where(Grant.org_id == org_id)  # type: ignore[arg-type]
        .order_by(Grant.id.desc()).offset(offset).limit(limit)  # type: ignore[union-attr]
    ).all()
    if not grants:
        return []
    ids = [int(g.id) for g, _e in grants]
    sums: dict[tuple[int, str], tuple[int, int]] = {}
    nexts: dict[int, date] = {}
    for grant_id, state, total, count, first in run(
            session, sa.select(TRANCHE.c.grant_id, TRANCHE.c.state, sa.func.sum(TRANCHE.c.amount),
                      sa.func.count(), sa.func.min(TRANCHE.c.due_on))
            .where(TRANCHE.c.grant_id.in_(ids)).group_by(TRANCHE.c.grant_id, TRANCHE.c.state)):
        sums[(int(grant_id), str(state))] = (int(total), int(count))
        if state == "pending":
            nexts[int(grant_id)] = first
    next_amounts: dict[int, int] = {}
    if nexts:
        for grant_id, amount in run(
                session, sa.select(TRANCHE.c.grant_id, TRANCHE.c.amount).where(
                    TRANCHE.c.grant_id.in_(list(nexts)), TRANCHE.c.state == "pending",
                    sa.tuple_(TRANCHE.c.grant_id, TRANCHE.c.due_on).in_(list(nexts.items())))):
            next_amounts[int(grant_id)] = int(amount)
    views = []
    for grant, email in grants:
        gid = int(grant.id)
        parts = {s: sums.get((gid, s), (0, 0)) for s in ("vested", "forfeited", "pending")}
        views.append(GrantView(
            grant=grant, email=str(email), vested=parts["vested"][0],
            forfeited=parts["forfeited"][0], pending=parts["pending"][0],
            next_due=nexts.get(gid), next_amount=next_amounts.get(gid, 0),
            tranche_count=sum(c for _t, c in parts.values())))
    return views


def count_grants(session: Session, *, org_id: int) -> int:
    """Count an organisation's grants."""
    return int(run(
        session, sa.select(sa.func.count()).select_from(GRANT).where(GRANT.c.org_id == org_id)
    ).scalar_one())


def tranches_of(session: Session, *, org_id: int, person_id: int) -> list[Tranche]:
    """Return a person's tranches at an organisation, by due date."""
    return list(session.scalars(sa.select(Tranche).where(
        Tranche.org_id == org_id, Tranche.person_id == person_id,  # type: ignore[arg-type]
    ).order_by(Tranche.due_on, Tranche.id)))  # type: ignore[arg-type]


def flows(session: Session, *, org_id: int, currency: str) -> dict[tuple[str, str, str], int]:
    """Sum an organisation's transfers by (kind, source account kind, destination kind)."""
    t = Transfer.__table__
    src, dst = Account.__table__.alias("src"), Account.__table__.alias("dst")
    rows = run(
        session, sa.select(t.c.kind, src.c.kind, dst.c.kind, sa.func.sum(t.c.amount))
        .select_from(t.join(src, src.c.id == t.c.from_account_id)
                     .join(dst, dst.c.id == t.c.to_account_id))
        .where(t.c.org_id == org_id, t.c.currency == currency)
        .group_by(t.c.kind, src.c.kind, dst.c.kind))
    return {(str(k), str(s), str(d)): int(total) for k, s, d, total in rows}


def balances_by_kind(session: Session, *, org_id: int, currency: str) -> dict[str, int]:
    """Sum an organisation's account balances per account kind (`wallet`, `unvested`, …)."""
    a = Account.__table__
    rows = run(
        session, sa.select(a.c.kind, sa.func.sum(a.c.balance))
        .where(a.c.org_id == org_id, a.c.currency == currency).group_by(a.c.kind))
    return {str(kind): int(total) for kind, total in rows}


def first_start(session: Session, *, org_id: int, person_id: int) -> date | None:
    """Return the earliest start date of a person's grants at an organisation."""
    value = run(session, sa.select(sa.func.min(GRANT.c.start_on)).where(
        GRANT.c.org_id == org_id, GRANT.c.person_id == person_id)).scalar_one()
    return value if isinstance(value, date) else None


# -- exports (issue 15) --------------------------------------------------------------------


def grants_page(session: Session, *, org_id: int, since: datetime | None,
                before: datetime | None, after_id: int, limit: int) -> list[sa.Row[Any]]:
    """Grants made in [since, before) with their person's email, oldest first, the
    `limit` after id `after_id` (keyset pages for an export)."""
    g, p = GRANT, Person.__table__  # type: ignore[attr-defined]
    query = (sa.select(g.c.id, g.c.created_at, p.c.email, g.c.amount, g.c.currency,
                       g.c.start_on, g.c.every, g.c.months, g.c.cliff_months, g.c.source,
                       g.c.created_by)
             .select_from(g.join(p, p.c.id == g.c.person_id))
             .where(g.c.org_id == org_id, g.c.id > after_id))
    if since is not None:
        query = query.where(g.c.created_at >= since)
    if before is not None:
        query = query.where(g.c.created_at < before)
    return list(run(session, query.order_by(g.c.id).limit(limit)).all())


def tranches_of_grants(session: Session, *, org_id: int,
                       grant_ids: Sequence[int]) -> list[sa.Row[Any]]:
    """The tranches of some grants of an organisation, by grant and sequence number."""
    if not grant_ids:
        return []
    t = TRANCHE
    return list(run(session, sa.select(t.c.grant_id, t.c.seq, t.c.due_on, t.c.amount,
                                       t.c.state, t.c.settled_at)
                    .where(t.c.org_id == org_id, t.c.grant_id.in_(list(grant_ids)))
                    .order_by(t.c.grant_id, t.c.seq)).all())


def grants_of(session: Session, *, org_id: int, person_id: int) -> list[Grant]:
    """Return a person's grants at an organisation, oldest first."""
    return list(session.scalars(sa.select(Grant).where(
        Grant.org_id == org_id, Grant.person_id == person_id,  # type: ignore[arg-type]
    ).order_by(Grant.start_on, Grant.id)))  # type: ignore[arg-type]
