"""Grants, vesting and termination (docs/grants.md).

A grant moves its whole amount out of the pool when it is made: straight into the
engineer's wallet when it is immediate, into `unvested:<person>` otherwise, with its
tranches stored. Each tranche then moves `unvested → wallet` exactly once when it is due
(`vest`, the lazy `vest_person`, or at grant time for dates already past), or
`unvested → pool` when a termination forfeits it. "Exactly once" is the conditional
UPDATE in `wallet.store.grants`; the postings that follow carry keys derived from the
tranche (`vest:<id>`, `forfeit:<id>`) as a second guard.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from wallet import clock
from wallet.actions import webhooks
from wallet.actions._base import Actor, atomic, member_or_404, org_or_404, require_admin
from wallet.actions.ledger import check_key
from wallet.core import ledger as rules
from wallet.core import vesting
from wallet.core.errors import (
    Conflict,
    Forbidden,
    IdempotencyConflict,
    InsufficientFunds,
    Malformed,
    NotFound,
    RowsInvalid,
)
from wallet.core.grants_csv import MAX_REPORTED, CheckedFile, GrantRow, check_grants_csv
from wallet.core.money import format_display, parse_money
from wallet.models import Grant, Membership, Organization, Person
from wallet.store import grants as store
from wallet.store import ledger, people

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class GrantResult:
    """A grant, its tranches, and whether this call created it (False: a replay)."""

    grant: Grant
    tranches: list[vesting.Tranche]
    created: bool
    vested_now: int  # micros that vested at grant time (immediate, or dates already past)


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What a CSV import did."""

    count: int  # grants in the file
    total: int  # micros granted by the file
    currency: str
    created: bool  # False: this exact file was imported before; nothing changed
    vested_now: int


@dataclass(frozen=True, slots=True)
class VestRun:
    """What one vesting run posted at one organisation."""

    slug: str
    as_of: date
    count: int
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Termination:
    """The end of an engineer's employment and what it forfeited."""

    email: str
    ended_on: date
    created: bool  # False: the same end date was already recorded
    forfeited_count: int
    forfeited: int  # micros returned to the pool
    vested_now: int  # micros of tranches due by today that were posted on the way


# -- one grant -----------------------------------------------------------------------------


def create_grant(session: Session, *, slug: str, email: str, amount: str,
                 start: date | None = None, cliff_months: int | None = None,
                 every: str | None = None, months: int | None = None,
                 request_key: str | None = None, memo: str = "",
                 actor: Actor) -> GrantResult:
    """Grant credit to a member, immediately or on a vesting schedule."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    money = parse_money(amount, org.currency)
    schedule = vesting.make_schedule(start=start or clock.today(), cliff_months=cliff_months,
                                     every=every, months=months)
    parts = vesting.tranches(money.micros, schedule)
    key = None if request_key is None else f"form:{check_key(request_key)}"
    org_id = _id(org)
    now = clock.now()
    with atomic(session):
        membership, person = member_or_404(session, org, email)
        assert membership.id is not None
        membership = people.lock_membership(session, membership_id=membership.id)
        _require_employed(org, membership, person)
        pid = _pid(person)
        if key is not None:
            existing = store.grant_by_request_key(session, org_id=org_id, request_key=key)
            if existing is not None:
                return _replayed(existing, pid, money.micros, schedule, parts)
        immediate = schedule.every is None and schedule.start <= now.date()
        grant_id = store.insert_grant(session, values=_grant_values(
            org=org, person_id=pid, micros=money.micros, schedule=schedule, key=key,
            source="admin", actor=actor, now=now))
        if grant_id is None:  # a concurrent double submit won the key: answer as a replay
            existing = store.grant_by_request_key(session, org_id=org_id, request_key=key or "")
            assert existing is not None
            return _replayed(existing, pid, money.micros, schedule, parts)
        store.insert_tranches(session, org_id=org_id, grant_id=grant_id, person_id=pid,
                              parts=parts, vested_at=now if immediate else None)
        posting = rules.Posting(
            rules.POOL, rules.wallet(pid) if immediate else rules.unvested(pid), money.micros,
            money.currency, kind="grant", key=f"grant:{grant_id}", ref=f"grant:{grant_id}",
            memo=(memo.strip() or f"grant to {person.email}")[:300])
        try:
            ledger.post(session, org_id=org_id, posting=posting, at=now)
        except InsufficientFunds:
            raise _pool_short(session, org, money.micros, "this grant") from None
        _count, vested_now = _vest_claimed(session, org_id, store.claim_due(
            session, org_id=org_id, as_of=now.date(), now=now, person_id=pid), now)
        people.audit(session, org_id=org_id, actor=actor.label, action="grant.create",
                     target=person.email, details={
                         "grant": grant_id, "amount": str(money), **_schedule_details(schedule)})
        grant = session.get(Grant, grant_id)
        assert grant is not None
    return GrantResult(grant, parts, True, (money.micros if immediate else 0) + vested_now)


def _replayed(existing: Grant, person_id: int, micros: int, schedule: vesting.Schedule,
              parts: list[vesting.Tranche]) -> GrantResult:
    same = (existing.person_id == person_id and existing.amount == micros
            and existing.start_on == schedule.start and existing.every == schedule.every
            and existing.months == schedule.months
            and existing.cliff_months == schedule.cliff_months)
    if not same:
        raise IdempotencyConflict("this form was already submitted with different values")
    return GrantResult(existing, parts, False, 0)


def _grant_values(*, org: Organization, person_id: int, micros: int,
                  schedule: vesting.Schedule, key: str | None, source: str, actor: Actor,
                  now: datetime) -> dict[str, object]:
    return {
        "org_id": org.id, "person_id": person_id, "amount": micros, "currency": org.currency,
        "start_on": schedule.start, "cliff_months": schedule.cliff_months,
        "every": schedule.every, "months": schedule.months, "source": source[:100],
        "request_key": key, "created_by": actor.label[:254], "created_at": now,
    }


def _schedule_details(schedule: vesting.Schedule) -> dict[str, object]:
    if schedule.every is None:
        return {"start": schedule.start.isoformat(), "every": "immediate"}
    return {"start": schedule.start.isoformat(), "every": schedule.every,
            "months": schedule.months, "cliff_months": schedule.cliff_months}


def _require_employed(org: Organization, membership: Membership, person: Person) -> None:
    # A recorded end date (past or future) closes the door: its forfeiture already ran,
    # and a new schedule would vest after the engineer has left.
    if membership.ended_on is not None:
        raise Conflict(f"{person.email}'s employment at {org.slug} ends on "
                       f"{membership.ended_on.isoformat()}; grants go to current employees")


def _pool_short(session: Session, org: Organization, needed: int,
                what: str) -> InsufficientFunds:
    held = ledger.balance(session, org_id=_id(org), name=rules.POOL, currency=org.currency)
    return InsufficientFunds(f"the pool holds {format_display(held, org.currency)}; {what}"
                             f" needs {format_display(needed, org.currency)}")


# -- CSV import ----------------------------------------------------------------------------


def decode_csv(data: bytes) -> str:
    """Decode an uploaded grants file as UTF-8, or raise `RowsInvalid` naming the line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise RowsInvalid([(line, f"the file is not UTF-8 (byte 0x{data[exc.start]:02x});"
                                  " save it as CSV UTF-8 and try again")]) from None


def import_grants(session: Session, *, slug: str, data: bytes, actor: Actor,
                  filename: str = "", progress: Progress | None = None) -> ImportResult:
    """Import a grants CSV all or nothing: every row is checked before anything is posted.

    The problems of form (parsing) and of people (non-members, leavers) are reported
    together, by line, in one `RowsInvalid` (the first `MAX_REPORTED` and a total); the
    pool is checked once the rows are valid, its need being their total. Importing the
    same file (byte for byte) again changes nothing: its rows are keyed by the file's
    SHA-256 and line numbers.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    text = decode_csv(data)
    now = clock.now()
    checked = check_grants_csv(text, today=now.date())
    rows = checked.rows
    digest = hashlib.sha256(data).hexdigest()
    keys = [f"csv:{digest[:40]}:{row.line}" for row in rows]
    total = sum(row.amount for row in rows)
    org_id = _id(org)

    def replay() -> ImportResult | None:
        if checked.total or store.grant_by_request_key(session, org_id=org_id,
                                                       request_key=keys[0]) is None:
            return None
        return ImportResult(len(rows), total, org.currency, False, 0)

    try:
        with atomic(session):
            done = replay()
            if done is not None:
                return done
            ids = _check_members(session, org, checked)
            if ledger.balance(session, org_id=org_id, name=rules.POOL,
                              currency=org.currency) < total:
                raise _pool_short(session, org, total, f"the {len(rows):,} grants in this file")
            vested_now = _insert_import(session, org, rows, keys, ids, actor=actor, now=now,
                                        source=f"csv:{filename}"[:100], progress=progress)
            people.audit(session, org_id=org_id, actor=actor.label, action="grant.import",
                         target=filename[:300] or "grants.csv", details={
                             "rows": len(rows), "total": format_display(total, org.currency),
                             "sha256": digest})
    except IntegrityError:
        # The same file imported concurrently: the other import won the unique keys.
        done = replay()
        session.rollback()
        if done is None:
            raise
        return done
    return ImportResult(len(rows), total, org.currency, True, vested_now)


def _check_members(session: Session, org: Organization, checked: CheckedFile) -> dict[str, int]:
    """Map the file's people to ids, or raise every problem of the file: form and people."""
    # Locked: a termination racing this import waits for it, then forfeits what it granted.
    found = store.members_by_email(session, org_id=_id(org),
                                   emails=(email for _line, email in checked.emails), lock=True)
    problems = list(checked.problems)
    total = checked.total
    for line, email in checked.emails:  # in line order: the first ones are kept
        member = found.get(email)
        if member is None:
            reason = f"{email} is not a member of {org.slug}"
        elif member[1] is not None:
            reason = (f"{email}'s employment ends on {member[1].isoformat()};"
                      " grants go to current employees")
        else:
            continue
        total += 1
        if len(problems) < 2 * MAX_REPORTED:  # enough to merge the first of both by line
            problems.append((line, reason))
    if total:
        raise RowsInvalid(sorted(problems)[:MAX_REPORTED], total=total)
    return {email: pid for email, (pid, _ended) in found.items()}


def _insert_import(session: Session, org: Organization, rows: Sequence[GrantRow],
                   keys: Sequence[str], ids: dict[str, int], *, actor: Actor, now: datetime,
                   source: str, progress: Progress | None) -> int:
    org_id = _id(org)
    day = now.date()
    step = 2000
    postings: list[rules.Posting] = []
    for begin in range(0, len(rows), step):
        batch = rows[begin:begin + step]
        grant_ids = store.insert_grants(session, rows=[
            _grant_values(org=org, person_id=ids[row.email], micros=row.amount,
                          schedule=row.schedule, key=key, source=source, actor=actor, now=now)
            for row, key in zip(batch, keys[begin:begin + step], strict=True)])
        tranche_rows = []
        for row, grant_id in zip(batch, grant_ids, strict=True):
            pid = ids[row.email]
            immediate = row.schedule.every is None and row.schedule.start <= day
            tranche_rows += [
                store.tranche_row(org_id=org_id, grant_id=grant_id, person_id=pid, part=part,
                                  vested_at=now if immediate else None)
                for part in vesting.tranches(row.amount, row.schedule)]
            postings.append(rules.Posting(
                rules.POOL, rules.wallet(pid) if immediate else rules.unvested(pid),
                row.amount, org.currency, kind="grant", key=f"grant:{grant_id}",
                ref=f"grant:{grant_id}", memo=f"{source} line {row.line}"))
        store.insert_tranche_rows(session, rows=tranche_rows)
        if progress is not None:
            progress(len(batch))
    store.ensure_accounts(session, org_id=org_id, currency=org.currency,
                          names=[rules.POOL, *{p.destination for p in postings}])
    ledger.post_batch(session, org_id=org_id, postings=postings, at=now)
    _count, vested = _vest_claimed(session, org_id, store.claim_due(
        session, org_id=org_id, as_of=day, now=now), now)
    return vested


# -- vesting -------------------------------------------------------------------------------


def vest(session: Session, *, slug: str, as_of: date | None = None,
         actor: Actor) -> VestRun:
    """Post every tranche due on or before `as_of` (default today), each exactly once."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    now = clock.now()
    day = as_of or now.date()
    if day > now.date():
        raise Malformed(f"--as-of {day.isoformat()} is in the future: tranches vest on their"
                        " dates, never ahead of them")
    org_id = _id(org)
    with atomic(session):
        count, amount = _vest_claimed(session, org_id, store.claim_due(
            session, org_id=org_id, as_of=day, now=now), now)
        if count:
            people.audit(session, org_id=org_id, actor=actor.label, action="grant.vest",
                         target=day.isoformat(), details={
                             "tranches": count, "amount": format_display(amount, org.currency)})
    return VestRun(org.slug, day, count, amount, org.currency)


def vest_all(session: Session, *, as_of: date | None = None, actor: Actor) -> list[VestRun]:
    """Run `vest` for every organisation, one transaction each (for a scheduled job)."""
    return [vest(session, slug=org.slug, as_of=as_of, actor=actor)
            for org in people.orgs(session)]


def vest_person(session: Session, *, org: Organization, person_id: int,
                as_of: date | None = None) -> int:
    """Lazily post one person's due tranches before their balances are read; return micros.

    Cheap when nothing is due (one indexed SELECT). When something is, it commits its
    own transaction, so call it outside any unfinished write.
    """
    org_id = _id(org)
    now = clock.now()
    day = min(as_of or now.date(), now.date())
    if not store.has_due(session, org_id=org_id, person_id=person_id, as_of=day):
        return 0
    with atomic(session):
        _count, amount = _vest_claimed(session, org_id, store.claim_due(
            session, org_id=org_id, as_of=day, now=now, person_id=person_id), now)
    return amount


def _vest_claimed(session: Session, org_id: int, claimed: Sequence[store.Claimed],
                  now: datetime) -> tuple[int, int]:
    postings = [
        rules.Posting(rules.unvested(c.person_id), rules.wallet(c.person_id), c.amount,
                      c.currency, kind="vest", key=f"vest:{c.id}", ref=f"tranche:{c.id}",
                      memo=f"tranche {c.id} of grant {c.grant_id} vested")
        for c in claimed]
    _post_claimed(session, org_id, postings)
    webhooks.tranches_vested(session, org_id=org_id, claimed=claimed)  # one per tranche
    return len(postings), sum(p.amount for p in postings)


def _post_claimed(session: Session, org_id: int, postings: Sequence[rules.Posting]) -> None:
    for currency in sorted({p.currency for p in postings}):
        store.ensure_accounts(session, org_id=org_id, currency=currency, names={
            name for p in postings if p.currency == currency
            for name in (p.source, p.destination)})
    ledger.post_batch(session, org_id=org_id, postings=postings)


# -- termination ---------------------------------------------------------------------------


def terminate(session: Session, *, slug: str, on: date, actor: Actor,
              email: str | None = None, person_id: int | None = None) -> Termination:
    """End an engineer's employment on `on`; forfeit the tranches due after it, once.

    Tranches due on or before the end date stay and vest on their dates; vested credit
    stays in the wallet. The alumni window (`org.alumni_days`) starts after `on`.
    """
    if (email is None) == (person_id is None):
        raise Malformed("name the person by email or by id")
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    org_id = _id(org)
    now = clock.now()
    with atomic(session):
        membership, person = _member(session, org, email=email, person_id=person_id)
        pid = _pid(person)
        if actor.person_id == pid:
            raise Forbidden("you cannot end your own employment; ask another administrator")
        if on < membership.started_on:
            raise Malformed(f"the end date {on.isoformat()} is before {person.email} started"
                            f" ({membership.started_on.isoformat()})")
        assert membership.id is not None
        if not store.end_membership(session, membership_id=membership.id, ended_on=on):
            session.refresh(membership)
            if membership.ended_on == on:
                return Termination(person.email, on, False, 0, 0, 0)
            ended = membership.ended_on.isoformat() if membership.ended_on else "?"
            raise Conflict(f"{person.email}'s employment at {org.slug} already ends on {ended}")
        session.expire(membership)
        forfeited = store.forfeit_after(session, org_id=org_id, person_id=pid, ended_on=on,
                                        now=now)
        _post_claimed(session, org_id, [
            rules.Posting(rules.unvested(c.person_id), rules.POOL, c.amount, c.currency,
                          kind="forfeit", key=f"forfeit:{c.id}", ref=f"tranche:{c.id}",
                          memo=f"tranche {c.id} of grant {c.grant_id} forfeited")
            for c in forfeited])
        forfeited_micros = sum(c.amount for c in forfeited)
        _count, vested_now = _vest_claimed(session, org_id, store.claim_due(
            session, org_id=org_id, as_of=min(on, now.date()), now=now, person_id=pid), now)
        people.audit(session, org_id=org_id, actor=actor.label, action="person.terminate",
                     target=person.email, details={
                         "ended_on": on.isoformat(), "forfeited_tranches": len(forfeited),
                         "forfeited": format_display(forfeited_micros, org.currency)})
    return Termination(person.email, on, True, len(forfeited), forfeited_micros, vested_now)


def _member(session: Session, org: Organization, *, email: str | None,
            person_id: int | None) -> tuple[Membership, Person]:
    if email is not None:
        return member_or_404(session, org, email)
    assert person_id is not None
    m = people.membership(session, org_id=_id(org), person_id=person_id)
    person = session.get(Person, person_id)
    if m is None or person is None:
        raise NotFound(f"no person {person_id} at {org.slug}")
    return m, person


# -- reads ---------------------------------------------------------------------------------


def grant_list(session: Session, *, org: Organization, limit: int = 100,
               offset: int = 0) -> list[store.GrantView]:
    """Return an organisation's grants, newest first, with their vesting progress."""
    return store.grant_views(session, org_id=_id(org), limit=limit, offset=offset)


def grant_for_key(session: Session, *, org: Organization, request_key: str) -> Grant | None:
    """Return the grant that `create_grant(request_key=…)` made, if any."""
    return store.grant_by_request_key(session, org_id=_id(org),
                                      request_key=f"form:{check_key(request_key)}")


def grant_count(session: Session, *, org: Organization) -> int:
    """Count an organisation's grants."""
    return store.count_grants(session, org_id=_id(org))


def _id(org: Organization) -> int:
    assert org.id is not None
    return org.id


def _pid(person: Person) -> int:
    assert person.id is not None
    return person.id
