"""Organisations and their people: create, add, invite, sign in, tokens."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, timedelta

from flask import current_app
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from wallet import security
from wallet.actions._base import (
    Actor,
    atomic,
    member_or_404,
    org_or_404,
    require_admin,
    today,
    utcnow,
)
from wallet.core.errors import Conflict, Forbidden, Malformed, RateLimited, Unauthorized
from wallet.models import ApiToken, Membership, Organization, Person
from wallet.store import people

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{1,39}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,189}")
ROLES = ("engineer", "admin")
INVITE_DAYS = 7


@dataclass(frozen=True, slots=True)
class Added:
    """The result of adding a person: their membership and, if new, an invitation."""

    person: Person
    membership: Membership
    invite: str | None  # one-time token for /invite/<token>, shown once


def check_email(email: str) -> str:
    """Normalise an email address or raise `Malformed`."""
    email = email.strip().lower()
    if not EMAIL_RE.fullmatch(email):
        raise Malformed(f"{email!r} is not an email address")
    return email


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
                            start=today(), name="", password=admin_password)
        people.audit(session, org_id=org.id, actor=actor.label, action="org.create",
                     target=slug, details={"name": name, "admin": added.person.email})
    return org, added


def add_person(session: Session, *, slug: str, email: str, role: str = "engineer",
               start: date | None = None, name: str = "", password: str | None = None,
               actor: Actor) -> Added:
    """Add a person to an organisation (inviting them when they have no password yet)."""
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    if role not in ROLES:
        raise Malformed(f"role must be one of {', '.join(ROLES)}")
    with atomic(session):
        added = _add_member(session, org=org, email=email, role=role,
                            start=start or today(), name=name, password=password)
        people.audit(session, org_id=org.id, actor=actor.label, action="person.add",
                     target=added.person.email, details={"role": role,
                                                         "start": str(added.membership.started_on)})
    return added


def _add_member(session: Session, *, org: Organization, email: str, role: str, start: date,
                name: str, password: str | None) -> Added:
    email = check_email(email)
    assert org.id is not None
    person = people.person_by_email(session, email=email)
    invite = None
    if person is None:
        person = Person(email=email, name=name.strip()[:200])
        if password is not None:
            _set_password(person, password)
        else:
            invite = _new_invite(person)
        people.add(session, person)
    elif password is not None and person.password_hash is None:
        _set_password(person, password)
    assert person.id is not None
    if people.membership(session, org_id=org.id, person_id=person.id) is not None:
        raise Conflict(f"{email} is already a member of {org.slug}")
    m = people.add(session, Membership(org_id=org.id, person_id=person.id, role=role,
                                       started_on=start))
    return Added(person, m, invite)


def _set_password(person: Person, password: str) -> None:
    problem = security.password_problem(password)
    if problem:
        raise Malformed(problem)
    person.password_hash = security.hash_password(password)
    person.invite_hash = None
    person.invite_expires_at = None


def _new_invite(person: Person) -> str:
    token = secrets.token_urlsafe(24)
    person.invite_hash = security.hash_token(token)
    person.invite_expires_at = utcnow() + timedelta(days=INVITE_DAYS)
    return token


def invite_again(session: Session, *, slug: str, email: str, actor: Actor) -> str:
    """Issue a fresh invitation (e.g. a lost link); returns the token, shown once.

    People are shared by every organisation of an instance, so an invitation sets the
    password of a whole account: an organisation may re-invite only people who have no
    password yet and belong to no other organisation (the operator at the CLI may always).
    """
    org = org_or_404(session, slug)
    require_admin(session, org, actor)
    with atomic(session):
        _m, person = member_or_404(session, org, email)
        assert person.id is not None
        if person.password_hash is not None:
            raise Conflict(f"{person.email} has chosen a password already")
        others = [o.slug for _m2, o in people.memberships_of(session, person_id=person.id)
                  if o.id != org.id]
        if others and actor.person_id is not None:
            raise Forbidden(f"{person.email} also belongs to another organisation: only the"
                            " operator can issue a new invitation")
        token = _new_invite(person)
        session.add(person)
        people.audit(session, org_id=org.id, actor=actor.label, action="person.invite",
                     target=person.email)
    return token


def accept_invite(session: Session, *, token: str, password: str) -> Person:
    """Set a password from an invitation; the invitation then stops working."""
    with atomic(session):
        person = people.person_by_invite(session, invite_hash=security.hash_token(token))
        if (person is None or person.invite_expires_at is None
                or person.invite_expires_at < utcnow() or person.password_hash is not None):
            # An invitation sets a first password only; it never replaces one.
            raise Unauthorized("this invitation link is invalid or has expired")
        _set_password(person, password)
        session.add(person)
        people.audit(session, org_id=None, actor=person.email, action="person.set_password",
                     target=person.email)
    return person


def sign_in(session: Session, *, email: str, password: str, address: str) -> Person:
    """Check a password, limited per account and per client address."""
    config = current_app.config
    email = email.strip().lower()[:254]
    since = utcnow() - timedelta(seconds=int(config["WALLET_LOGIN_WINDOW_SECONDS"]))
    minutes = max(1, int(config["WALLET_LOGIN_WINDOW_SECONDS"]) // 60)
    with atomic(session):
        if (people.recent_failures(session, since=since, email=email)
                >= int(config["WALLET_LOGIN_MAX_PER_ACCOUNT"])
                or people.recent_failures(session, since=since, address=address)
                >= int(config["WALLET_LOGIN_MAX_PER_ADDRESS"])):
            raise RateLimited(f"Too many failed sign-ins. Try again in {minutes} minutes.")
        person = people.person_by_email(session, email=email)
        ok = security.verify_password(person.password_hash if person else None, password)
        people.record_login(session, email=email, address=address, succeeded=ok)
        if not ok or person is None:
            # Commit the failure before raising: the throttle must count it.
            session.commit()
            raise Unauthorized("Email or password is not correct.")
        people.clear_failures(session, email=email)
        assert person.password_hash is not None
        if security.needs_rehash(person.password_hash):
            person.password_hash = security.hash_password(password)
            session.add(person)
    return person


def create_token(session: Session, *, slug: str, email: str | None, label: str = "",
                 actor: Actor) -> tuple[str, ApiToken]:
    """Create a personal (email given) or service token; the token is returned once."""
    org = org_or_404(session, slug)
    assert org.id is not None
    if email is None or actor.person_id is None or _other_person(session, org, email, actor):
        require_admin(session, org, actor)
    with atomic(session):
        person_id = None
        if email is not None:
            _m, person = member_or_404(session, org, email)
            person_id = person.id
        token, token_hash, prefix = security.new_token()
        row = people.add(session, ApiToken(
            org_id=org.id, person_id=person_id, kind="personal" if email else "service",
            label=label.strip()[:100], token_hash=token_hash, prefix=prefix))
        people.audit(session, org_id=org.id, actor=actor.label, action="token.create",
                     target=email or "service", details={"prefix": prefix, "label": row.label})
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
        row.revoked_at = utcnow()
        session.add(row)
        people.audit(session, org_id=org.id, actor=actor.label, action="token.revoke",
                     target=row.prefix)


def token_hash(token: str) -> str:
    """The stored hash of a bearer token, or `Unauthorized` when it cannot be one of ours."""
    if not token.startswith(security.TOKEN_PREFIX) or len(token) > 100:
        raise Unauthorized("bearer token is not valid")
    return security.hash_token(token)


