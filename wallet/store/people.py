"""Organisations, people, memberships, API tokens, sign-in attempts and the audit log."""

from __future__ import annotations

import threading
import weakref
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from wallet.models import ApiToken, AuditEvent, LoginAttempt, Membership, Organization, Person
from wallet.store._sql import run

_ORG_BY_SLUG = select(Organization).where(Organization.slug == sa.bindparam("slug"))


def org_by_slug(session: Session, *, slug: str) -> Organization | None:
    """Return an organisation by slug."""
    return session.exec(_ORG_BY_SLUG, params={"slug": slug}).first()


# Organisations are never deleted and their slugs never change, so once an id is read
# from committed state it stays right: on PostgreSQL `org_id_of` reads in autocommit
# (committed by definition) and keeps what it read, per engine (a process's database).
_org_ids: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()
_org_ids_lock = threading.Lock()
_ORG_ID = sa.select(Organization.__table__.c.id).where(
    Organization.__table__.c.slug == sa.bindparam("slug"))


def org_id_of(session: Session, *, slug: str) -> int | None:
    """The id of organisation `slug`; None when there is none.

    For the anonymous nonce endpoint, which otherwise touches no table: after the first
    call per process, PostgreSQL is not asked again. SQLite reads in the session's
    transaction each time (which might see an organisation it has not committed yet).
    """
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        found = run(session, _ORG_ID, {"slug": slug}).scalar()
        return None if found is None else int(found)
    with _org_ids_lock:
        known = _org_ids.get(engine, {}).get(slug)  # type: ignore[call-overload]
    if known is not None:
        return int(known)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        found = connection.execute(_ORG_ID, {"slug": slug}).scalar()
    if found is None:
        return None
    with _org_ids_lock:
        _org_ids.setdefault(engine, {})[slug] = int(found)  # type: ignore[arg-type]
    return int(found)


def orgs(session: Session) -> list[Organization]:
    """Return every organisation, by slug."""
    return list(session.exec(select(Organization).order_by(Organization.slug)))


def person_by_email(session: Session, *, email: str) -> Person | None:
    """Return a person by (case-insensitive) email."""
    return session.exec(select(Person).where(Person.email == email.strip().lower())).first()


def person_by_invite(session: Session, *, invite_hash: str) -> Person | None:
    """Return the person an invitation hash belongs to."""
    return session.exec(select(Person).where(Person.invite_hash == invite_hash)).first()


def membership(session: Session, *, org_id: int, person_id: int) -> Membership | None:
    """Return a person's membership of an organisation."""
    return session.exec(
        select(Membership).where(Membership.org_id == org_id, Membership.person_id == person_id)
    ).first()


def lock_membership(session: Session, *, membership_id: int) -> Membership:
    """Re-read a membership FOR UPDATE (its latest committed state, held until commit).

    Anything that decides on employment dates and then writes (a grant) takes this lock,
    so that a concurrent termination is ordered before or after it, never in between.
    """
    return session.exec(select(Membership).where(Membership.id == membership_id)
                        .with_for_update()
                        .execution_options(populate_existing=True)).one()


def memberships_of(session: Session, *, person_id: int) -> list[tuple[Membership, Organization]]:
    """Return every membership of a person with its organisation."""
    rows = session.exec(
        select(Membership, Organization)
        .join(Organization, col(Organization.id) == Membership.org_id)
        .where(Membership.person_id == person_id)
        .order_by(Organization.slug)
    )
    return list(rows.all())


def members(session: Session, *, org_id: int) -> list[tuple[Membership, Person]]:
    """Return every member of an organisation with the person."""
    rows = session.exec(
        select(Membership, Person)
        .join(Person, col(Person.id) == Membership.person_id)
        .where(Membership.org_id == org_id)
        .order_by(Person.email)
    )
    return list(rows.all())


def member_by_email(session: Session, *, org_id: int,
                    email: str) -> tuple[Membership, Person] | None:
    """Return a member of an organisation by email."""
    row = session.exec(
        select(Membership, Person)
        .join(Person, col(Person.id) == Membership.person_id)
        .where(Membership.org_id == org_id, Person.email == email.strip().lower())
    ).first()
    return None if row is None else (row[0], row[1])


def add(session: Session, row: Any) -> Any:
    """Add a row and flush it (so it has its id)."""
    session.add(row)
    session.flush()
    return row


def touch_token(session: Session, *, token: ApiToken, now: datetime,
                every: int = 300) -> bool:
    """Record that a token was used, at most once per `every` seconds; True if written."""
    if token.last_used_at is not None and (now - token.last_used_at).total_seconds() < every:
        return False
    session.execute(sa.update(ApiToken.__table__).where(ApiToken.__table__.c.id == token.id)
                    .values(last_used_at=now))
    token.last_used_at = now
    return True


_TOKEN_CONTEXT = (
    select(ApiToken, Organization, Person, Membership)
    .join(Organization, col(Organization.id) == ApiToken.org_id)
    .outerjoin(Person, col(Person.id) == ApiToken.person_id)
    .outerjoin(Membership, sa.and_(col(Membership.org_id) == ApiToken.org_id,
                                   col(Membership.person_id) == ApiToken.person_id))
    .where(ApiToken.token_hash == sa.bindparam("token_hash"), col(ApiToken.revoked_at).is_(None))
)


def token_context(session: Session, *, token_hash: str) -> tuple[
        ApiToken, Organization, Person | None, Membership | None] | None:
    """A live token with its organisation, person and membership, in one query."""
    row = session.exec(_TOKEN_CONTEXT, params={"token_hash": token_hash}).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def tokens_of(session: Session, *, org_id: int, person_id: int | None) -> list[ApiToken]:
    """Return the tokens of a person (or the service tokens when person_id is None)."""
    query = select(ApiToken).where(ApiToken.org_id == org_id)
    query = query.where(col(ApiToken.person_id).is_(None) if person_id is None
                        else ApiToken.person_id == person_id)
    return list(session.exec(query.order_by(col(ApiToken.id).desc())))


def record_login(session: Session, *, email: str, address: str, succeeded: bool) -> None:
    """Record one sign-in attempt."""
    session.add(LoginAttempt(email=email[:254], address=address[:64], succeeded=succeeded))
    session.flush()


def recent_failures(session: Session, *, since: datetime, email: str | None = None,
                    address: str | None = None) -> int:
    """Count failed sign-ins since a time, for an account or a client address."""
    query = select(sa.func.count()).select_from(LoginAttempt).where(
        LoginAttempt.created_at >= since, LoginAttempt.succeeded == sa.false())
    if email is not None:
        query = query.where(LoginAttempt.email == email)
    if address is not None:
        query = query.where(LoginAttempt.address == address)
    return int(session.exec(query).one())


def clear_failures(session: Session, *, email: str) -> None:
    """Forget an account's failed attempts after a successful sign-in."""
    session.execute(sa.delete(LoginAttempt).where(LoginAttempt.email == email,
                                                  LoginAttempt.succeeded == sa.false()))


_ORG = Organization.__table__
_BUMP_CONFIG = (sa.update(_ORG).where(_ORG.c.id == sa.bindparam("w_id"))
                .values(config_version=_ORG.c.config_version + 1))


def bump_config(session: Session, *, org_id: int) -> None:
    """Record that the organisation's signing keys or trust list changed.

    Call it in the transaction that changes them: every process then reloads both on the
    next request that reads the organisation (see `wallet.federation.Directory`).
    """
    session.execute(_BUMP_CONFIG, {"w_id": org_id})


def audit(session: Session, *, org_id: int | None, actor: str, action: str,
          target: str = "", details: dict[str, Any] | None = None) -> None:
    """Append one audit event (who did what, when) in the caller's transaction."""
    run(session, _AUDIT_INSERT, {
        "org_id": org_id, "actor": actor, "action": action, "target": target[:300],
        "details": details or {}, "created_at": datetime.now(UTC)})


_AUDIT_INSERT = sa.insert(AuditEvent.__table__)  # type: ignore[arg-type]


def audit_events(session: Session, *, org_id: int, limit: int = 50,
                 offset: int = 0) -> list[AuditEvent]:
    """Return an organisation's audit events, newest first."""
    return list(session.exec(
        select(AuditEvent).where(AuditEvent.org_id == org_id)
        .order_by(col(AuditEvent.id).desc()).offset(offset).limit(limit)
    ))


def is_employed(m: Membership, *, on: date) -> bool:
    """Tell whether a membership is within its employment dates on a day."""
    return m.started_on <= on and (m.ended_on is None or on <= m.ended_on)
