"""Organisations, people, memberships, invitations, API tokens, sign-in attempts, audit log."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from wallet import clock
from wallet.models import (
    ApiToken,
    AuditEvent,
    Invitation,
    LoginAttempt,
    Membership,
    Organization,
    Person,
)
from wallet.store._dialect import dialect_of, run
from wallet.store._process import due, kept

_PERSON: sa.Table = Person.__table__  # type: ignore[attr-defined]
_MEMBERSHIP: sa.Table = Membership.__table__  # type: ignore[attr-defined]
_INVITATION: sa.Table = Invitation.__table__  # type: ignore[attr-defined]
_TOKEN: sa.Table = ApiToken.__table__  # type: ignore[attr-defined]
_ORG_BY_SLUG = select(Organization).where(Organization.slug == sa.bindparam("slug"))


def org_by_slug(session: Session, *, slug: str) -> Organization | None:
    """Return an organisation by slug.

    One this session already loaded is handed back without a query: the query would
    return that very object, as loaded (the identity map answers with what it holds),
    and organisations are never deleted nor renamed. A request authenticated by a token
    has loaded its organisation with the token (`token_context`), so the action's own
    look-up by slug costs nothing.
    """
    held = session.info.get(_SESSION_ORGS, {}).get(slug)
    if held is not None and held in session:
        return held  # type: ignore[no-any-return]
    found = session.exec(_ORG_BY_SLUG, params={"slug": slug}).first()
    if found is not None:
        _hold_org(session, found)
    return found


_SESSION_ORGS = "people.orgs-by-slug"


def _hold_org(session: Session, org: Organization) -> None:
    """Remember for this session's `org_by_slug` an organisation it has loaded."""
    session.info.setdefault(_SESSION_ORGS, {})[org.slug] = org


# Organisations are never deleted and their slugs never change, so once an id is read
# from committed state it stays right: `org_id_of` reads it through the seam's read of
# committed state and, when that read was one, keeps it for the app's database.
_ORG_IDS = "people.org-ids"
_ORG_ID = sa.select(Organization.__table__.c.id).where(
    Organization.__table__.c.slug == sa.bindparam("slug"))


def org_id_of(session: Session, *, slug: str) -> int | None:
    """The id of organisation `slug`; None when there is none.

    For the anonymous nonce endpoint, which otherwise touches no table: after the first
    call per process, PostgreSQL is not asked again. SQLite reads in the session's
    transaction each time (which might see an organisation it has not committed yet,
    so nothing read there is kept).
    """
    ids = kept(session, _ORG_IDS)
    known = None if ids is None else ids.get(slug)
    if known is not None:
        return int(known)  # type: ignore[call-overload]
    found, committed = dialect_of(session).read_committed(session, _ORG_ID, {"slug": slug})
    if found is None:
        return None
    if committed and ids is not None:
        ids.put(slug, int(found))
    return int(found)


def orgs(session: Session) -> list[Organization]:
    """Return every organisation, by slug."""
    return list(session.exec(select(Organization).order_by(Organization.slug)))


def person_by_email(session: Session, *, email: str) -> Person | None:
    """Return a person by (case-insensitive) email."""
    return session.exec(select(Person).where(Person.email == email.strip().lower())).first()


def set_first_password(session: Session, *, person_id: int, password_hash: str) -> bool:
    """Set the password of an account that has none; False when it has one by now.

    A conditional update: two invitations of two organisations accepted at once cannot
    both set it (the second would silently replace the first one's password).
    """
    done = run(session, sa.update(_PERSON)
               .where(_PERSON.c.id == person_id, _PERSON.c.password_hash.is_(None))
               .values(password_hash=password_hash))
    return bool(done.rowcount)


def set_password(session: Session, *, person_id: int, password_hash: str) -> None:
    """Replace an account's password hash."""
    run(session, sa.update(_PERSON).where(_PERSON.c.id == person_id)
        .values(password_hash=password_hash))


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
    locked = dialect_of(session).for_update(_MEMBERSHIP_BY_ID)
    return session.exec(locked, params={"id": membership_id}).one()


_MEMBERSHIP_BY_ID = (select(Membership).where(Membership.id == sa.bindparam("id"))
                     .execution_options(populate_existing=True))


def memberships_of(session: Session, *, person_id: int,
                   confirmed_only: bool = False) -> list[tuple[Membership, Organization]]:
    """Return every membership of a person with its organisation (or only confirmed ones)."""
    query = (select(Membership, Organization)
             .join(Organization, col(Organization.id) == Membership.org_id)
             .where(Membership.person_id == person_id))
    if confirmed_only:
        query = query.where(col(Membership.confirmed_at).is_not(None))
    return list(session.exec(query.order_by(Organization.slug)).all())


def confirm_membership(session: Session, *, membership_id: int, now: datetime) -> None:
    """Mark a membership confirmed by its person (idempotent: the first time stays)."""
    run(session, sa.update(_MEMBERSHIP)
        .where(_MEMBERSHIP.c.id == membership_id, _MEMBERSHIP.c.confirmed_at.is_(None))
        .values(confirmed_at=now))


def unconfirm_other_memberships(session: Session, *, person_id: int,
                                keep_membership_id: int) -> list[int]:
    """Return a person's other memberships to unconfirmed; the org ids affected."""
    table = _MEMBERSHIP
    rows = run(session, sa.update(table)
               .where(table.c.person_id == person_id, table.c.id != keep_membership_id,
                      table.c.confirmed_at.is_not(None))
               .values(confirmed_at=None)
               .returning(table.c.org_id)).all()
    return [int(r[0]) for r in rows]


def is_admin_anywhere(session: Session, *, person_id: int) -> bool:
    """Tell whether a person holds a confirmed admin role in any organisation."""
    found = session.exec(select(Membership.id).where(
        Membership.person_id == person_id, Membership.role == "admin",
        col(Membership.confirmed_at).is_not(None)).limit(1)).first()
    return found is not None


# -- invitations ---------------------------------------------------------------------------


def add_invitation(session: Session, *, membership: Membership, purpose: str,
                   token_hash: str, expires_at: datetime, created_by: str,
                   now: datetime) -> Invitation:
    """Record a new invitation; earlier unused ones of the membership and purpose stop."""
    assert membership.id is not None
    table = _INVITATION
    run(session, sa.update(table)
        .where(table.c.membership_id == membership.id, table.c.purpose == purpose,
               table.c.used_at.is_(None), table.c.expires_at > now)
        .values(expires_at=now))
    return add(session, Invitation(org_id=membership.org_id, person_id=membership.person_id,
                                   membership_id=membership.id, purpose=purpose,
                                   token_hash=token_hash, expires_at=expires_at,
                                   created_by=created_by[:254], created_at=now))


def invitation(session: Session, *, token_hash: str) -> tuple[
        Invitation, Organization, Person, Membership] | None:
    """An invitation by its token's hash, with its organisation, person and membership."""
    row = session.exec(
        select(Invitation, Organization, Person, Membership)
        .join(Organization, col(Organization.id) == Invitation.org_id)
        .join(Person, col(Person.id) == Invitation.person_id)
        .join(Membership, col(Membership.id) == Invitation.membership_id)
        .where(Invitation.token_hash == token_hash)).first()
    return None if row is None else (row[0], row[1], row[2], row[3])


def use_invitation(session: Session, *, invitation_id: int, now: datetime) -> bool:
    """Spend an invitation exactly once (a conditional update); False when it cannot be."""
    table = _INVITATION
    done = run(session, sa.update(table)
               .where(table.c.id == invitation_id, table.c.used_at.is_(None),
                      table.c.expires_at > now)
               .values(used_at=now))
    return bool(done.rowcount)


def pending_invitations(session: Session, *, org_id: int,
                        now: datetime) -> dict[int, Invitation]:
    """The live join invitation of each membership of an organisation, by membership id."""
    rows = session.exec(select(Invitation).where(
        Invitation.org_id == org_id, Invitation.purpose == "join",
        col(Invitation.used_at).is_(None), Invitation.expires_at > now))
    return {row.membership_id: row for row in rows}


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
    run(session, sa.update(_TOKEN).where(_TOKEN.c.id == token.id).values(last_used_at=now))
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
    if row is None:
        return None
    _hold_org(session, row[1])
    return row[0], row[1], row[2], row[3]


def tokens_of(session: Session, *, org_id: int, person_id: int | None) -> list[ApiToken]:
    """Return the tokens of a person (or the service tokens when person_id is None)."""
    query = select(ApiToken).where(ApiToken.org_id == org_id)
    query = query.where(col(ApiToken.person_id).is_(None) if person_id is None
                        else ApiToken.person_id == person_id)
    return list(session.exec(query.order_by(col(ApiToken.id).desc())))


# -- sign-in attempts ----------------------------------------------------------------------

_ATTEMPT = LoginAttempt.__table__
_FAILED = sa.and_(_ATTEMPT.c.address == sa.bindparam("address"),
                  _ATTEMPT.c.created_at >= sa.bindparam("since"),
                  _ATTEMPT.c.succeeded == sa.false())
_PAIR = _ATTEMPT.c.email == sa.bindparam("email")
_ATTEMPT_COUNTS = sa.select(
    sa.func.count(),
    sa.func.max(_ATTEMPT.c.created_at),
    sa.func.coalesce(sa.func.sum(sa.case((_PAIR, 1), else_=0)), 0),
    sa.func.max(sa.case((_PAIR, _ATTEMPT.c.created_at), else_=None)),
).where(_FAILED)


def failed_attempts(session: Session, *, email: str, address: str, since: datetime
                    ) -> tuple[int, datetime | None, int, datetime | None]:
    """Failed sign-ins since a time from one address: (for this account, its latest,
    for any account, its latest), in one query over the address's index."""
    row = run(session, _ATTEMPT_COUNTS, {"email": email, "address": address,
                                         "since": since}).one()
    return int(row[2]), row[3], int(row[0]), row[1]


def record_attempt(session: Session, *, email: str, address: str, now: datetime) -> int:
    """Record a sign-in attempt as failed until it succeeds; return its id."""
    row = run(session, sa.insert(_ATTEMPT).returning(_ATTEMPT.c.id), {
        "email": email[:254], "address": address[:64], "succeeded": False,
        "created_at": now}).one()
    return int(row[0])


def attempt_succeeded(session: Session, *, attempt_id: int, email: str, address: str) -> None:
    """Mark an attempt successful and forget this address's failures for the account."""
    run(session, sa.update(_ATTEMPT).where(_ATTEMPT.c.id == attempt_id)
        .values(succeeded=True))
    run(session, sa.delete(_ATTEMPT).where(_ATTEMPT.c.email == email[:254],
                                           _ATTEMPT.c.address == address[:64],
                                           _ATTEMPT.c.succeeded == sa.false()))


# Attempts older than the throttle's window never matter again: deleted at most this
# often per process (as spent nonces are), not on every sign-in.
PURGE_EVERY_SECONDS = 60.0


def purge_attempts(session: Session, *, before: datetime, now: datetime) -> None:
    """Delete attempts older than `before`, at most once a minute per process (by `now`)."""
    if not due(session, "attempts.purge", None, every=PURGE_EVERY_SECONDS,
               at=now.timestamp()):
        return
    run(session, sa.delete(_ATTEMPT).where(_ATTEMPT.c.created_at < before))


_ORG = Organization.__table__
_BUMP_CONFIG = (sa.update(_ORG).where(_ORG.c.id == sa.bindparam("w_id"))
                .values(config_version=_ORG.c.config_version + 1))


def bump_config(session: Session, *, org_id: int) -> None:
    """Record that the organisation's signing keys or trust list changed.

    Call it in the transaction that changes them: every process then reloads both on the
    next request that reads the organisation (see `wallet.directory.Directory`).
    """
    run(session, _BUMP_CONFIG, {"w_id": org_id})


def audit(session: Session, *, org_id: int | None, actor: str, action: str,
          target: str = "", details: dict[str, Any] | None = None) -> None:
    """Append one audit event (who did what, when) in the caller's transaction."""
    run(session, _AUDIT_INSERT, {
        "org_id": org_id, "actor": actor, "action": action, "target": target[:300],
        "details": details or {}, "created_at": clock.now()})


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


# -- exports (issue 15) --------------------------------------------------------------------


def audit_page(session: Session, *, org_id: int, since: datetime | None,
               before: datetime | None, after_id: int, limit: int) -> list[sa.Row[Any]]:
    """Audit events made in [since, before), oldest first, the `limit` after id `after_id`
    (an export reads page after page: keyset, so each page costs the same)."""
    a = AuditEvent.__table__  # type: ignore[attr-defined]
    query = sa.select(a.c.id, a.c.created_at, a.c.actor, a.c.action, a.c.target,
                      a.c.details).where(a.c.org_id == org_id, a.c.id > after_id)
    if since is not None:
        query = query.where(a.c.created_at >= since)
    if before is not None:
        query = query.where(a.c.created_at < before)
    return list(run(session, query.order_by(a.c.id).limit(limit)).all())
