"""A person's account: sign in (throttled), join through an invitation, reset and change
the password; and reading an account (its memberships, whether it administers any).

People are shared by every organisation of an instance, so nothing one organisation
hands out may open another's: an invitation confirms its own organisation's membership
only, and never replaces a password; a reset link sets the password but then leaves
every other membership unconfirmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlmodel import Session

from wallet import clock, security
from wallet.actions import sessions
from wallet.actions._base import atomic
from wallet.actions.orgs import check_email
from wallet.core import throttle
from wallet.core.errors import Conflict, Forbidden, Malformed, RateLimited, Unauthorized
from wallet.models import Invitation, Membership, Organization, Person
from wallet.store import people

WRONG_PASSWORD = "Email or password is not correct."  # noqa: S105 - a message
BAD_LINK = "This link is invalid, was used already or has expired."


def _policy() -> throttle.Policy:
    config = current_app.config
    return throttle.Policy(
        free=int(config["WALLET_LOGIN_FREE_FAILURES"]),
        max_delay=int(config["WALLET_LOGIN_MAX_DELAY_SECONDS"]),
        address_free=int(config["WALLET_LOGIN_FREE_FAILURES_PER_ADDRESS"]),
        address_max_delay=int(config["WALLET_LOGIN_MAX_ADDRESS_DELAY_SECONDS"]))


def _check_password(session: Session, *, email: str, password: str, address: str,
                    person: Person | None = None, lookup: bool = False) -> Person | None:
    """Check a password under the sign-in throttle; the person when it is right.

    The attempt is counted (as failed until proven right) and committed before the
    password is hashed, so concurrent guesses count each other and no database lock is
    held while argon2 runs. An attempt refused for waiting is not counted.
    """
    now = clock.now()
    since = now - timedelta(seconds=int(current_app.config["WALLET_LOGIN_WINDOW_SECONDS"]))
    with atomic(session):
        people.purge_attempts(session, before=since, now=now)
        pair, pair_latest, address_n, address_latest = people.failed_attempts(
            session, email=email, address=address, since=since)
        wait = throttle.wait_seconds(
            throttle.Failures(pair, pair_latest, address_n, address_latest),
            policy=_policy(), now=now)
        if wait:
            raise RateLimited(f"Too many failed sign-ins. Try again in {wait} seconds.",
                              retry_after=wait)
        if lookup:
            person = people.person_by_email(session, email=email)
        attempt = people.record_attempt(session, email=email, address=address, now=now)
    if not security.verify_password(person.password_hash if person else None, password):
        return None
    assert person is not None and person.password_hash is not None
    with atomic(session):
        people.attempt_succeeded(session, attempt_id=attempt, email=email, address=address)
        if security.needs_rehash(person.password_hash):
            person.password_hash = security.hash_password(password)
            session.add(person)
    return person


def sign_in(session: Session, *, email: str, password: str, address: str) -> Person:
    """Check an email and password, throttled per (account, address) and per address."""
    try:
        email = check_email(email[:254])
    except Malformed:
        raise Unauthorized(WRONG_PASSWORD) from None  # no account has such an address
    person = _check_password(session, email=email, password=password, address=address,
                             lookup=True)
    if person is None:
        raise Unauthorized(WRONG_PASSWORD)
    return person


@dataclass(frozen=True, slots=True)
class Link:
    """What an invitation or reset link is for, to show before it is used."""

    invitation: Invitation
    org: Organization
    person: Person
    membership: Membership

    @property
    def has_password(self) -> bool:
        return self.person.password_hash is not None


def link(session: Session, *, token: str, purpose: str) -> Link:
    """Look up a live invitation (`join`) or reset link, or raise `Unauthorized`."""
    if not token or len(token) > 100 or not token.isascii():
        raise Unauthorized(BAD_LINK)
    found = people.invitation(session, token_hash=security.hash_token(token))
    if found is None:
        raise Unauthorized(BAD_LINK)
    invitation, org, person, membership = found
    if (invitation.purpose != purpose or invitation.used_at is not None
            or invitation.expires_at <= clock.now()):
        raise Unauthorized(BAD_LINK)
    return Link(invitation, org, person, membership)


def accept_invitation(session: Session, *, token: str, password: str, address: str,
                      signed_in: Person | None) -> Person:
    """Confirm an organisation's membership through its invitation; returns the person.

    An account without a password gets `password` as its first one. An account with one
    must be signed in (as itself) or give that password: an invitation never replaces a
    password, and confirms its own organisation's membership only.
    """
    found = link(session, token=token, purpose="join")
    person = found.person
    assert person.id is not None and found.membership.id is not None
    if signed_in is not None and signed_in.id != person.id:
        raise Forbidden("You are signed in as someone else: sign out, then open the link again.")
    first_password = None
    if person.password_hash is None:
        problem = security.password_problem(password)
        if problem:
            raise Malformed(problem)
        first_password = security.hash_password(password)
    elif signed_in is None and _check_password(session, email=person.email, password=password,
                                               address=address, person=person) is None:
        raise Unauthorized("That is not this account's password.")
    with atomic(session):
        if not people.use_invitation(session, invitation_id=found.invitation.id or 0,
                                     now=clock.now()):
            raise Unauthorized(BAD_LINK)
        if first_password is not None and not people.set_first_password(
                session, person_id=person.id, password_hash=first_password):
            raise Conflict("This account has a password by now: open the link again and"
                           " sign in with it.")
        people.confirm_membership(session, membership_id=found.membership.id, now=clock.now())
        people.audit(session, org_id=found.org.id, actor=person.email, action="person.join",
                     target=person.email,
                     details={"first_password": first_password is not None})
    session.refresh(person)
    return person


def use_reset_link(session: Session, *, token: str, password: str) -> Person:
    """Set a new password from an organisation's reset link; ends every session.

    The link's organisation vouches for this person there only: its membership is
    confirmed, every other membership returns to unconfirmed (those organisations must
    invite again), so a reset issued by one organisation never opens another.
    """
    found = link(session, token=token, purpose="reset")
    person = found.person
    assert person.id is not None and found.membership.id is not None
    problem = security.password_problem(password)
    if problem:
        raise Malformed(problem)
    password_hash = security.hash_password(password)
    with atomic(session):
        now = clock.now()
        if not people.use_invitation(session, invitation_id=found.invitation.id or 0, now=now):
            raise Unauthorized(BAD_LINK)
        people.set_password(session, person_id=person.id, password_hash=password_hash)
        people.confirm_membership(session, membership_id=found.membership.id, now=now)
        others = people.unconfirm_other_memberships(session, person_id=person.id,
                                                    keep_membership_id=found.membership.id)
        people.audit(session, org_id=found.org.id, actor=person.email,
                     action="person.reset_password", target=person.email)
        for org_id in others:
            people.audit(session, org_id=org_id, actor="system", action="person.unconfirmed",
                         target=person.email,
                         details={"reason": "password reset through another organisation;"
                                            " invite again"})
    sessions.end_all(person.id)
    session.refresh(person)
    return person


def change_password(session: Session, *, person: Person, current: str, new: str,
                    address: str) -> Person:
    """Change a signed-in person's password (the current one is required); ends every
    session of theirs (the caller starts a fresh one for this browser)."""
    assert person.id is not None
    problem = security.password_problem(new)
    if problem:
        raise Malformed(problem)
    if _check_password(session, email=person.email, password=current, address=address,
                       person=person) is None:
        raise Unauthorized("Your current password is not correct.")
    with atomic(session):
        people.set_password(session, person_id=person.id,
                            password_hash=security.hash_password(new))
        for m, _org in people.memberships_of(session, person_id=person.id,
                                             confirmed_only=True):
            people.audit(session, org_id=m.org_id, actor=person.email,
                         action="person.change_password", target=person.email)
    sessions.end_all(person.id)
    session.refresh(person)
    return person


# -- reading -----------------------------------------------------------------------------


def person_by_id(session: Session, *, person_id: int) -> Person | None:
    """The account with this id; None when there is none (deleted)."""
    return session.get(Person, person_id)


def memberships(session: Session, *,
                person: Person) -> list[tuple[Membership, Organization]]:
    """A person's confirmed memberships with their organisations, by slug."""
    assert person.id is not None
    return people.memberships_of(session, person_id=person.id, confirmed_only=True)


def is_admin_anywhere(session: Session, *, person: Person) -> bool:
    """Tell whether a person administers any organisation (a confirmed admin role)."""
    assert person.id is not None
    return people.is_admin_anywhere(session, person_id=person.id)
