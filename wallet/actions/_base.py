"""What every action shares: who is acting, and the one commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime

from sqlmodel import Session

from wallet import clock
from wallet.core.errors import Forbidden, Malformed, NotFound
from wallet.models import Membership, Organization, Person
from wallet.store import ledger as ledger_store
from wallet.store import people


@dataclass(frozen=True, slots=True)
class Actor:
    """Who performs an action, for the audit log."""

    label: str
    person_id: int | None = None

    @classmethod
    def cli(cls) -> Actor:
        """The operator at the command line."""
        return cls("cli")

    @classmethod
    def of(cls, person: Person) -> Actor:
        """A signed-in person."""
        return cls(person.email, person.id)


def commit(session: Session) -> None:
    """The one way an action commits: what the ledger left for the end of the
    transaction (deferred debits) is applied inside it, then COMMIT."""
    pending = ledger_store.before_commit(session)
    session.commit()
    ledger_store.after_commit(session, pending)


@contextmanager
def atomic(session: Session) -> Iterator[None]:
    """Commit once when the block succeeds; roll everything back when it raises."""
    try:
        yield
        commit(session)
    except BaseException:
        session.rollback()
        raise


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (`wallet.clock`; core takes it as argument)."""
    return clock.now()


def today() -> date:
    """Today's date in UTC."""
    return clock.today()


def org_or_404(session: Session, slug: str) -> Organization:
    """Return an organisation or raise `NotFound`."""
    org = people.org_by_slug(session, slug=slug)
    if org is None:
        raise NotFound(f"no organisation {slug!r}")
    return org


def member_or_404(session: Session, org: Organization, email: str) -> tuple[Membership, Person]:
    """Return a member of `org` by email or raise `NotFound`."""
    assert org.id is not None
    found = people.member_by_email(session, org_id=org.id, email=email)
    if found is None:
        raise NotFound(f"{email} is not a member of {org.slug}")
    return found


def require_admin(session: Session, org: Organization, actor: Actor) -> None:
    """Raise `Forbidden` unless the actor is the CLI operator or an admin of `org`."""
    if actor.person_id is None:
        return
    assert org.id is not None
    m = people.membership(session, org_id=org.id, person_id=actor.person_id)
    if (m is None or m.confirmed_at is None or m.role != "admin"
            or not people.is_employed(m, on=today())):
        raise Forbidden("only an administrator of this organisation may do that")


def parse_moment(value: object, field: str) -> datetime:
    """Parse an ISO 8601 time with a timezone (`Z` allowed), or "now"; else `Malformed`."""
    if not isinstance(value, str) or not value.strip():
        raise Malformed(f"{field} must be a time like 2026-11-27T09:30:00Z")
    text = value.strip()
    if text == "now":
        return utcnow()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Malformed(f"{field} must be a time like 2026-11-27T09:30:00Z"
                        f" (got {text[:40]!r})") from None
    if moment.tzinfo is None:
        raise Malformed(f"{field} needs a timezone, e.g. 2026-11-27T09:30:00Z")
    return moment


def parse_date(value: object, field: str) -> date:
    """Parse an ISO date (YYYY-MM-DD) or raise `Malformed` naming the field."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) != 10:
        raise Malformed(f"{field} must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Malformed(f"{field} must be a date written YYYY-MM-DD (got {value!r})") from None
