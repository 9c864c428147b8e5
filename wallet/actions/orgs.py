"""Organisations and their people: create, add, invite, reset links, API tokens; and
reading them (members, a membership, the audit log, a person's tokens)."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from wallet import clock, security
from wallet.actions import mail
from wallet.actions._base import (
    Actor,
    atomic,
    commit,
    member_or_404,
    org_or_404,
    require_admin,
)
from wallet.core.errors import Conflict, Forbidden, Malformed, Unauthorized
from wallet.models import ApiToken, AuditEvent, Membership, Organization, Person
from wallet.store import people

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,39}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
ROLES = ("engineer", "admin")
INVITE_DAYS = 7
RESET_LIFETIME = timedelta(hours=1)
MAX_TOKEN_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Added:
    """The result of adding a person: their membership and this organisation's invitation."""

    person: Person
    membership: Membership
    invite: str | None  # one-time token for /invite/<token>, shown once (None: confirmed)


def check_email(email: str) -> str:
    """Normalise an email address or raise `Malformed`.

    Control and format characters (NUL, escapes, bidirectional overrides) are refused:
    an address is printed on pages, in terminals and in the audit log.
    """
    email = email.strip().lower()
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in email):
        raise Malformed(f"{_printable(email)!r} is not an email address")
    if not EMAIL_RE.fullmatch(email):
        raise Malformed(f"{email!r} is not an email address")
    return email


def _printable(text: str) -> str:
    return "".join(c if unicodedata.category(c) not in ("Cc", "Cf") else "?" for c in text)[:80]


def create_org(session: Session, *, slug: str, name: str, admin_email: str,
               actor: Actor, admin_password: str | None = None) -> tuple[Organization, Added]:
    """Create an organisation with its first administrator."""
    if not SLUG_RE.fullmatch(slug):
        raise Malformed("slug must be 2-40 characters: a-z, 0-9 and '-', not starting with '-'")
    name = name.strip()
    if not name or len(name) > 200:
        raise Malformed("name must be 1-200 characters")
    with atomic(session):
        if people.org_by_slug(session, slug=slug) is not None:
            raise Conflict(f"organisation {slug!r} already exists")
        try:
            org = people.add(session, Organization(slug=slug, name=name))
        except IntegrityError:
            raise Conflict(f"organisation {slug!r} already exists") from None
        added = _add_member(session, org=org, email=admin_email, role="admin",
                            start=clock.today(), name="", password=admin_password, actor=actor)
        people.audit(session, org_id=org.id, actor=actor.label, action="org.create",
                     target=slug, details={"name": name, "admin": added.person.email})
    return org, added


def add_person(session: Session, *, slug: str, email: str, role: str = "engineer",
               start: date | None = None, name: str = "", password: str | None = None,
               actor: Actor) -> Added:
    """Add a person to an organisation, with an invitation to confirm the membership.

    The answer is the same whether or not the address has an account already (at this
    or any organisation): an invitation link of this organisation. Only the operator
    (CLI) may give a password instead; that membership is confirmed at once.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    if role not in ROLES:
        raise Malformed(f"role must be one of {', '.join(ROLES)}")
    with atomic(session):
        added = _add_member(session, org=org, email=email, role=role,
                            start=start or clock.today(), name=name, password=password, actor=actor)
        people.audit(session, org_id=org.id, actor=actor.label, action="person.add",
                     target=added.person.email, details={"role": role,
                                                         "start": str(added.membership.started_on)})
    return added


def _add_member(session: Session, *, org: Organization, email: str, role: str, start: date,
                name: str, password: str | None, actor: Actor) -> Added:
    email = check_email(email)
    assert org.id is not None
    if password is not None:
        if actor.person_id is not None:
            raise Forbidden("only the operator may choose a password for someone")
        problem = security.password_problem(password)
        if problem:
            raise Malformed(problem)
    name = name.strip()[:200]
    person = people.person_by_email(session, email=email)
    if person is None:
        person = people.add(session, Person(email=email, name=name))
    assert person.id is not None
    if people.membership(session, org_id=org.id, person_id=person.id) is not None:
        raise Conflict(f"{email} is already a member of {org.slug}")
    m = people.add(session, Membership(org_id=org.id, person_id=person.id, role=role,
                                       name=name, started_on=start))
    if password is None:
        return Added(person, m, _invite(session, m, purpose="join", actor=actor))
    # The operator vouches for this person: an account without a password gets this one
    # (an existing password is kept), and the membership is confirmed.
    if person.password_hash is None:
        person.password_hash = security.hash_password(password)
        session.add(person)
    m.confirmed_at = clock.now()
    session.add(m)
    session.flush()
    return Added(person, m, None)


def _invite(session: Session, membership: Membership, *, purpose: str, actor: Actor) -> str:
    """Issue a one-time link and queue its email, in the caller's transaction."""
    token = secrets.token_urlsafe(24)
    now = clock.now()
    lifetime = timedelta(days=INVITE_DAYS) if purpose == "join" else RESET_LIFETIME
    token_hash = security.hash_token(token)
    people.add_invitation(session, membership=membership, purpose=purpose,
                          token_hash=token_hash, expires_at=now + lifetime,
                          created_by=actor.label, now=now)
    org, person = (session.get(Organization, membership.org_id),
                   session.get(Person, membership.person_id))
    assert org is not None and person is not None
    mail.queue_link(session, purpose=purpose, org=org, person=person, membership=membership,
                    token=token, token_hash=token_hash, expires_at=now + lifetime,
                    lifetime=lifetime)
    return token


def invite_again(session: Session, *, slug: str, email: str, actor: Actor) -> str:
    """Issue a fresh invitation for a membership not confirmed yet (e.g. a lost link).

    The link confirms this organisation's membership only, and for an account that has
    a password it needs that password: any admin of the organisation may issue it.
    Earlier links of the membership stop working. Returns the token, shown once.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    with atomic(session):
        m, person = member_or_404(session, org, email)
        if m.confirmed_at is not None:
            raise Conflict(f"{person.email} has joined {org.name} already")
        token = _invite(session, m, purpose="join", actor=actor)
        people.audit(session, org_id=org.id, actor=actor.label, action="person.invite",
                     target=person.email)
    return token


def reset_link(session: Session, *, slug: str, email: str, actor: Actor) -> str:
    """Issue a single-use password reset link (1 hour) for a member; the token, shown once.

    Used, it sets the account's password and confirms this organisation's membership
    only: every other membership of the person returns to unconfirmed (their
    organisations invite again), so a reset issued here is never a way into another
    organisation. It is emailed to the member (wallet.actions.mail); with no SMTP server
    configured, the admin hands the link over.
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    with atomic(session):
        m, person = member_or_404(session, org, email)
        token = _invite(session, m, purpose="reset", actor=actor)
        people.audit(session, org_id=org.id, actor=actor.label, action="person.reset_link",
                     target=person.email)
    return token


def create_token(session: Session, *, slug: str, email: str | None, label: str = "",
                 expires_days: int | None = None, actor: Actor) -> tuple[str, ApiToken]:
    """Create a personal (email given) or service token; the token is returned once.

    `expires_days`: the token stops working that many days from now (None: never).
    A personal token opens nothing until its membership is confirmed (the guard checks
    on every call); only the operator may create one before that.
    """
    org = org_or_404(session, slug)
    assert org.id is not None
    if email is None or actor.person_id is None or _other_person(session, org, email, actor):
        require_admin(session, org, actor)
    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise Malformed(f"a token expires after 1 to {MAX_TOKEN_DAYS} days")
    with atomic(session):
        person_id = None
        if email is not None:
            m, person = member_or_404(session, org, email)
            if m.confirmed_at is None and actor.person_id is not None:
                raise Conflict(f"{person.email} has not joined {org.name} yet (not confirmed):"
                               " no token until they accept the invitation")
            person_id = person.id
        now = clock.now()
        token, token_hash, prefix = security.new_token()
        row = people.add(session, ApiToken(
            org_id=org.id, person_id=person_id, kind="personal" if email else "service",
            label=label.strip()[:100], token_hash=token_hash, prefix=prefix, created_at=now,
            expires_at=None if expires_days is None else now + timedelta(days=expires_days)))
        people.audit(session, org_id=org.id, actor=actor.label, action="token.create",
                     target=email or "service",
                     details={"prefix": prefix, "label": row.label,
                              "expires_at": row.expires_at and row.expires_at.isoformat()})
    return token, row


def _other_person(session: Session, org: Organization, email: str, actor: Actor) -> bool:
    person = people.person_by_email(session, email=email)
    return person is None or person.id != actor.person_id


def revoke_token(session: Session, *, slug: str, token_id: int, actor: Actor) -> None:
    """Revoke an API token (its owner or an admin may)."""
    org = org_or_404(session, slug)
    with atomic(session):
        row = session.get(ApiToken, token_id)
        if row is None or row.org_id != org.id or row.revoked_at is not None:
            raise Conflict("no such live token")
        if row.person_id is None or row.person_id != actor.person_id:
            require_admin(session, org, actor)
        row.revoked_at = clock.now()
        session.add(row)
        people.audit(session, org_id=org.id, actor=actor.label, action="token.revoke",
                     target=row.prefix)


def token_hash(token: str) -> str:
    """The stored hash of a bearer token, or `Unauthorized` when it cannot be one of ours."""
    if not token.startswith(security.TOKEN_PREFIX) or len(token) > 100:
        raise Unauthorized("bearer token is not valid")
    return security.hash_token(token)




def authenticate(session: Session, *, token: str) -> tuple[
        ApiToken, Organization, Person | None, Membership | None]:
    """A live bearer token with its organisation, person and membership, or `Unauthorized`.

    Its last use is recorded (at most every 5 minutes) in a commit of its own:
    authentication runs first in a request, so nothing else is pending yet.
    """
    found = people.token_context(session, token_hash=token_hash(token.strip()))
    if found is None:
        raise Unauthorized("bearer token is not valid")
    row, now = found[0], clock.now()
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized(f"this bearer token expired at {row.expires_at:%Y-%m-%d %H:%M}"
                           " UTC; create a new one")
    if people.touch_token(session, token=row, now=now):
        commit(session)
    return found


# -- reading -----------------------------------------------------------------------------


def confirmed_membership(session: Session, *, slug: str,
                         person: Person) -> tuple[Organization, Membership] | None:
    """Organisation `slug` and the person's confirmed membership of it; None when either
    is missing (an invitation not accepted yet opens nothing)."""
    org = people.org_by_slug(session, slug=slug)
    if org is None or org.id is None or person.id is None:
        return None
    m = people.membership(session, org_id=org.id, person_id=person.id)
    return None if m is None or m.confirmed_at is None else (org, m)


def member(session: Session, *, org: Organization,
           person_id: int) -> tuple[Membership, Person] | None:
    """A member of `org` by person id, with the person; None when not one of its members."""
    assert org.id is not None
    m = people.membership(session, org_id=org.id, person_id=person_id)
    person = None if m is None else session.get(Person, person_id)
    return None if m is None or person is None else (m, person)


def members(session: Session, *, org: Organization) -> list[tuple[Membership, Person]]:
    """Every member of `org` with the person, by email."""
    assert org.id is not None
    return people.members(session, org_id=org.id)


def audit_events(session: Session, *, org: Organization, limit: int = 50,
                 offset: int = 0) -> list[AuditEvent]:
    """The audit log of `org`, newest first."""
    assert org.id is not None
    return people.audit_events(session, org_id=org.id, limit=limit, offset=offset)


def tokens_of(session: Session, *, org: Organization, person: Person) -> list[ApiToken]:
    """A person's API tokens at `org`, newest first."""
    assert org.id is not None and person.id is not None
    return people.tokens_of(session, org_id=org.id, person_id=person.id)


def organisations(session: Session) -> list[Organization]:
    """Every organisation on this instance, by slug (the operator's view: the CLI)."""
    return people.orgs(session)


def tokens(session: Session, *, org: Organization, person: Person | None) -> list[ApiToken]:
    """A person's API tokens at `org`, or its service tokens (`person` None), newest first."""
    assert org.id is not None
    return people.tokens_of(session, org_id=org.id,
                            person_id=None if person is None else person.id)
